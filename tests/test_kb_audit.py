"""`cxstack kb audit` on a copy of the demo with planted problems: each is found, with its owner and a fix,
and the demo as shipped has nothing to fix."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from typer.testing import CliRunner

from cxstack.cli.main import app
from cxstack.cli.services import paraphrase_embedder
from cxstack.demo import demo_workspace_path
from cxstack.workspace.models import FactConfig

PLANTED = """version: 1
facts:
  - id: plus-window-copy
    text: The Plus plan has a return window of 60 days from delivery.
    owner: store-ops@northwind.example
  - id: store-hours-again
    text: >-
      Northwind stores are open 10am to 8pm Monday to Saturday, 11am to 6pm on Sunday
      and until 9pm on Thursdays.
    owner: store-ops@northwind.example
  - id: gift-wrap-free
    text: Gift wrapping is not free of charge on the Enterprise plan.
    owner: ""
  - id: old-promo
    text: The spring sale ends on 31 March.
    owner: marketing-ops@northwind.example
    review_by: 2026-04-01
"""


def audit(workspace: Path, *extra: str) -> dict[str, object]:
    if "--home" not in extra:  # no stored conversations unless a test brings its own
        extra = (*extra, "--home", str(Path(tempfile.mkdtemp()) / "no-state"))
    result = CliRunner().invoke(
        app, ["kb", "audit", str(workspace), "--json", "--today", "2026-11-29", *extra]
    )
    assert result.exit_code == 0, result.output
    report: dict[str, object] = json.loads(result.stdout)
    return report


def test_the_demo_as_shipped_has_nothing_to_fix() -> None:
    report = audit(demo_workspace_path())
    assert report["facts"] == 180 and report["findings"] == []


def test_planted_duplicates_contradictions_stale_and_unowned_facts_are_found(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    shutil.copytree(demo_workspace_path(), workspace)
    (workspace / "knowledge" / "planted.yaml").write_text(PLANTED)
    findings = audit(workspace)["findings"]
    assert isinstance(findings, list)
    by_kind: dict[str, list[dict[str, object]]] = {}
    for finding in findings:
        by_kind.setdefault(finding["kind"], []).append(finding)

    [contradiction] = by_kind["contradiction"]
    assert set(contradiction["facts"]) == {"return-window-plus", "plus-window-copy"}  # type: ignore[arg-type]
    assert "60 vs 90 days" in str(contradiction["detail"]) or "90 vs 60 days" in str(contradiction["detail"])
    assert "billing-team@northwind.example" in str(contradiction["owner"])
    [duplicate] = by_kind["near_duplicate"]
    assert set(duplicate["facts"]) == {"store-hours", "store-hours-again"}  # type: ignore[arg-type]
    assert [f["facts"] for f in by_kind["unowned"]] == [["gift-wrap-free"]]
    assert [f["facts"] for f in by_kind["stale"]] == [["old-promo"]]
    assert all(f["fix"] for f in findings)  # type: ignore[index]


SUBJECTS = """version: 1
facts:
  - id: trailblazer-warranty
    subject: Trailblazer boots
    text: The warranty lasts 2 years.
    owner: product@northwind.example
  - id: summit-warranty
    subject: Summit jacket
    text: The warranty lasts 5 years.
    owner: product@northwind.example
  - id: trailblazer-warranty-old
    status: retired
    subject: Trailblazer boots
    text: The warranty lasts 3 years.
    owner: product@northwind.example
"""


def test_facts_about_different_subjects_or_retired_are_not_paired(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    shutil.copytree(demo_workspace_path(), workspace)
    (workspace / "knowledge" / "planted.yaml").write_text(SUBJECTS)
    assert audit(workspace)["findings"] == []
    # The same facts without subjects, all published: the two warranties contradict each other.
    unmarked = "\n".join(
        line for line in SUBJECTS.splitlines() if "subject:" not in line and "status:" not in line
    )
    (workspace / "knowledge" / "planted.yaml").write_text(unmarked + "\n")
    kinds = [f["kind"] for f in audit(workspace)["findings"]]  # type: ignore[union-attr]
    assert kinds.count("contradiction") >= 2


def test_knowledge_gaps_group_what_no_fact_answered(tmp_path: Path) -> None:
    import dataclasses

    from cxstack.app import Settings, open_store
    from cxstack.testing.store_contract import inbound, make_commit

    home = tmp_path / "home"
    store = open_store(Settings(home=home))
    unanswered = {
        "no_grounded_answer": [
            "do you sell surfboards?",
            "are surfboards sold in your stores",
            "how much is a surfboard",
            "can you gift wrap orders shipped abroad?",
            "is international gift wrapping available",
            "what is the meaning of life",
        ],
        "unsupported_answer": ["surfboard prices please"],
        "amount_over_cap": ["refund $900 for my surfboard"],  # a policy escalation, not a gap
    }
    n = 0
    for reason, questions in unanswered.items():
        for question in questions:
            n += 1
            message = store.ingest(inbound(f"e{n}", conversation=f"c{n}", text=question)).message
            commit = make_commit(f"c{n}", message.id, reply=None)
            trace = dataclasses.replace(commit.trace, reason_code=reason, mechanism="content", reply=None)
            store.commit_turn(dataclasses.replace(commit, trace=trace))
    report = audit(demo_workspace_path(), "--home", str(home), "--embedder", "minilm")
    assert report["gap_questions"] == 7
    gaps = report["gaps"]
    assert isinstance(gaps, list) and len(gaps) == 2
    surf, wrap = gaps
    assert surf["count"] == 4 and "surfboard" in surf["question"]
    assert surf["reasons"] == {"no_grounded_answer": 3, "unsupported_answer": 1}
    assert wrap["count"] == 2 and "gift wrap" in wrap["question"]


def test_without_a_state_folder_there_are_no_gaps_and_none_is_created(tmp_path: Path) -> None:
    report = audit(demo_workspace_path(), "--home", str(tmp_path / "none"), "--embedder", "hashing")
    assert report["gaps"] == [] and report["gap_questions"] == 0
    assert not (tmp_path / "none").exists()


def test_kb_impact_names_a_missing_fact_and_reads_the_traces(tmp_path: Path) -> None:
    import dataclasses

    from cxstack.app import Settings, open_store
    from cxstack.domain.models import Layer, TraceStep
    from cxstack.testing.store_contract import inbound, make_commit

    home = tmp_path / "home"
    store = open_store(Settings(home=home))
    message = store.ingest(inbound("e1", conversation="c1", text="how long can I return boots?")).message
    commit = make_commit("c1", message.id, reply="The Plus plan has a return window of 90 days.")
    step = TraceStep(Layer.RESOLUTION, "resolve", {}, {"facts": [{"id": "return-window-plus", "score": 0.8}]})
    trace = dataclasses.replace(commit.trace, steps=[*commit.trace.steps, step], intent="return_policy")
    store.commit_turn(dataclasses.replace(commit, trace=trace))

    runner = CliRunner()
    ws = str(demo_workspace_path())
    found = runner.invoke(app, ["kb", "impact", ws, "return-window-plus", "--home", str(home), "--json"])
    assert found.exit_code == 0, found.output
    impact = json.loads(found.stdout)
    assert impact["conversations"] == 1 and impact["intents"] == {"return_policy": 1}
    assert impact["declared_intents"] == ["return_policy", "start_return"]
    missing = runner.invoke(app, ["kb", "impact", ws, "return-window-plu", "--home", str(home)])
    assert missing.exit_code == 1 and "did you mean return-window-plus" in missing.stderr


def test_the_html_report_charts_the_findings_and_lists_them(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    shutil.copytree(demo_workspace_path(), workspace)
    (workspace / "knowledge" / "planted.yaml").write_text(PLANTED)
    page = tmp_path / "audit.html"
    report = audit(workspace, "--html", str(page))
    html = page.read_text()
    assert html.count("<svg") == 1  # findings chart; no gaps chart without stored conversations
    assert len(report["findings"]) == 4  # type: ignore[arg-type]
    for fact_id in ("plus-window-copy", "store-hours-again", "gift-wrap-free", "old-promo"):
        assert f"<code>{fact_id}</code>" in html
    assert "No knowledge gaps" in html and "Northwind Outfitters" in html


REWORDED = """version: 1
facts:
  - id: reset-link-again
    text: "Please note: a password reset link works only once and it expires after 30 minutes."
    owner: accounts-team@northwind.example
  - id: hemming-charged
    text: Hemming is charged in Northwind stores; other alterations cost $15.
    owner: product-team@northwind.example
"""


def test_a_paraphrase_and_a_flipped_policy_word_planted_in_the_demo_are_found(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    shutil.copytree(demo_workspace_path(), workspace)
    (workspace / "knowledge" / "planted.yaml").write_text(REWORDED)
    findings = audit(workspace)["findings"]
    assert isinstance(findings, list)
    pairs = {(f["kind"], frozenset(f["facts"])) for f in findings}
    assert ("near_duplicate", frozenset({"password-reset-link", "reset-link-again"})) in pairs
    [contradiction] = [f for f in findings if "hemming-charged" in f["facts"]]
    assert contradiction["kind"] == "contradiction" and "free vs charged" in contradiction["detail"]
    assert len(findings) == 2


def _fact(fact_id: str, text: str, subject: str | None = None) -> FactConfig:
    return FactConfig(id=fact_id, text=text, owner="ops@example.com", subject=subject)


def test_dates_amounts_and_policy_words_contradict_and_their_equivalents_do_not() -> None:
    from datetime import date

    from cxstack.knowledge.audit import audit_facts, dates, quantities

    assert dates("Ends on 31 March, on March 31st, 2026 and on 2026-04-02.") == {
        "03-31",
        "2026-03-31",
        "2026-04-02",
    }
    assert quantities("a 5-year warranty for $5.00 or 7 USD") == {"year": {"5"}, "$": {"5", "7"}}
    pairs = [
        ("The spring sale ends on 31 March.", "The spring sale ends on March 15.", "date"),
        ("Gift wrapping costs $5 per order.", "Gift wrapping costs 6.50 USD per order.", "$5 vs $6.5"),
        (
            "Dogs on a lead are allowed inside all Northwind stores and outlets.",
            "Dogs on a lead are prohibited inside all Northwind stores and outlets.",
            "allowed",
        ),
        ("Gift wrapping is free for Gold members.", "Gift wrapping is charged for Gold members.", "free vs"),
        ("You can exchange boots once.", "You cannot exchange boots once.", "negates"),
        (
            "The plan includes two alterations a year.",
            "The plan excludes two alterations a year.",
            "included",
        ),
    ]
    for a, b, why in pairs:
        report = audit_facts([_fact("a", a), _fact("b", b)], date(2026, 1, 1))
        kinds = [(f.kind, f.detail) for f in report.findings]
        assert len(kinds) == 1 and kinds[0][0] == "contradiction" and why in kinds[0][1], (a, b, kinds)
    same = [
        ("The spring sale ends on 31 March.", "The spring sale ends on March 31st."),
        ("Gift wrapping costs $5 per order.", "Gift wrapping costs 5.00 USD per order."),
        ("Engraving is free of charge in our stores.", "Engraving is done at no extra cost in our stores."),
    ]
    for a, b in same:
        report = audit_facts([_fact("a", a), _fact("b", b)], date(2026, 1, 1))
        assert "contradiction" not in [f.kind for f in report.findings], (a, b, report.findings)
    # Names that only one of them mentions: about different things, neither repeated nor contradicted.
    apart = audit_facts(
        [
            _fact("a", "Express delivery to Mexico by DHL costs $25 per parcel."),
            _fact("b", "Express delivery to Japan by DHL costs $40 per parcel."),
        ],
        date(2026, 1, 1),
    )
    assert apart.findings == ()


def test_never_retrieved_comes_from_the_stored_answers(tmp_path: Path) -> None:
    import dataclasses

    from cxstack.app import Settings, open_store
    from cxstack.domain.models import Layer, TraceStep
    from cxstack.testing.store_contract import inbound, make_commit

    workspace = tmp_path / "ws"
    shutil.copytree(demo_workspace_path(), workspace)
    home = tmp_path / "home"
    store = open_store(Settings(home=home))
    cited = ["return-window-plus", "password-reset-link"]
    for n, fact_id in enumerate([*cited, None]):
        message = store.ingest(inbound(f"e{n}", conversation=f"c{n}", text="a question")).message
        commit = make_commit(f"c{n}", message.id, reply="an answer")
        facts = [{"id": fact_id, "score": 0.8}] if fact_id else []
        step = TraceStep(Layer.RESOLUTION, "resolve", {}, {"facts": facts})
        trace = dataclasses.replace(commit.trace, steps=[*commit.trace.steps, step])
        store.commit_turn(dataclasses.replace(commit, trace=trace))
    # A draft is not served, so it cannot be retrieved: not reported.
    (workspace / "knowledge" / "draft.yaml").write_text(
        "version: 1\nfacts:\n  - id: a-draft\n    status: draft\n"
        "    text: Socks come in packs of three.\n    owner: product-team@northwind.example\n"
    )
    findings = audit(workspace, "--home", str(home), "--embedder", "hashing")["findings"]
    assert isinstance(findings, list)
    never = {f["facts"][0]: f for f in findings if f["kind"] == "never_retrieved"}
    assert len(never) == 180 - len(cited) and not set(cited) & set(never) and "a-draft" not in never
    first = never["username-format"]
    assert first["owner"] == "accounts-team@northwind.example" and "3 stored turns" in first["detail"]
    assert "2 answers cited facts" in first["detail"] and first["fix"]


def test_the_approximate_search_finds_what_the_exact_one_finds() -> None:
    from datetime import date

    from benchmarks._audit_facts_gen import generate

    from cxstack.knowledge.audit import audit_facts, candidate_pairs

    facts, planted = generate(3000, 5)
    exact = audit_facts(facts, date(2026, 1, 1), search="exact")
    approximate = audit_facts(facts, date(2026, 1, 1), search="ann")
    assert exact.findings == approximate.findings
    assert len(exact.findings) >= 0.9 * len(planted)
    pairs_exact = candidate_pairs(facts, search="exact")
    pairs_ann = candidate_pairs(facts, search="ann")
    agree = set(pairs_exact) & set(pairs_ann)
    assert len(agree) >= 0.97 * len(pairs_exact)  # they may differ at the edge of a crowd, not in findings


def test_a_rewording_in_other_words_is_a_repeat_and_a_fact_about_another_carrier_is_not() -> None:
    from datetime import date

    from cxstack.knowledge.audit import audit_facts

    subject = "Cedar Ultra belt"
    facts = [
        _fact("a", f"Repairs to the {subject} take about 8 business days at our workshop.", subject),
        _fact("b", f"Repairs to the {subject} need roughly 8 working days at our workshop.", subject),
        _fact("c", f"The {subject} weighs 1063 grams.", subject),
        _fact("d", f"For your information, the {subject} weighs 2127 grams.", subject),
        # Same template, another carrier (one that has no capitalised name): neither a repeat nor a conflict.
        _fact("e", "Customs duties for orders to Estonia by DPD are paid by the customer on delivery."),
        _fact(
            "f", "Customs duties for orders to Estonia by the national postal service are paid on delivery."
        ),
        _fact("g", "Orders shipped to Iceland by FedEx arrive within 8 business days."),
        _fact("h", "Orders shipped to Iceland by the national postal service arrive within 6 business days."),
    ]
    report = audit_facts(facts, date(2026, 1, 1), meaning=paraphrase_embedder())
    found = {(f.kind, f.facts) for f in report.findings}
    assert found == {("near_duplicate", ("a", "b")), ("contradiction", ("c", "d"))}, report.findings
    [weights] = report.of_kind("contradiction")
    assert "1063 vs 2127 grams" in weights.detail


def test_a_repeat_without_a_subject_is_found_among_many_template_siblings() -> None:
    from datetime import date

    from cxstack.knowledge.audit import audit_facts

    carriers = [f"{name} Freight" for name in ("Acme", "Bolt", "Crest", "Delta", "Echo", "Flint", "Gale")]
    services = ["Standard", "Express", "Economy", "Priority"]
    facts = [
        _fact(
            f"s{n}",
            f"Orders shipped to Brazil by {carrier} {service} arrive within {3 + n % 9} business days.",
        )
        for n, (carrier, service) in enumerate((c, s) for c in carriers for s in services)
    ]
    original = facts[5].text
    facts.append(
        _fact("repeat", original.replace("business days", "working days").replace("arrive", "get there"))
    )
    facts.append(_fact("changed", original.replace(f"within {3 + 5 % 9} ", "within 30 ")))
    report = audit_facts(facts, date(2026, 1, 1), search="ann", meaning=paraphrase_embedder())
    found = {(f.kind, frozenset(f.facts)) for f in report.findings}
    assert ("near_duplicate", frozenset({"s5", "repeat"})) in found, report.findings
    assert ("contradiction", frozenset({"s5", "changed"})) in found, report.findings
    assert all("s5" in ids or "repeat" in ids or "changed" in ids for _, ids in found), found


def test_the_approximate_search_gives_the_same_pairs_every_run() -> None:
    from benchmarks._audit_facts_gen import generate

    from cxstack.knowledge.audit import candidate_pairs

    facts, _ = generate(3000, 5)
    assert candidate_pairs(facts, search="ann") == candidate_pairs(facts, search="ann")
