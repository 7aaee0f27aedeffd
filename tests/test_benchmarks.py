"""The benchmarks stay runnable: every module imports and parses its options, and the fault benchmark's load
is built from the demo's sample conversations as the workspace ships them."""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path

import benchmarks
import pytest
from benchmarks import sequential_aa, srm
from benchmarks.faults import plan_load

# Modules named _like_this are shared parts of a benchmark (data generators, baselines), not benchmarks.
MODULES = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if not m.name.startswith("_"))


def test_every_benchmark_is_listed() -> None:
    assert {"authz", "demo_heldout", "faults", "routing_clinc150", "turn_latency"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_every_benchmark_imports_and_documents_its_options(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    module = importlib.import_module(f"benchmarks.{name}")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert "--json" in capsys.readouterr().out


def test_the_fault_load_is_real_sample_messages_spread_over_its_conversations() -> None:
    plan = plan_load(messages=300, conversations=20, seed=7)
    assert len(plan) == 20
    assert sum(len(c.messages) for c in plan) == 300
    assert all(c.messages and c.customer_id.startswith("cus_") for c in plan)
    assert plan_load(messages=300, conversations=20, seed=7)[0].messages == plan[0].messages  # seeded


def test_the_experiment_benchmarks_run_small_and_hold_their_aims(tmp_path: Path) -> None:
    assert (
        sequential_aa.main(["--experiments", "200", "--days", "10", "--json", str(tmp_path / "s.json")]) == 0
    )
    figures = json.loads((tmp_path / "s.json").read_text())
    assert figures["aa"]["sequential_daily"] <= figures["aa"]["fixed_daily"]
    assert srm.main(["--repetitions", "20", "--json", str(tmp_path / "srm.json")]) == 0
    rows = json.loads((tmp_path / "srm.json").read_text())["rows"]
    assert next(r for r in rows if r["delivered"] == 0.55 and r["n"] == 100_000)["cxstack"] == 1.0


def test_each_planted_fault_is_a_valid_workspace_whose_change_sits_in_the_planted_layer() -> None:
    import copy
    from collections import Counter

    from benchmarks.diagnose_planted import add_decoys, plan_faults

    from cxstack.demo import demo_workspace_path
    from cxstack.optimization.diagnose import workspace_changes
    from cxstack.workspace.loader import canonical_content, load_workspace, workspace_from_content

    original = load_workspace(demo_workspace_path())
    content = canonical_content(original)
    faults = plan_faults(content, Counter({"plans-overview": 3}), Counter({"order_status": 5}))
    assert len({f.layer for f in faults}) == 5  # one per layer but orchestration (and routing twice)
    for fault in faults:
        faulty = copy.deepcopy(content)
        fault.plant(faulty)
        add_decoys(faulty, "add-item-separate-order")
        changes = workspace_changes(original, workspace_from_content(faulty))
        planted = [c for c in changes if c.name in fault.changes]
        assert planted and all(c.layer is fault.layer for c in planted), (fault.name, changes)
        assert {c.name for c in changes} - set(fault.changes) == {
            "review_sampling.rate",
            "add-item-separate-order",
        }
