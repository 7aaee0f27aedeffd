"""`cxstack kb import`: facts from another system land in a new knowledge file, or nothing is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cxstack.cli.main import app
from cxstack.demo import demo_workspace_path
from cxstack.workspace.loader import load_workspace


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    target = tmp_path / "ws"
    shutil.copytree(demo_workspace_path(), target)
    return target


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["kb", "import", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def test_jsonl_facts_are_imported_published_and_load(workspace: Path, tmp_path: Path) -> None:
    source = tmp_path / "faq.jsonl"
    records = [
        {
            "id": "faq-gift-receipt",
            "text": "A gift receipt shows no prices.",
            "tags": ["gifts"],
            "owner": "cx",
        },
        {
            "id": "faq-boot-sizes",
            "text": "Trailblazer boots come in EU sizes 36 to 47.",
            "subject": "Trailblazer boots",
            "source": "https://help.example/boots",
        },
    ]
    source.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    code, out, err = run(workspace, source, "--owner", "product@northwind.example")
    assert code == 0, err
    assert "imported 2 facts (published)" in out
    loaded = {f.id: f for f in load_workspace(workspace).facts}
    boots = loaded["faq-boot-sizes"]
    assert boots.subject == "Trailblazer boots" and boots.owner == "product@northwind.example"
    assert boots.sources == ["https://help.example/boots"] and boots.status == "published"
    assert loaded["faq-gift-receipt"].tags == ["gifts"] and loaded["faq-gift-receipt"].owner == "cx"


def test_csv_facts_can_be_imported_as_drafts(workspace: Path, tmp_path: Path) -> None:
    source = tmp_path / "faq.csv"
    source.write_text('id,text,tags,owner\nfaq-a,"Gift cards never expire.",gifts;cards,cx\n')
    code, out, err = run(workspace, source, "--draft", "--into", "gift-faq.yaml")
    assert code == 0, err
    assert "imported 1 facts (drafts)" in out
    fact = next(f for f in load_workspace(workspace).facts if f.id == "faq-a")
    assert fact.status == "draft" and fact.tags == ["gifts", "cards"]
    assert (workspace / "knowledge" / "gift-faq.yaml").exists()


def test_any_bad_record_imports_nothing_and_names_its_line(workspace: Path, tmp_path: Path) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text(
        "\n".join(
            [
                json.dumps({"id": "ok-1", "text": "Fine.", "owner": "cx"}),
                json.dumps({"id": "return-window-plus", "text": "Clashes with the demo.", "owner": "cx"}),
                "{not json",
            ]
        )
    )
    code, _, err = run(workspace, source)
    assert code == 1
    assert "bad.jsonl:3: not JSON" in err
    assert not (workspace / "knowledge" / "imported.yaml").exists()
    source.write_text(
        "\n".join(
            [
                json.dumps({"id": "ok-1", "text": "Fine.", "owner": "cx"}),
                json.dumps({"id": "return-window-plus", "text": "Clashes with the demo.", "owner": "cx"}),
                json.dumps({"id": "ok-1", "text": "Twice.", "owner": "cx"}),
                json.dumps({"id": "no-owner", "text": "Whose?"}),
                json.dumps({"id": "typo", "text": "x", "owner": "cx", "tgas": ["a"]}),
            ]
        )
    )
    code, _, err = run(workspace, source)
    assert code == 1
    for expected in (
        "bad.jsonl:2: fact id `return-window-plus` is already in the workspace",
        "bad.jsonl:3: fact id `ok-1` repeats line 1",
        "bad.jsonl:4: no owner",
        "bad.jsonl:5: unknown field(s) tgas",
        "4 problem(s); nothing was imported",
    ):
        assert expected in err, err
    assert not (workspace / "knowledge" / "imported.yaml").exists()


def test_a_file_that_is_not_text_or_an_existing_target_is_refused(workspace: Path, tmp_path: Path) -> None:
    binary = tmp_path / "facts.jsonl"
    binary.write_bytes(b"\xff\xfe\x00\x01 not utf-8 \x80")
    code, _, err = run(workspace, binary)
    assert code == 1 and "not UTF-8 text" in err
    (workspace / "knowledge" / "imported.yaml").write_text("version: 1\nfacts: []\n")
    code, _, err = run(workspace, binary)
    assert code == 1 and "exists; choose another --into" in err
