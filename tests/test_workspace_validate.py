from __future__ import annotations

import textwrap
from datetime import date
from pathlib import Path

import pytest

from cxstack.workspace.diff import diff_workspaces
from cxstack.workspace.loader import (
    WorkspaceInvalid,
    canonical_content,
    load_workspace,
    workspace_from_content,
)
from cxstack.workspace.validate import Problem, validate_workspace

TODAY = date(2025, 6, 1)

SETTINGS = """\
name: acme
escalation:
  default_queue: general
  queues:
    - name: general
    - name: vip
connectors:
  backoffice:
    base_url: http://127.0.0.1:9000
"""

STRATEGY = """\
timezone: Europe/Paris
tiers:
  - name: enterprise
    min_arr: 50000
    priority: high
default_tier: standard
rules:
  - id: vip-refund-human
    when:
      intent_in: [refund]
      tier_in: [enterprise]
    then:
      force_human: true
      queue: vip
"""

INTENTS = """\
version: 1
intents:
  - name: refund
    mechanism: action
    action: refund_order
    examples:
      - I want a refund
      - refund my order
      - give me my money back
      - can I return this for a refund
      - please refund order 12345
  - name: opening_hours
    mechanism: content
    examples:
      - when are you open
      - what are your opening hours
      - are you open on sunday
      - what time do you close
      - is the shop open now
  - name: legal_threat
    mechanism: human
    never_automate: true
    queue: vip
    examples: [I will sue you]
"""

ACTIONS = """\
actions:
  - name: refund_order
    path: /orders/{order_id}/refunds
    slots:
      - name: order_id
        pattern: '#?(\\d{5})'
      - name: amount
        type: money
        required: false
    amount_slot: amount
    max_amount: 100
    success_reply: Refund for order {order_id} started.
"""

FACTS_YAML = """\
facts:
  - id: hours-weekdays
    text: We are open 9:00-17:00, Monday to Friday.
    owner: ops
    intents: [opening_hours]
    tags: [hours]
"""

FACT_MD = """\
---
id: hours-weekend
owner: ops
intents: [opening_hours]
tags: [hours]
---
We are closed on weekends.
"""


def write_workspace(root: Path, **files: str | None) -> Path:
    """A valid workspace, with any file replaced (or removed with None). Keys use __ for /, _dot_ for ."""
    contents: dict[str, str | None] = {
        "cxstack.yaml": SETTINGS,
        "strategy.yaml": STRATEGY,
        "intents.yaml": INTENTS,
        "actions.yaml": ACTIONS,
        "knowledge/hours.yaml": FACTS_YAML,
        "knowledge/weekend.md": FACT_MD,
    }
    for key, text in files.items():
        contents[key.replace("__", "/").replace("_dot_", ".")] = text
    root.mkdir(parents=True, exist_ok=True)
    for name, text in contents.items():
        if text is None:
            continue
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def find(problems: list[Problem], needle: str) -> Problem:
    matching = [p for p in problems if needle in p.message]
    assert matching, f"no problem mentions {needle!r}; got:\n" + "\n".join(p.format() for p in problems)
    return matching[0]


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    count = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            count += 1
            if count == occurrence:
                return number
    raise AssertionError(f"{needle!r} not in text")


def test_valid_workspace_loads(tmp_path: Path) -> None:
    root = write_workspace(tmp_path)
    problems = validate_workspace(root, today=TODAY)
    assert errors(problems) == []
    workspace = load_workspace(root)
    assert [i.name for i in workspace.intents] == [
        "refund",
        "opening_hours",
        "legal_threat",
        "greeting",
        "thanks",
        "goodbye",
        "small_talk",
    ]
    assert {f.id for f in workspace.facts} == {"hours-weekdays", "hours-weekend"}
    assert workspace.fact("hours-weekend") is not None
    assert workspace.fact("hours-weekend").text == "We are closed on weekends."  # type: ignore[union-attr]
    assert workspace.action("refund_order") is not None
    assert workspace.strategy.timezone == "Europe/Paris"
    assert workspace.version.startswith("ws_") and len(workspace.version) == 19
    assert workspace.root == root.resolve()


def test_only_a_warning_for_few_examples_does_not_block_loading(tmp_path: Path) -> None:
    intents = INTENTS.replace("      - is the shop open now\n", "")
    root = write_workspace(tmp_path, intents_dot_yaml=intents)
    problems = validate_workspace(root, today=TODAY)
    warning = find(problems, "only 4 example(s)")
    assert warning.severity == "warning"
    assert warning.line == line_of(intents, "examples:", 2)
    load_workspace(root)  # no exception


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    broken = INTENTS.replace("  - name: opening_hours", "  - name: opening_hours\n   bad: [unclosed")
    root = write_workspace(tmp_path, intents_dot_yaml=broken)
    problem = find(validate_workspace(root, today=TODAY), "YAML syntax error")
    assert problem.file == "intents.yaml"
    assert problem.line is not None and abs(problem.line - line_of(broken, "bad: [unclosed")) <= 1


def test_schema_error_maps_to_line_of_key(tmp_path: Path) -> None:
    intents = INTENTS.replace("    mechanism: content\n", "    mechanism: content\n    status: live\n")
    root = write_workspace(tmp_path, intents_dot_yaml=intents)
    problem = find(validate_workspace(root, today=TODAY), "intents[1].status")
    assert problem.file == "intents.yaml"
    assert problem.line == line_of(intents, "status: live")
    assert problem.severity == "error"


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    intents = INTENTS.replace("    mechanism: content\n", "    mechanism: content\n    exmaples: [x]\n")
    root = write_workspace(tmp_path, intents_dot_yaml=intents)
    problem = find(validate_workspace(root, today=TODAY), "unknown key `exmaples`")
    assert problem.line == line_of(intents, "exmaples")
    assert "examples" in problem.fix


def test_missing_required_key_points_at_parent(tmp_path: Path) -> None:
    actions = ACTIONS.replace("    success_reply: Refund for order {order_id} started.\n", "")
    root = write_workspace(tmp_path, actions_dot_yaml=actions)
    problem = find(validate_workspace(root, today=TODAY), "actions[0].success_reply: required key is missing")
    assert problem.file == "actions.yaml"
    assert problem.line == line_of(actions, "- name: refund_order")
    assert "success_reply" in problem.fix


def test_missing_required_files(tmp_path: Path) -> None:
    root = write_workspace(tmp_path, cxstack_dot_yaml=None, intents_dot_yaml=None)
    problems = validate_workspace(root, today=TODAY)
    assert {p.file for p in errors(problems)} >= {"cxstack.yaml", "intents.yaml"}
    with pytest.raises(WorkspaceInvalid):
        load_workspace(root)


def test_cross_reference_errors(tmp_path: Path) -> None:
    intents = (
        INTENTS.replace("action: refund_order", "action: refund_ordr")
        .replace("mechanism: content", "mechanism: contnet")
        .replace("queue: vip", "queue: vipp")
    )
    root = write_workspace(tmp_path, intents_dot_yaml=intents)
    problems = validate_workspace(root, today=TODAY)

    action = find(problems, "unknown action `refund_ordr`")
    assert (action.file, action.line) == ("intents.yaml", line_of(intents, "action: refund_ordr"))
    assert "refund_order" in action.fix

    mechanism = find(problems, "unknown mechanism `contnet`")
    assert mechanism.line == line_of(intents, "mechanism: contnet")
    assert "content" in mechanism.fix

    queue = find(problems, "unknown queue `vipp`")
    assert queue.line == line_of(intents, "queue: vipp")


def test_action_intent_without_action(tmp_path: Path) -> None:
    intents = INTENTS.replace("    action: refund_order\n", "")
    root = write_workspace(tmp_path, intents_dot_yaml=intents)
    problem = find(validate_workspace(root, today=TODAY), "uses mechanism action but names no `action`")
    assert problem.line == line_of(intents, "mechanism: action")


def test_rules_naming_unknown_intents_tiers_and_queues(tmp_path: Path) -> None:
    strategy = (
        STRATEGY.replace("intent_in: [refund]", "intent_in: [refnd]")
        .replace("tier_in: [enterprise]", "tier_in: [enterprize]")
        .replace("queue: vip", "queue: platinum")
    )
    root = write_workspace(tmp_path, strategy_dot_yaml=strategy)
    problems = validate_workspace(root, today=TODAY)
    assert find(problems, "unknown intent `refnd`").line == line_of(strategy, "intent_in")
    tier = find(problems, "unknown tier `enterprize`")
    assert tier.line == line_of(strategy, "tier_in") and "enterprise" in tier.fix
    assert find(problems, "unknown queue `platinum`").line == line_of(strategy, "queue: platinum")


def test_rule_may_name_the_default_tier(tmp_path: Path) -> None:
    strategy = STRATEGY.replace("tier_in: [enterprise]", "tier_in: [standard]")
    root = write_workspace(tmp_path, strategy_dot_yaml=strategy)
    assert errors(validate_workspace(root, today=TODAY)) == []


def test_facts_naming_unknown_intents_in_yaml_and_markdown(tmp_path: Path) -> None:
    facts = FACTS_YAML.replace("intents: [opening_hours]", "intents: [opening_hour]")
    markdown = FACT_MD.replace("intents: [opening_hours]", "intents: [hours]")
    root = write_workspace(tmp_path, knowledge__hours_dot_yaml=facts, knowledge__weekend_dot_md=markdown)
    problems = validate_workspace(root, today=TODAY)
    in_yaml = find(problems, "unknown intent `opening_hour`")
    assert (in_yaml.file, in_yaml.line) == ("knowledge/hours.yaml", line_of(facts, "intents:"))
    in_markdown = find(problems, "unknown intent `hours`")
    # the front matter starts on line 2 of the Markdown file, below the opening ---
    assert (in_markdown.file, in_markdown.line) == ("knowledge/weekend.md", line_of(markdown, "intents:"))


def test_duplicates(tmp_path: Path) -> None:
    intents = INTENTS + "  - name: refund\n    examples: [something else entirely]\n"
    strategy = STRATEGY + "  - id: vip-refund-human\n    then: {priority: high}\n"
    actions = ACTIONS + "  - name: refund_order\n    path: /x\n    success_reply: ok\n"
    duplicate_fact = FACT_MD.replace("id: hours-weekend", "id: hours-weekdays")
    root = write_workspace(
        tmp_path,
        intents_dot_yaml=intents,
        strategy_dot_yaml=strategy,
        actions_dot_yaml=actions,
        knowledge__weekend_dot_md=duplicate_fact,
    )
    problems = validate_workspace(root, today=TODAY)
    intent = find(problems, "duplicate intent `refund`")
    assert intent.line == line_of(intents, "- name: refund", 2)
    assert find(problems, "duplicate rule `vip-refund-human`").line == line_of(
        strategy, "- id: vip-refund-human", 2
    )
    assert find(problems, "duplicate action `refund_order`").line == line_of(
        actions, "- name: refund_order", 2
    )
    fact = find(problems, "duplicate fact id `hours-weekdays`")
    assert fact.file == "knowledge/weekend.md" and "knowledge/hours.yaml:2" in fact.message


def test_action_path_placeholder_must_be_a_slot(tmp_path: Path) -> None:
    actions = ACTIONS.replace("/orders/{order_id}/refunds", "/orders/{orderid}/refunds")
    root = write_workspace(tmp_path, actions_dot_yaml=actions)
    problem = find(validate_workspace(root, today=TODAY), "placeholder `{orderid}` is not a slot")
    assert problem.line == line_of(actions, "path:")
    assert "order_id" in problem.fix


def test_slot_regex_must_compile(tmp_path: Path) -> None:
    actions = ACTIONS.replace("pattern: '#?(\\d{5})'", "pattern: '#?(\\d{5}'")
    root = write_workspace(tmp_path, actions_dot_yaml=actions)
    problem = find(validate_workspace(root, today=TODAY), "pattern does not compile")
    assert problem.line == line_of(actions, "pattern:")


def test_same_example_under_two_intents_is_an_error(tmp_path: Path) -> None:
    intents = INTENTS.replace("      - is the shop open now\n", "      - Refund   my ORDER\n")
    root = write_workspace(tmp_path, intents_dot_yaml=intents)
    problem = find(validate_workspace(root, today=TODAY), "is under both `refund`")
    assert problem.severity == "error"
    assert problem.line == line_of(intents, "Refund   my ORDER")


def test_fact_dates(tmp_path: Path) -> None:
    facts = FACTS_YAML + "    review_by: 2025-01-01\n    valid_to: 2025-05-01\n"
    root = write_workspace(tmp_path, knowledge__hours_dot_yaml=facts)
    problems = validate_workspace(root, today=TODAY)
    review = find(problems, "was due for review on 2025-01-01")
    expired = find(problems, "expired on 2025-05-01")
    assert review.severity == expired.severity == "warning"
    assert review.line == line_of(facts, "review_by")
    assert expired.line == line_of(facts, "valid_to")
    assert errors(problems) == []


def test_fallback_and_never_automate(tmp_path: Path) -> None:
    intents = INTENTS.replace(
        "    mechanism: content\n", "    mechanism: content\n    fallback: humn\n"
    ).replace(
        "    mechanism: human\n    never_automate: true", "    mechanism: content\n    never_automate: true"
    )
    root = write_workspace(tmp_path, intents_dot_yaml=intents)
    problems = validate_workspace(root, today=TODAY)
    fallback = find(problems, "fallback names unknown mechanism `humn`")
    assert fallback.line == line_of(intents, "fallback: humn") and "human" in fallback.fix
    never = find(problems, "is never_automate but its mechanism is `content`")
    assert never.severity == "error"
    assert never.fix == "set mechanism: human"
    assert never.line == line_of(intents, "mechanism: content", 2)


def test_unknown_mechanism_depends_on_registry(tmp_path: Path) -> None:
    intents = INTENTS.replace("mechanism: content", "mechanism: faq_bot")
    root = write_workspace(tmp_path, intents_dot_yaml=intents)
    assert find(validate_workspace(root, today=TODAY), "unknown mechanism `faq_bot`")
    mechanisms = ("content", "action", "human", "faq_bot")
    assert errors(validate_workspace(root, mechanisms, today=TODAY)) == []


def test_several_problems_in_several_files_are_all_reported(tmp_path: Path) -> None:
    root = write_workspace(
        tmp_path,
        cxstack_dot_yaml=SETTINGS.replace("name: acme", "name: acme\nlanguag: en"),
        strategy_dot_yaml=STRATEGY.replace("Europe/Paris", "Mars/Olympus").replace(
            "priority: high", "priority: max"
        ),
        intents_dot_yaml=INTENTS.replace("action: refund_order", "action: nope"),
        actions_dot_yaml=ACTIONS.replace("{order_id}", "{order}"),
        knowledge__weekend_dot_md="no front matter here\n",
    )
    problems = errors(validate_workspace(root, today=TODAY))
    messages = "\n".join(p.format() for p in problems)
    assert "unknown key `languag`" in messages
    assert "tiers[0].priority" in messages
    assert "unknown action `nope`" in messages
    assert "placeholder `{order}`" in messages
    assert "YAML front matter" in messages
    assert {p.file for p in problems} == {
        "cxstack.yaml",
        "strategy.yaml",
        "intents.yaml",
        "actions.yaml",
        "knowledge/weekend.md",
    }
    with pytest.raises(WorkspaceInvalid) as raised:
        load_workspace(root)
    assert len(raised.value.errors) == len(problems)
    text = str(raised.value)
    assert f"cxstack.yaml:{line_of(SETTINGS + 'x', 'name: acme') + 1}: unknown key `languag`" in text
    assert "(fix: did you mean `language`?)" in text


def test_one_bad_intent_does_not_hide_cross_reference_errors_in_others(tmp_path: Path) -> None:
    intents = INTENTS.replace(
        "    mechanism: content\n", "    mechanism: content\n    status: live\n"
    ).replace("action: refund_order", "action: nope")
    root = write_workspace(tmp_path, intents_dot_yaml=intents)
    problems = validate_workspace(root, today=TODAY)
    find(problems, "intents[1].status")
    find(problems, "unknown action `nope`")


def test_duplicate_yaml_key_is_reported(tmp_path: Path) -> None:
    settings = SETTINGS + "name: other\n"
    root = write_workspace(tmp_path, cxstack_dot_yaml=settings)
    problem = find(validate_workspace(root, today=TODAY), "key `name` appears twice")
    assert problem.line == line_of(settings, "name: other")


def test_articles_are_skipped_and_unknown_top_level_file_warned(tmp_path: Path) -> None:
    root = write_workspace(
        tmp_path,
        knowledge__articles__long_dot_md="# A long article\n\nNo front matter, and that is fine.\n",
        intent_dot_yaml="intents: []\n",
    )
    problems = validate_workspace(root, today=TODAY)
    assert errors(problems) == []
    stray = find(problems, "does not read this file")
    assert stray.file == "intent.yaml" and "intents.yaml" in stray.fix


def test_version_is_stable_under_comments_and_changes_with_content(tmp_path: Path) -> None:
    base = load_workspace(write_workspace(tmp_path / "a")).version
    commented = INTENTS.replace("intents:\n", "# our intents\nintents:   # trailing\n\n")
    with_defaults = commented.replace(
        "    mechanism: content\n", "    mechanism: content\n    status: active\n"
    )
    same = load_workspace(write_workspace(tmp_path / "b", intents_dot_yaml=with_defaults)).version
    assert same == base
    moved = load_workspace(
        write_workspace(
            tmp_path / "c",
            knowledge__hours_dot_yaml=FACTS_YAML.replace("facts:\n", "facts:\n", 1),
            knowledge__weekend_dot_md=None,
            knowledge__more__weekend_dot_md=FACT_MD,
        )
    ).version
    assert moved == base  # which knowledge file holds a fact is not behaviour
    changed = INTENTS.replace("- refund my order", "- refund my purchase")
    assert load_workspace(write_workspace(tmp_path / "d", intents_dot_yaml=changed)).version != base


def test_canonical_content_round_trips(tmp_path: Path) -> None:
    workspace = load_workspace(write_workspace(tmp_path))
    rebuilt = workspace_from_content(canonical_content(workspace))
    assert rebuilt.version == workspace.version
    assert rebuilt.intents == workspace.intents


def test_diff_reports_added_removed_changed(tmp_path: Path) -> None:
    old = load_workspace(write_workspace(tmp_path / "old"))
    intents = INTENTS.replace("- refund my order", "- refund my purchase").replace(
        "  - name: legal_threat\n    mechanism: human\n    never_automate: true\n    queue: vip\n"
        "    examples: [I will sue you]\n",
        "  - name: cancel\n    examples: [cancel my plan]\n",
    )
    settings = SETTINGS.replace("name: acme", "name: acme\nthresholds:\n  route_min_confidence: 0.5")
    strategy = STRATEGY + "  - id: night\n    when: {hours_between: [22, 6]}\n    then: {tone: calm}\n"
    new = load_workspace(
        write_workspace(
            tmp_path / "new",
            intents_dot_yaml=intents,
            cxstack_dot_yaml=settings,
            strategy_dot_yaml=strategy,
            knowledge__weekend_dot_md=FACT_MD.replace("closed on weekends", "open on Saturdays"),
        )
    )
    diff = diff_workspaces(old, new)
    assert diff.intents.added == ("cancel",)
    assert diff.intents.removed == ("legal_threat",)
    assert [c.path for c in diff.intents.changed["refund"]] == ["examples"]
    assert list(diff.facts.changed) == ["hours-weekend"]
    assert diff.rules.added == ("night",)
    assert [(c.path, c.old, c.new) for c in diff.settings] == [("thresholds.route_min_confidence", 0.4, 0.5)]
    summary = diff.summary()
    assert "+ cancel" in summary and "- legal_threat" in summary
    assert "+'refund my purchase'" in summary and "-'refund my order'" in summary
    assert diff_workspaces(old, old).empty


DEMO = Path(__file__).resolve().parents[1] / "src" / "cxstack" / "demo" / "workspace"


@pytest.mark.skipif(not (DEMO / "intents.yaml").exists(), reason="demo workspace not written yet")
def test_demo_workspace_validates_without_errors() -> None:
    problems = validate_workspace(DEMO)
    assert errors(problems) == [], "\n".join(p.format() for p in errors(problems))
    load_workspace(DEMO)


def test_reference_to_an_item_with_a_schema_error_is_not_also_unknown(tmp_path: Path) -> None:
    actions = ACTIONS.replace("    method: POST\n", "").replace(
        "path: /orders", "method: YEET\n    path: /orders"
    )
    root = write_workspace(tmp_path, actions_dot_yaml=actions)
    problems = errors(validate_workspace(root, today=TODAY))
    assert [p.message for p in problems] == [
        "actions[0].method: Input should be 'GET', 'POST', 'PUT', 'PATCH' or 'DELETE'"
    ]
    assert problems[0].line == line_of(actions, "method: YEET")


def test_not_a_folder(tmp_path: Path) -> None:
    (problem,) = validate_workspace(tmp_path / "nope")
    assert "workspace folder not found" in problem.message
    with pytest.raises(WorkspaceInvalid, match="workspace folder not found"):
        load_workspace(tmp_path / "nope")


def test_a_fact_for_an_unknown_tier_is_an_error_with_the_right_tier_suggested(tmp_path: Path) -> None:
    facts = FACTS_YAML + "    audience: {tiers: [enterprse]}\n"
    root = write_workspace(tmp_path, knowledge__hours_dot_yaml=facts)
    problem = find(validate_workspace(root, today=TODAY), "unknown tier `enterprse`")
    assert problem.severity == "error" and problem.line == line_of(facts, "audience")
    assert "enterprise" in problem.fix


def test_a_fact_for_a_language_the_workspace_does_not_answer_in_is_warned(shop_path: Path) -> None:
    (shop_path / "knowledge" / "fr.yaml").write_text(
        "version: 1\nfacts:\n  - id: fr-returns\n    text: Les retours sont gratuits.\n"
        "    owner: cx@shop.test\n    audience: {locales: [fr-CA]}\n"
    )
    problems = [p for p in validate_workspace(shop_path) if "fr-returns" in p.message]
    assert [(p.severity, p.file) for p in problems] == [("warning", "knowledge/fr.yaml")]
    assert "does not answer in" in problems[0].message
