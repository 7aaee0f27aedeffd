"""Splitting a customer message into the requests it makes."""

from __future__ import annotations

import pytest

from cxstack.domain.segments import is_question, split_requests


@pytest.mark.parametrize(
    ("text", "requests"),
    [
        ("Where is my order ORD-10001? Also, how do I return a jacket?", 2),
        ("cancel my subscription and where is ORD-10001", 2),
        ("what is the return window and how do I start a return", 2),
        ("where is ORD-10005 and how long do I have to return an item?", 2),
        ("where is ORD-10005 and can I get a refund of $10 for ORD-10001", 2),
        ("cancel and refund it", 1),  # one request with two verbs
        ("I got the jacket and I want a refund", 1),  # the story and its request
        ("boots and jackets", 1),
        ("I want a refund of $1,500.50 for ORD-10001", 1),  # the amount's dot ends no sentence
        ("also", 1),
    ],
)
def test_requests_in_a_message(text: str, requests: int) -> None:
    assert len(split_requests(text)) == requests


def test_a_run_on_sentence_is_cut_into_windows_and_keeps_its_last_words() -> None:
    text = "I have been a customer for many years and " * 80 + "how long do I have to return an item"
    segments = split_requests(text)
    assert 1 < len(segments) <= 24
    assert segments[-1].text.endswith("how long do I have to return an item")
    assert all(len(s.text.split()) <= 30 for s in segments)


@pytest.mark.parametrize(
    ("text", "asks"),
    [
        ("How long do I have to return boots?", True),
        ("whats the return window", True),
        ("tell me the shipping cost", True),
        ("I'm on the Plus plan.", False),
        ("I bought boots last week.", False),
    ],
)
def test_questions_are_told_from_the_story_around_them(text: str, asks: bool) -> None:
    assert is_question(text) is asks
