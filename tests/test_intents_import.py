from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from cxstack.workspace.intents_import import ImportFailed, import_examples

INTENTS = """\
# Intents for Acme: keep this comment
version: 1
intents:
  # money things
  - name: refund   # the big one
    mechanism: action
    action: refund_order
    examples:
      - "I want a refund"
      - money back please  # from a real ticket
    # end of refund

  # hours
  - name: hours
    description: opening hours
    owner: ops
    examples: [when are you open]
# end of file
"""


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(textwrap.dedent(text), encoding=encoding)
    return path


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    write(root / "intents.yaml", INTENTS)
    return root


def test_adds_new_examples_and_creates_draft_intents(workspace: Path, tmp_path: Path) -> None:
    export = write(
        tmp_path / "export.csv",
        "\ufeffTicket,Text,INTENT,Agent\n"
        "1,I WANT A   refund,refund,ann\n"  # same as an existing example: skipped
        "\n"
        "2,can I get my money back,refund,bob\n"
        "3,where is my parcel,shipping,ann\n"
        "4,Where is my parcel?,shipping,ann\n"
        "5,where is MY parcel,shipping,bob\n"  # repeated in the CSV: skipped
        "6,when are you open,refund,bob\n"  # already under hours: a conflict, skipped
        "7,,refund,bob\n",
        encoding="utf-8",
    )
    report = import_examples(workspace, export)
    assert report.added == {"refund": 1, "shipping": 2}
    assert report.duplicates_skipped == 2
    assert report.conflicts == [("when are you open", "hours", "refund")]
    assert report.intents_created == ["shipping"]
    assert report.rows_skipped == 1
    assert report.rows_read == 7
    assert "Created 1 draft intent(s): shipping" in report.summary()

    text = (workspace / "intents.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    by_name = {i["name"]: i for i in data["intents"]}
    assert by_name["refund"]["examples"] == [
        "I want a refund",
        "money back please",
        "can I get my money back",
    ]
    assert by_name["hours"]["examples"] == ["when are you open"]
    shipping = by_name["shipping"]
    assert shipping["status"] == "draft" and shipping["mechanism"] == "human" and shipping["owner"] == ""
    assert shipping["description"] == "Imported from export.csv; decide a mechanism"
    assert shipping["examples"] == ["where is my parcel", "Where is my parcel?"]
    assert [i["name"] for i in data["intents"]] == ["refund", "hours", "shipping"]


def test_comments_key_order_and_quoting_survive(workspace: Path, tmp_path: Path) -> None:
    export = write(tmp_path / "e.csv", "text,intent\ncan I get my money back,refund\nwhere is it,shipping\n")
    import_examples(workspace, export)
    text = (workspace / "intents.yaml").read_text(encoding="utf-8")
    for kept in (
        "# Intents for Acme: keep this comment",
        "  - name: refund   # the big one",
        '      - "I want a refund"',
        "      - money back please  # from a real ticket",
        "examples: [when are you open]",
        "# end of file",
    ):
        assert kept in text
    lines = text.splitlines()
    # the new example goes right after the last refund example, above the comments that introduce `hours`
    assert (
        lines.index("      - can I get my money back")
        == lines.index("      - money back please  # from a real ticket") + 1
    )
    assert lines.index("    # end of refund") > lines.index("      - can I get my money back")
    assert lines.index("  # hours") < lines.index("  - name: hours")
    # key order of an existing intent is unchanged
    hours_at = lines.index("  - name: hours")
    assert lines[hours_at + 1 : hours_at + 4] == [
        "    description: opening hours",
        "    owner: ops",
        "    examples: [when are you open]",
    ]


def test_nothing_new_leaves_the_file_untouched(workspace: Path, tmp_path: Path) -> None:
    before = (workspace / "intents.yaml").read_bytes()
    export = write(tmp_path / "e.csv", "text,intent\nmoney back please,refund\n")
    report = import_examples(workspace, export)
    assert report.total_added == 0 and report.duplicates_skipped == 1
    assert (workspace / "intents.yaml").read_bytes() == before


def test_zero_indent_style_is_kept(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    write(root / "intents.yaml", "intents:\n- name: a\n  examples:\n  - one\n")
    export = write(tmp_path / "e.csv", "text,intent\ntwo,a\nthree,b\n")
    import_examples(root, export)
    text = (root / "intents.yaml").read_text(encoding="utf-8")
    assert "  - one\n  - two\n- name: b\n" in text


def test_creates_intents_file_when_missing(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    export = write(tmp_path / "e.csv", "text,intent\nhello,greeting\n")
    report = import_examples(root, export)
    assert report.intents_created == ["greeting"]
    data = yaml.safe_load((root / "intents.yaml").read_text(encoding="utf-8"))
    assert data["version"] == 1 and data["intents"][0]["examples"] == ["hello"]


def test_missing_column_is_named(workspace: Path, tmp_path: Path) -> None:
    export = write(tmp_path / "e.csv", "message,intent\nhi,greeting\n")
    with pytest.raises(ImportFailed, match=r"no 'text' column \(found: message, intent\)"):
        import_examples(workspace, export)
    export = write(tmp_path / "e.csv", "Text,label\nhi,greeting\n")
    with pytest.raises(ImportFailed, match="no 'intent' column"):
        import_examples(workspace, export)


def test_result_validates_as_a_catalogue(workspace: Path, tmp_path: Path) -> None:
    from cxstack.workspace.models import IntentCatalogue

    export = write(tmp_path / "e.csv", "text,intent\n\"quoted, with comma\",new_one\n'yes',new_one\n")
    import_examples(workspace, export)
    catalogue = IntentCatalogue.model_validate(
        yaml.safe_load((workspace / "intents.yaml").read_text(encoding="utf-8"))
    )
    new_one = next(i for i in catalogue.intents if i.name == "new_one")
    assert new_one.examples == ["quoted, with comma", "'yes'"]
    assert new_one.status == "draft"


def test_words_yaml_1_1_reads_as_booleans_stay_strings(workspace: Path, tmp_path: Path) -> None:
    export = write(
        tmp_path / "e.csv", "text,intent\nyes,confirm\nno,confirm\non,confirm\n2024-01-01,confirm\n"
    )
    import_examples(workspace, export)
    data = yaml.safe_load((workspace / "intents.yaml").read_text(encoding="utf-8"))
    confirm = next(i for i in data["intents"] if i["name"] == "confirm")
    assert confirm["examples"] == ["yes", "no", "on", "2024-01-01"]
