"""The workspace reference (docs/reference.md) is generated from the models and cannot drift from them."""

from __future__ import annotations

import inspect
import json
import re
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from pydantic import BaseModel, Field
from typer.testing import CliRunner

import cxstack.workspace.models as models
from cxstack.cli.main import app
from cxstack.cli.services import new_workspace_skeleton, reference_markdown
from cxstack.optimization.replay import parse_scripts
from cxstack.workspace.reference import (
    MARKDOWN_FACT_EXAMPLE,
    REGENERATE,
    REPLAY_EXAMPLE,
    WORKSPACE_FILES,
    ReferenceIncomplete,
    ReferenceInputs,
    model_keys,
    reachable_models,
    render_reference,
)
from cxstack.workspace.validate import check_workspace

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "reference.md"
runner = CliRunner()


def _workspace_models() -> list[type[BaseModel]]:
    return [
        cls
        for cls in vars(models).values()
        if inspect.isclass(cls) and issubclass(cls, BaseModel) and cls.__module__ == models.__name__
    ]


def test_committed_reference_is_current() -> None:
    committed = COMMITTED.read_text(encoding="utf-8") if COMMITTED.exists() else ""
    assert committed == reference_markdown(), (
        f"docs/reference.md is out of date with the workspace models: run `{REGENERATE}`"
    )


def test_every_model_field_has_a_description() -> None:
    missing = [
        f"{model.__name__}.{name}"
        for model in _workspace_models()
        for name, info in model.model_fields.items()
        if not (info.description or "").strip()
    ]
    assert missing == [], f"add Field(description=...) to: {', '.join(missing)}"


def test_every_model_belongs_to_a_documented_file() -> None:
    documented = set().union(*(reachable_models(spec.model) for spec in WORKSPACE_FILES))
    orphans = [
        m.__name__ for m in _workspace_models() if m not in documented and not m.__name__.startswith("_")
    ]
    assert orphans == [], f"models no workspace file reaches, so the reference omits them: {orphans}"


def test_keys_are_written_as_dotted_paths_with_type_default_and_bounds() -> None:
    text = reference_markdown()
    for line in (
        "- **`thresholds.route_min_confidence`** (number, 0 to 1; default `0.4`)",
        "- **`actions[].slots[].from_customer`** (text; optional)",
        "- **`actions[].slots[].type`** (one of `string`, `number`, `money`; default `string`)",
        "- **`connectors.<connector>.base_url`** (text; **required**)",
        "- **`connectors.<connector>.identity_header`** (text or null; default `X-Customer-Id`)",
        "- **`identity.verification.max_attempts`** (whole number, 1 to 10; default `3`)",
        "- **`rules[].when.weekday_in`** (list of one of `mon`, `tue`, `wed`, `thu`, `fri`, `sat`, `sun`; "
        "optional)",
        "- **`channels`** (list of text; default `[api, webchat]`)",
        "### `actions[].owner`",
        "### `escalation.queues[]`",
    ):
        assert line in text, line
    for path in ("attributes", "rules[].when.attributes", "actions[].max_amount", "currency", "locale"):
        assert f"- **`{path}`**" in text, path


def test_registered_plugins_and_formats_are_listed() -> None:
    text = reference_markdown()
    for name in ("`content`", "`action`", "`human`", "`conversational`", "`http`", "`minilm`", "`hashing`"):
        assert f"| {name} |" in text, name
    for intent in ("greeting", "thanks", "goodbye", "small_talk"):
        assert f"| `{intent}` |" in text, intent
    assert "- **`expected.outcome`**" in text and "| `arr` |" in text


def test_a_field_without_a_description_is_refused() -> None:
    class Undocumented(BaseModel):
        documented: int = Field(1, description="fine")
        silent: str = ""

    with pytest.raises(ReferenceIncomplete, match="silent"):
        model_keys(Undocumented)


def test_a_builtin_plugin_without_a_description_is_refused_and_a_third_party_one_is_named() -> None:
    with pytest.raises(ReferenceIncomplete, match="teleport"):
        render_reference(ReferenceInputs(mechanisms={"teleport": "cxstack.resolution.resolvers.x:X"}))
    text = render_reference(ReferenceInputs(connector_types={"sap": "acme_sap.connector:SapConnector"}))
    assert "| `sap` | A plug-in (acme_sap.connector:SapConnector)" in text


def test_cli_prints_or_writes_the_reference(tmp_path: Path) -> None:
    printed = runner.invoke(app, ["docs", "reference"])
    assert printed.exit_code == 0, printed.output
    assert printed.stdout == reference_markdown()
    target = tmp_path / "out" / "reference.md"
    written = runner.invoke(app, ["docs", "reference", "--output", str(target)])
    assert written.exit_code == 0, written.output
    assert target.read_text(encoding="utf-8") == reference_markdown()


def test_the_markdown_fact_example_loads(tmp_path: Path) -> None:
    new_workspace_skeleton(tmp_path)
    (tmp_path / "knowledge" / "moving.md").write_text(MARKDOWN_FACT_EXAMPLE, encoding="utf-8")
    intents = (tmp_path / "intents.yaml").read_text(encoding="utf-8")
    # The example names an intent the skeleton does not have: give the skeleton one.
    extra = "\n".join(
        [
            "  - name: moving_home",
            "    mechanism: human",
            "    examples: [I am moving house]",
            "",
        ]
    )
    (tmp_path / "intents.yaml").write_text(intents.rstrip("\n") + "\n" + extra, encoding="utf-8")
    check = check_workspace(tmp_path)
    assert check.errors == [], [p.format() for p in check.errors]
    fact = next(s.item for s in check.facts if s.item.id == "moving-home-notice")
    assert fact.text.startswith("Tell us your moving date")


def test_the_replay_example_is_a_valid_script_line() -> None:
    [script] = parse_scripts([json.dumps(REPLAY_EXAMPLE)])
    assert script.customer.attributes == {"vulnerable": True}
    assert script.expected_outcome == "automated"


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file (lower case, punctuation dropped, spaces as
    hyphens, -1, -2... for repeats)."""
    tokens = MarkdownIt("commonmark").parse(markdown)
    seen: Counter[str] = Counter()
    anchors = set()
    for heading, inline in pairwise(tokens):
        if heading.type != "heading_open":
            continue
        text = "".join(c.content for c in inline.children or [] if c.type in ("text", "code_inline"))
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        anchors.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return anchors


def test_links_into_the_reference_resolve() -> None:
    reference = COMMITTED.read_text(encoding="utf-8")
    anchors = github_anchors(reference)
    guide = (ROOT / "docs" / "first-workspace.md").read_text(encoding="utf-8")
    linked = re.findall(r"\]\(#([^)]+)\)", reference) + re.findall(r"\]\(reference\.md#([^)]+)\)", guide)
    assert len(linked) >= 10
    assert [a for a in linked if a not in anchors] == []
