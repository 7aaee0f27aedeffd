"""Judges: the offline judge on exchanges (and `cxstack judge score`), judging stored conversations (a failing
judge leaves them unjudged), the calibration loop (agreement, disagreements, the next version measured on
reviews it never saw), the LLM judge through a local stand-in of an OpenAI-compatible server, and the
prediction-powered quality estimate once a judge is trusted."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import openai_completion, write_workspace
from tests.test_monitoring import NOW, turn
from typer.testing import CliRunner

from cxstack.cli.main import app
from cxstack.domain.llm import LLMBadResponseError
from cxstack.domain.quality import OutcomeRules, ReviewReason
from cxstack.integrations.llm.registry import llm_client
from cxstack.monitoring.judges import Exchange, JudgeScore, LLMJudge, OfflineJudge
from cxstack.monitoring.judging import (
    agreement_report,
    current_judge,
    fold_of,
    judge_pending,
    next_version,
    queue_disagreements,
)
from cxstack.monitoring.quality import metrics
from cxstack.monitoring.review import submit
from cxstack.store.sqlalchemy_store import SqlAlchemyStore
from cxstack.testing.http_standin import Reply
from cxstack.workspace.loader import load_workspace
from cxstack.workspace.models import LLMSettings, Rubric
from cxstack.workspace.workspace import Workspace

POLICY = "Returns are accepted within 30 days of delivery for a full refund."
GOOD = {"correctness": 5, "groundedness": 5, "policy_compliance": 1, "resolution": 5, "tone": 4}
BAD = {"correctness": 1, "groundedness": 2, "policy_compliance": 1, "resolution": 2, "tone": 4}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> SqlAlchemyStore:
    return SqlAlchemyStore(
        request.getfixturevalue("sqlite_engine" if request.param == "sqlite" else "pg_engine")
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return load_workspace(write_workspace(tmp_path / "ws"))


def test_a_grounded_reply_scores_above_an_invented_one() -> None:
    judge = OfflineJudge()
    question = ["How long do I have to return my boots?"]
    right = judge.score_now(
        Exchange("a", question, "You can return them within 30 days of delivery.", [POLICY]), Rubric()
    )
    wrong = judge.score_now(
        Exchange("b", question, "You can return them within 90 days, no receipt needed.", [POLICY]), Rubric()
    )
    assert right.scores["groundedness"] > wrong.scores["groundedness"]
    assert right.overall > wrong.overall
    upset = judge.score_now(
        Exchange("c", question, "You can return them within 30 days of delivery.", [POLICY],
                 next_customer="That's wrong, it's not what I asked"),
        Rubric(),
    )  # fmt: skip
    assert upset.overall < right.overall
    assert all(1 <= v <= 5 for k, v in right.scores.items() if k != "policy_compliance")
    assert right.scores["policy_compliance"] in (0.0, 1.0)


def test_judge_score_reads_jsonl_and_writes_one_line_per_input(tmp_path: Path) -> None:
    file = tmp_path / "exchanges.jsonl"
    rows = [
        {
            "id": "a",
            "context": ["How long to return?"],
            "reply": "Within 30 days of delivery.",
            "knowledge": [POLICY],
        },
        {"id": 7, "context": [], "reply": "Within 90 days.", "knowledge": [POLICY]},
    ]
    file.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    result = CliRunner().invoke(app, ["judge", "score", str(file), "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["id"] for line in lines] == ["a", 7]
    for line in lines:
        assert set(line) >= {"id", "scores", "overall"} and 0 <= line["overall"] <= 1
        assert set(line["scores"]) == {
            "correctness",
            "groundedness",
            "policy_compliance",
            "resolution",
            "tone",
        }
    assert lines[0]["overall"] > lines[1]["overall"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"id": "a", "context": []}', "2: reply: Field required"),
        ('{"id": "a", "reply": "x", "context": "not a list"}', "2: context: Input should be a valid list"),
        ("{not json", "2: not JSON"),
    ],
)
def test_judge_score_names_the_bad_line_and_field_and_scores_nothing(
    tmp_path: Path, content: str, message: str
) -> None:
    file = tmp_path / "bad.jsonl"
    file.write_text('{"id": "ok", "reply": "fine"}\n' + content + "\n")
    result = CliRunner().invoke(app, ["judge", "score", str(file), "--json"])
    assert result.exit_code == 2
    assert message in result.output.replace("\n", " ")
    assert '"id": "ok"' not in result.stdout


# ---- stored conversations ----------------------------------------------------------------------------------


def conversations(store: SqlAlchemyStore, count: int) -> list[str]:
    ids = []
    for index in range(count):
        conversation = f"c{index}"
        turn(store, conversation, NOW - timedelta(days=2), intent="order_status" if index % 2 else "refund")
        ids.append(conversation)
    return ids


class Broken:
    version = "broken-1"
    kind = "offline"

    async def score(self, exchange: Exchange, rubric: Rubric) -> JudgeScore:
        raise RuntimeError("model down")


class Slow:
    version = "slow-1"
    kind = "offline"

    async def score(self, exchange: Exchange, rubric: Rubric) -> JudgeScore:
        await asyncio.sleep(5)
        raise AssertionError("never reached")


def test_stored_conversations_are_judged_once_per_version(
    store: SqlAlchemyStore, workspace: Workspace
) -> None:
    conversations(store, 4)
    turn(store, "live", NOW - timedelta(minutes=1), outcome="clarified")  # not settled: not judged
    judge = current_judge(store, workspace)
    assert judge.version == "offline-1"
    run = judge_pending(store, workspace, judge, now=NOW)
    assert (run.judged, run.failed) == (4, 0)
    assert judge_pending(store, workspace, judge, now=NOW).judged == 0
    counts = store.slice_counts("all", rules=OutcomeRules(), now=NOW)[0]
    assert (
        counts.unjudged == 0 and counts.quality.judged_units == 0
    )  # judged, but none offered to sampling yet
    turn(store, "c0", NOW - timedelta(days=1, hours=12), intent="refund")  # a new turn: judged again
    assert judge_pending(store, workspace, judge, now=NOW).judged == 1


def test_a_judge_that_fails_or_times_out_leaves_the_conversation_unjudged(
    store: SqlAlchemyStore, workspace: Workspace
) -> None:
    conversations(store, 2)
    failed = judge_pending(store, workspace, Broken(), now=NOW)
    assert (failed.judged, failed.failed) == (0, 2)
    counts = store.slice_counts("all", rules=OutcomeRules(), now=NOW)[0]
    assert counts.unjudged == 2
    assert store.latest_judgements(["c0"], "broken-1")["c0"].error == "RuntimeError: model down"
    slow = judge_pending(store, workspace, Slow(), now=NOW, timeout_s=0.05)
    assert slow.failed == 2
    assert store.latest_judgements(["c1"], "slow-1")["c1"].error == "timed out"
    assert metrics(store, workspace.settings.monitoring, "all", now=NOW).overall.as_dict()["unjudged"] == 2


# ---- the calibration loop ----------------------------------------------------------------------------------


def test_disagreements_are_queued_and_the_next_version_is_measured_on_reviews_it_never_saw(
    store: SqlAlchemyStore, workspace: Workspace
) -> None:
    ids = conversations(store, 60)
    everyone = replace(
        workspace,
        settings=workspace.settings.model_copy(
            update={
                "review_sampling": workspace.settings.review_sampling.model_copy(
                    update={"rate": 1.0, "double": 0}
                )
            }
        ),
    )
    from cxstack.monitoring.review import sample

    sample(store, everyone, now=NOW)
    judge = current_judge(store, workspace)
    judge_pending(store, workspace, judge, now=NOW)
    # people fail every refund conversation: something the hand-set judge cannot see from the exchange
    for conversation in ids:
        refund = int(conversation[1:]) % 2 == 0
        submit(store, workspace, conversation_id=conversation, reviewer="ana",
               scores=BAD if refund else GOOD, reason=ReviewReason.SAMPLE)  # fmt: skip
    report = agreement_report(store, workspace, judge.version)
    assert report["pairs"] == 60
    overall = report["overall"]
    assert set(overall) >= {"raw", "kappa", "alpha", "confusion"}
    assert sum(map(sum, overall["confusion"]["rows_human_columns_judge"])) == 60
    assert (
        "weighted_kappa" in report["criteria"]["correctness"]
        or "weighted_kappa_insufficient" in (report["criteria"]["correctness"])
    )
    assert report["human_human"]["insufficient"].startswith("0 pairs")
    queued = queue_disagreements(store, judge.version)
    disagreeing = 60 - round(overall["raw"] * 60)
    assert queued == disagreeing
    assert queue_disagreements(store, judge.version) == 0  # queued once
    # a reviewer settles each disagreement: the correction agrees with the first review here
    while (item := store.next_review_item("ben")) is not None:
        assert item.reason == ReviewReason.DISAGREEMENT
        refund = int(item.conversation_id[1:]) % 2 == 0
        submit(store, workspace, conversation_id=item.conversation_id, reviewer="ben",
               scores=BAD if refund else GOOD, reason=ReviewReason.DISAGREEMENT)  # fmt: skip
    made = next_version(store, workspace, min_rows=10)
    assert made.version.id == "offline-2" and made.version.parent == "offline-1"
    held_out = [c for c in ids if fold_of(c) == 1]
    assert made.after["pairs"] == made.before["pairs"] == len(held_out)
    assert made.fitted_on == len(ids) - len(held_out)
    assert "raw" in made.after["overall"]
    assert current_judge(store, workspace).version == "offline-2"
    stored = {v.id: v for v in store.judge_versions()}
    assert stored["offline-2"].agreement["held_out"]["pairs"] == len(held_out)


def test_agreement_on_too_few_pairs_is_insufficient(store: SqlAlchemyStore, workspace: Workspace) -> None:
    conversations(store, 3)
    judge = current_judge(store, workspace)
    judge_pending(store, workspace, judge, now=NOW)
    for conversation in ("c0", "c1", "c2"):
        submit(store, workspace, conversation_id=conversation, reviewer="ana", scores=GOOD)
    report = agreement_report(store, workspace, judge.version)
    assert report["overall"] == {"pairs": 3, "insufficient": "3 pairs; at least 20 are needed"}


def test_a_trusted_judge_makes_the_quality_rate_prediction_powered(
    store: SqlAlchemyStore, workspace: Workspace
) -> None:
    from sqlalchemy import update

    from cxstack.store.outcomes import OUTCOMES

    ids = conversations(store, 200)
    # the judge labels every conversation; a fifth is drawn and reviewed, and people agree with the judge
    # on all but a few
    with store.engine.begin() as connection:
        for index, conversation in enumerate(ids):
            judge_pass = float(index % 5 != 0)
            drawn = index % 5 == 1 or index % 25 == 0
            human = judge_pass if index % 50 else 1 - judge_pass
            connection.execute(
                update(OUTCOMES).where(OUTCOMES.c.conversation_id == conversation).values(
                    offered_at=NOW, sample_pi=0.24, sampled=drawn, reviews=int(drawn),
                    human_quality=human if drawn else None, judge_passed=judge_pass,
                )
            )  # fmt: skip
    quality = metrics(store, workspace.settings.monitoring, "all", now=NOW).overall.quality
    assert quality.trusted and quality.method == "ppi++"
    assert quality.value is not None and quality.human_only is not None
    width = quality.value.high - quality.value.low
    assert width < quality.human_only.high - quality.human_only.low  # the judge narrows the interval


# ---- the LLM judge -----------------------------------------------------------------------------------------


CHAT = "/v1/chat/completions"


def llm(base_url: str) -> Any:
    return llm_client(LLMSettings(provider="openai", model="judge-model", base_url=f"{base_url}/v1"))


async def test_the_llm_judge_scores_with_the_rubric_as_json(model: tuple[Any, str]) -> None:
    backend, base_url = model
    answer = json.dumps(
        {"correctness": 5, "groundedness": 4, "policy_compliance": 1, "resolution": 4, "tone": 5}
    )
    backend.on("POST", CHAT, Reply(200, openai_completion(answer)))
    client = llm(base_url)
    try:
        judge = LLMJudge(client)
        score = await judge.score(Exchange("a", ["How long?"], "30 days.", [POLICY]), Rubric())
    finally:
        await client.aclose()
    assert score.passed and score.scores["correctness"] == 5.0
    sent = json.loads(backend.requests_to("POST", CHAT)[0].body)
    prompt = sent["messages"][0]["content"]
    assert "not reward length" in prompt and "correctness" in prompt


async def test_the_llm_judge_refuses_an_answer_outside_the_rubric(model: tuple[Any, str]) -> None:
    backend, base_url = model
    backend.on("POST", CHAT, Reply(200, openai_completion('{"correctness": 9}')))
    client = llm(base_url)
    try:
        with pytest.raises(LLMBadResponseError):
            await LLMJudge(client).score(Exchange("a", [], "30 days.", [POLICY]), Rubric())
    finally:
        await client.aclose()


async def test_a_pairwise_preference_must_survive_swapping_the_order(model: tuple[Any, str]) -> None:
    backend, base_url = model
    client = llm(base_url)
    try:
        judge = LLMJudge(client)
        # always "the first one": a position bias, not a preference
        backend.on("POST", CHAT, Reply(200, openai_completion('{"better": 1}')))
        assert await judge.prefer("Say hi", "hi", "hello there") is None
        # the same output wins in both orders
        replies = iter(['{"better": 2}', '{"better": 1}'])
        backend.on("POST", CHAT, handler=lambda _: Reply(200, openai_completion(next(replies))))
        assert await judge.prefer("Say hi", "hi", "hello there") == 2
    finally:
        await client.aclose()


async def test_the_service_draws_and_judges_settled_conversations(
    tmp_path: Path, backoffice: tuple[str, Any], running: list[Any]
) -> None:
    from tests.conftest import say_as_sam, start_shop

    cx = await start_shop(tmp_path, backoffice[0], running)
    await say_as_sam(cx, "what is your return policy", conversation="m1")
    await say_as_sam(cx, "I will sue you", conversation="m2")
    await asyncio.to_thread(cx.monitor_once)
    store = cx.store
    judged = store.latest_judgements(["m1", "m2"], "offline-1")
    assert set(judged) == {"m1", "m2"} and all(j.error is None for j in judged.values())
    counts = store.slice_counts("all", rules=OutcomeRules())[0]
    assert counts.conversations == 2 and counts.unjudged == 0


def test_the_llm_judge_next_version_learns_from_corrections(
    store: SqlAlchemyStore, workspace: Workspace, model: tuple[Any, str]
) -> None:
    from cxstack.monitoring.judging import next_llm_version
    from cxstack.monitoring.review import sample

    backend, base_url = model
    answer = json.dumps(
        {"correctness": 5, "groundedness": 5, "policy_compliance": 1, "resolution": 5, "tone": 5}
    )
    backend.on("POST", CHAT, Reply(200, openai_completion(answer)))
    ids = conversations(store, 30)
    everyone = replace(workspace, settings=workspace.settings.model_copy(update={
        "review_sampling": workspace.settings.review_sampling.model_copy(update={"rate": 1.0, "double": 0})
    }))  # fmt: skip
    sample(store, everyone, now=NOW)
    for conversation in ids:  # people fail a third of them; the stand-in model passes everything
        failing = int(conversation[1:]) % 3 == 0
        submit(store, workspace, conversation_id=conversation, reviewer="ana",
               scores=BAD if failing else GOOD, reason=ReviewReason.SAMPLE)  # fmt: skip
    client = llm(base_url)
    first = current_judge(store, workspace, client)
    assert first.version == "llm-1"
    judge_pending(store, workspace, first, now=NOW, close=client.aclose)
    assert queue_disagreements(store, "llm-1") == 10
    while (item := store.next_review_item("ben")) is not None:
        submit(store, workspace, conversation_id=item.conversation_id, reviewer="ben", scores=BAD,
               reason=ReviewReason.DISAGREEMENT)  # fmt: skip
    second = llm(base_url)
    made = next_llm_version(store, workspace, second, close=second.aclose)
    corrected_in_fold_0 = [c for c in ids if int(c[1:]) % 3 == 0 and fold_of(c) == 0]
    assert made.version.id == "llm-2" and made.fitted_on == min(6, len(corrected_in_fold_0))
    assert len(made.version.params["examples"]) == made.fitted_on
    assert made.after["pairs"] == len([c for c in ids if fold_of(c) == 1])
    prompts = [json.loads(r.body)["messages"][0]["content"] for r in backend.requests_to("POST", CHAT)]
    assert any("Example graded by a person" in p for p in prompts)


def test_a_workspace_naming_an_unknown_judge_is_refused_with_the_choices(tmp_path: Path) -> None:
    from cxstack.workspace.loader import WorkspaceInvalid

    root = write_workspace(tmp_path / "ws")
    with (root / "cxstack.yaml").open("a") as settings:
        settings.write("monitoring:\n  judge: oracle\n")
    with pytest.raises(WorkspaceInvalid) as caught:
        load_workspace(root)
    assert "no judge named `oracle`" in str(caught.value) and "llm, offline" in str(caught.value)


def test_judges_are_plug_ins_registered_by_name() -> None:
    from cxstack.monitoring.judges import available_judges, judge_plugin

    assert {"offline", "llm"} <= set(available_judges())
    assert judge_plugin("offline") is OfflineJudge
