"""`cxstack kb ingest`: long articles become atomic draft facts with source spans, or nothing is written."""

from __future__ import annotations

import codecs
import json
import shutil
from datetime import date
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cxstack.cli.main import app
from cxstack.demo import demo_workspace_path
from cxstack.knowledge.articles import ArticleError, Block, decode
from cxstack.knowledge.ingest import IngestError, block_claims, ingest
from cxstack.workspace.loader import load_workspace

OWNER = "help-center@northwind.example"
TODAY = date(2026, 12, 1)

MARKDOWN = """\
---
title: Returns and refunds
---
# Returns and refunds

[Home](/) | [Help center](/help) | [Contact](/contact)

## In this article

- [Return windows](#return-windows)
- [Refund methods](#refund-methods)

## Return windows

The Plus plan has a return window of 60 days from delivery. The Enterprise plan has no return window; with \
it you can return items at any time.

The Basic plan has a return window of 30 days from delivery.

## Trailblazer boots

The Trailblazer boot is waterproof. It comes in EU sizes 36 to 47. This is our best seller.

## Refund methods

Refunds can be paid to:

- a gift card
- a paper check
- the credit card on file

Refunds take 5 to 7 business days to appear, e.g. on a card statement, and we email you when the refund is
issued.

```bash
curl https://help.example/api/refunds
```

Was this article helpful? Yes / No
"""

HTML = """\
<!DOCTYPE html>
<html lang="en">
<head><title>Shipping times | Northwind Help</title>
<style>body { font-family: sans-serif; }</style>
<script>window.analytics = {track: function () {}};</script>
</head>
<body>
<div id="cookie-banner" class="cookie-consent">
  <p>We use cookies to improve your experience on our site. <a href="/privacy">Learn more</a></p>
  <button>Accept all cookies</button>
</div>
<header class="site-header">
  <a href="/">Northwind</a>
  <nav><ul><li><a href="/help">Help center</a></li><li><a href="/orders">Orders</a></li></ul></nav>
</header>
<div class="breadcrumbs"><a href="/">Home</a> &gt; <a href="/help">Help</a> &gt; Shipping</div>
<main>
  <article>
    <h1>Shipping times</h1>
    <p>Express shipping takes 2 business days and costs $12. Orders placed before 2 pm ship the same day.</p>
    <h2>Tracking</h2>
    <p>Every order gets a tracking number by email once it ships.
       You can follow the parcel from your account page.</p>
    <ul>
      <li>We do not ship to P.O. boxes.</li>
      <li><a href="/track">Track a parcel</a></li>
    </ul>
    <div class="article-feedback"><p>Was this article helpful?</p><button>Yes</button></div>
    <h2>Related articles</h2>
    <ul><li><a href="/a">Returns and refunds for members</a></li><li><a href="/b">Refunds</a></li></ul>
  </article>
</main>
<footer><p>&copy; 2026 Northwind Outfitters. All rights reserved.</p><a href="/terms">Terms</a></footer>
</body>
</html>
"""

NAV_PAGE = """\
<html><body>
<nav><ul><li><a href="/a">Orders</a></li><li><a href="/b">Returns</a></li><li><a href="/c">Shipping</a></li>
<li><a href="/d">Account</a></li><li><a href="/e">Gift cards</a></li></ul></nav>
<div><a href="/1">Track my order</a> <a href="/2">Start a return</a> <a href="/3">Reset my password</a></div>
<p>Welcome to the help center.</p>
<footer>&copy; 2026 Northwind</footer>
</body></html>
"""


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    target = tmp_path / "ws"
    shutil.copytree(demo_workspace_path(), target)
    return target


@pytest.fixture
def articles(tmp_path: Path) -> Path:
    folder = tmp_path / "articles"
    folder.mkdir()
    (folder / "returns.md").write_text(MARKDOWN, encoding="utf-8")
    (folder / "shipping.html").write_text(HTML, encoding="utf-8")
    return folder


def run(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["kb", "ingest", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def facts_of(workspace: Path) -> dict[str, object]:
    return {f.id: f for f in load_workspace(workspace).facts}


def test_a_markdown_article_becomes_atomic_drafts_with_spans(workspace: Path, articles: Path) -> None:
    (articles / "shipping.html").unlink()
    result = ingest(
        [articles / "returns.md"], facts=load_workspace(workspace).facts, root=articles, today=TODAY
    )
    by_text = {c.text: c for c in result.candidates}
    assert list(by_text) == [
        "The Plus plan has a return window of 60 days from delivery.",
        "The Enterprise plan has no return window; with it you can return items at any time.",
        "The Trailblazer boot is waterproof.",
        # "It comes in …" after a sentence about the boot is rewritten; "This is …" is kept with it.
        "The Trailblazer boot comes in EU sizes 36 to 47. This is our best seller.",
        # A list of fragments after "…:" is one claim.
        "Refunds can be paid to: a gift card, a paper check and the credit card on file.",
        # A compound sentence is cut where both parts stand alone.
        "Refunds take 5 to 7 business days to appear, e.g. on a card statement.",
        "We email you when the refund is issued.",
    ]
    # The demo's own Basic plan window (return-window-basic) is skipped, not drafted.
    assert [(s.candidate.text, s.duplicate_of) for s in result.skipped] == [
        ("The Basic plan has a return window of 30 days from delivery.", "return-window-basic")
    ]
    plus_window = by_text["The Plus plan has a return window of 60 days from delivery."]
    assert plus_window.span.path == "returns.md"
    assert plus_window.span.headings == ("Returns and refunds", "Return windows")
    assert plus_window.span.start is not None and plus_window.span.end is not None
    assert MARKDOWN[plus_window.span.start : plus_window.span.end] == plus_window.text
    assert MARKDOWN.splitlines()[plus_window.span.line_start - 1].startswith("The Plus plan")
    assert plus_window.id == "return-windows-plus-plan-has-return-window"
    assert plus_window.subject == "Plus plan" and plus_window.tags == ("return-windows",)
    listed = by_text["Refunds can be paid to: a gift card, a paper check and the credit card on file."]
    assert (listed.span.line_start, listed.span.line_end) == (25, 29)
    email = by_text["We email you when the refund is issued."]
    assert email.span.start is not None and MARKDOWN[email.span.start : email.span.end] == (
        "we email you when the refund is\nissued."
    )
    assert (email.span.line_start, email.span.line_end) == (31, 32)
    every_text = " ".join(by_text)
    for boilerplate in ("Home", "In this article", "curl", "helpful", "Help center"):
        assert boilerplate not in every_text
    assert len({c.id for c in result.candidates}) == len(result.candidates)


def test_an_html_page_keeps_the_article_and_drops_nav_footer_and_cookie_banner(
    workspace: Path, articles: Path
) -> None:
    result = ingest(
        [articles / "shipping.html"], facts=load_workspace(workspace).facts, root=articles, today=TODAY
    )
    spans = {c.text: (c.span.line_start, c.span.headings) for c in result.candidates}
    assert spans == {
        "Express shipping takes 2 business days and costs $12.": (20, ("Shipping times",)),
        "Orders placed before 2 pm ship the same day.": (20, ("Shipping times",)),
        "Every order gets a tracking number by email once it ships.": (22, ("Shipping times", "Tracking")),
        "You can follow the parcel from your account page.": (23, ("Shipping times", "Tracking")),
        "We do not ship to P.O. boxes.": (25, ("Shipping times", "Tracking")),
    }
    lines = HTML.splitlines()
    assert "Every order gets" in lines[21] and "You can follow" in lines[22] and "P.O. boxes" in lines[24]
    assert result.dropped >= 5  # cookie banner, header, breadcrumbs, feedback box, related articles, footer


def test_a_contradiction_and_a_near_duplicate_are_flagged_on_the_draft(
    workspace: Path, articles: Path
) -> None:
    code, out, err = run(workspace, articles / "returns.md", "--owner", OWNER, "--json")
    assert code == 0, err
    report = json.loads(out)
    flagged = {d["text"]: d["flags"] for d in report["drafts"] if d["flags"]}
    plus_window = flagged["The Plus plan has a return window of 60 days from delivery."]
    assert [(f["kind"], f["fact"]) for f in plus_window] == [("contradiction", "return-window-plus")]
    assert "90 vs 60 days" in plus_window[0]["detail"]
    enterprise = flagged[
        "The Enterprise plan has no return window; with it you can return items at any time."
    ]
    assert [(f["kind"], f["fact"]) for f in enterprise] == [("near_duplicate", "return-window-enterprise")]
    assert report["flagged"] == 2 and report["skipped"][0]["duplicate_of"] == "return-window-basic"
    written = Path(report["written"])
    assert written == workspace / "knowledge" / "ingested-returns.yaml"
    draft = facts_of(workspace)["return-windows-plus-plan-has-return-window"]
    assert draft.status == "draft" and draft.owner == OWNER  # type: ignore[attr-defined]
    assert "needs-review" in draft.tags  # type: ignore[attr-defined]
    assert draft.sources[0].startswith("returns.md:15 chars")  # type: ignore[attr-defined]
    assert "contradiction `return-window-plus`" in draft.sources[1]  # type: ignore[attr-defined]
    # The published facts are untouched; the Basic plan's window was not drafted twice.
    assert not any(
        f.status == "draft" and "The Basic plan has" in f.text
        for f in load_workspace(workspace).facts  # type: ignore[attr-defined]
    )


def test_cli_ingests_a_folder_into_drafts_that_load(workspace: Path, articles: Path) -> None:
    (articles / "notes.pdf").write_bytes(b"%PDF-1.4")
    code, out, err = run(workspace, articles, "--owner", OWNER, "--into", "help-center.yaml")
    assert code == 0, err
    assert "notes.pdf: skipped, unsupported file type .pdf" in err
    assert "12 drafts from 2 file(s)" in out and "1 exact duplicate(s) skipped" in out
    target = workspace / "knowledge" / "help-center.yaml"
    data = yaml.safe_load(target.read_text())
    assert {f["status"] for f in data["facts"]} == {"draft"}
    loaded = load_workspace(workspace)
    drafts = [f for f in loaded.facts if f.status == "draft"]
    assert len(drafts) == 12 and all(f.owner == OWNER for f in drafts)
    assert any(f.sources[0].startswith("articles/shipping.html:20 (Shipping times)") for f in drafts)
    # Drafts are never used in answers: the published facts still answer.
    code, _, err = run(workspace, articles, "--owner", OWNER, "--into", "help-center.yaml")
    assert code == 1 and "exists; choose another --into" in err


def test_dry_run_writes_nothing_and_the_owner_comes_from_the_option_or_the_article(
    workspace: Path, articles: Path
) -> None:
    code, out, err = run(workspace, articles / "shipping.html", "--dry-run", "--json")
    assert code == 1 and "no owner for the drafts" in err  # the demo's facts have several owners
    code, out, err = run(workspace, articles / "shipping.html", "--dry-run", "--owner", OWNER)
    assert code == 0, err and "dry run: nothing written" in out
    assert not list((workspace / "knowledge").glob("ingested-*"))
    (articles / "returns.md").write_text(
        MARKDOWN.replace("title:", "owner: returns@northwind.example\ntitle:")
    )
    code, out, err = run(workspace, articles / "returns.md", "--dry-run", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["written"] is None and {d["owner"] for d in report["drafts"]} == {
        "returns@northwind.example"
    }
    assert not list((workspace / "knowledge").glob("ingested-*"))


def test_one_bad_file_and_nothing_is_written(workspace: Path, articles: Path) -> None:
    (articles / "legacy.txt").write_bytes("Returns are free within 30 days for café orders.".encode("cp1252"))
    (articles / "portal.html").write_text(NAV_PAGE)
    code, _, err = run(workspace, articles, "--owner", OWNER)
    assert code == 1
    assert "legacy.txt: not UTF-8 or UTF-16 text" in err and "save it as UTF-8" in err
    assert "portal.html: mostly navigation" in err
    assert "2 problem(s); nothing was ingested" in err
    assert not list((workspace / "knowledge").glob("ingested-*"))


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(workspace: Path, tmp_path: Path) -> None:
    huge = tmp_path / "huge.md"
    with huge.open("wb") as handle:  # a sparse file: 50 MB and one byte, nothing written to disk
        handle.truncate(50 * 1024 * 1024 + 1)
    code, _, err = run(workspace, huge, "--owner", OWNER)
    assert code == 1 and "huge.md: 50 MB is over the 50 MB limit" in err
    small = tmp_path / "small.md"
    small.write_text("Gift cards can be used in every Northwind store.\n" * 3)
    with pytest.raises(IngestError) as raised:
        ingest([small], facts=[], today=TODAY, max_bytes=100)
    assert raised.value.problems == [
        f"{small}: 147 bytes is over the 100 bytes limit for one article; split it"
    ]


def test_encodings_with_a_bom_are_read_and_others_are_refused() -> None:
    text = "Gift cards never expire. Café gift cards work too."
    assert decode(codecs.BOM_UTF8 + text.encode("utf-8"), "a.txt") == text
    assert decode(text.encode("utf-16"), "a.txt") == text  # with its BOM
    assert decode(codecs.BOM_UTF16_BE + text.encode("utf-16-be"), "a.txt") == text
    with pytest.raises(ArticleError, match=r"b\.txt: not UTF-8 or UTF-16 text"):
        decode(text.encode("latin-1"), "b.txt")
    with pytest.raises(ArticleError, match=r"c\.txt: contains NUL characters"):
        decode("Gift cards never expire.".encode("utf-16-le"), "c.txt")  # UTF-16 without a BOM


def test_an_empty_folder_or_an_unsupported_file_is_an_error(workspace: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(workspace, empty, "--owner", OWNER)
    assert code == 1 and "no articles to ingest" in err
    sheet = tmp_path / "prices.xlsx"
    sheet.write_bytes(b"PK")
    code, _, err = run(workspace, sheet, "--owner", OWNER)
    assert code == 1 and "unsupported file type" in err


def test_plain_text_articles_have_headings_and_exact_offsets(workspace: Path, tmp_path: Path) -> None:
    text = (
        "Gift cards\n\nGift cards never expire. They can be used online and in every store.\n\n"
        "Balances\n\nYou can check a balance on the gift card page.\n"
    )
    article = tmp_path / "gift-cards.txt"
    article.write_text(text)
    result = ingest([article], facts=load_workspace(workspace).facts, root=tmp_path, today=TODAY)
    found = [(c.text, c.span.headings, c.span.start, c.span.end) for c in result.candidates]
    first = text.index("Gift cards never")
    assert found[0] == (
        "Gift cards never expire. They can be used online and in every store.",
        ("Gift cards",),
        first,
        first + len("Gift cards never expire. They can be used online and in every store."),
    )
    assert found[1][0] == "You can check a balance on the gift card page."
    assert found[1][1] == ("Gift cards", "Balances")


def test_claims_split_only_where_each_part_stands_alone() -> None:
    def claims(text: str, subject: str | None = None) -> list[str]:
        return [c.text for c in block_claims(Block(text, (), 1, 1), subject)]

    assert claims("Standard shipping takes 5 days and express shipping takes 2 days.") == [
        "Standard shipping takes 5 days.",
        "Express shipping takes 2 days.",
    ]
    assert claims("You can return an item and get a refund within 30 days.") == [
        "You can return an item and get a refund within 30 days."
    ]
    assert claims("Orders over $50 ship free; orders under $50 pay a $5 fee.") == [
        "Orders over $50 ship free.",
        "Orders under $50 pay a $5 fee.",
    ]
    assert claims("Each agent lists its instructions, the actions and fact tags it may use.") == [
        "Each agent lists its instructions, the actions and fact tags it may use."
    ]
    # "It" is rewritten only after a sentence whose subject names the subject; otherwise kept whole.
    assert claims("The Summit jacket is windproof. It comes in three colours.", "Summit jacket") == [
        "The Summit jacket is windproof.",
        "The Summit jacket comes in three colours.",
    ]
    assert claims("Our stores open at 9 am. It is busy on Saturdays.", "Summit jacket") == [
        "Our stores open at 9 am. It is busy on Saturdays."
    ]
    only = block_claims(Block("It is machine washable at 30 degrees.", (), 1, 1), None)
    assert [f.kind for f in only[0].flags] == ["needs_context"]
    assert claims("How do I return an item? Contact us:") == []
    # A written sentence is never dropped because its verb is not in the verb list.
    assert claims('Pick the item and choose "Return". We email you a prepaid label.') == [
        'Pick the item and choose "Return".',
        "We email you a prepaid label.",
    ]
