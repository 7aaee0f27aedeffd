"""A trained router is saved by workspace version and embedder: serve's worker process, a restarted worker
and a restarted serve load it instead of training again (which took minutes on a busy 2-core machine)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import SHOP, write_workspace

from cxstack.app import Settings, build, build_engine, worker_components
from cxstack.orchestration.router import IntentRouter
from cxstack.workspace.loader import load_workspace

PROBES = ["where is my order", "I want my money back", "see you in court", "how long do returns take"]


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = IntentRouter.fit

    def counting(self: IntentRouter, *args: object, **kwargs: object) -> object:
        calls.append(1)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(IntentRouter, "fit", counting)
    return calls


def test_serve_and_its_worker_process_train_once(tmp_path: Path, fits: list[int]) -> None:
    ws = load_workspace(write_workspace(tmp_path / "ws"))
    settings = Settings(home=tmp_path / "home", embedder="hashing", runtime="process")
    api_side = build(settings, workspace=ws)
    _, orchestrator, _, _ = worker_components({"settings": settings.model_dump(), "workspace": ws})
    assert len(fits) == 1
    for text in PROBES:
        assert orchestrator._router.predict(text, oos_threshold=0.3) == api_side.engine.router.predict(
            text, oos_threshold=0.3
        )


def test_a_new_workspace_version_trains_again(tmp_path: Path, fits: list[int]) -> None:
    cache = tmp_path / "cache"
    build_engine(load_workspace(write_workspace(tmp_path / "a")), embedder_name="hashing", cache_dir=cache)
    changed = SHOP["intents.yaml"].replace("- do you accept returns", "- do you take returns")
    ws = load_workspace(write_workspace(tmp_path / "b", **{"intents.yaml": changed}))
    build_engine(ws, embedder_name="hashing", cache_dir=cache)
    build_engine(ws, embedder_name="wordllama", cache_dir=cache)
    assert len(fits) == 3 and len(list(cache.glob("router-*.pickle"))) == 3


def test_a_broken_cache_file_is_rebuilt_not_trusted(tmp_path: Path, fits: list[int]) -> None:
    cache = tmp_path / "cache"
    ws = load_workspace(write_workspace(tmp_path / "ws"))
    first = build_engine(ws, embedder_name="hashing", cache_dir=cache)
    [saved] = cache.glob("router-*.pickle")
    saved.write_bytes(b"not a pickle")
    again = build_engine(ws, embedder_name="hashing", cache_dir=cache)
    assert len(fits) == 2
    assert again.router_report.n_examples == first.router_report.n_examples
    assert saved.read_bytes() != b"not a pickle"


def test_processes_starting_together_on_one_state_folder_train_once(tmp_path: Path) -> None:
    """A deployment's processes (make run-pg: serve and two workers) start at once on one CXSTACK_HOME: one
    trains, the others wait for its file instead of training the same router beside it."""
    import subprocess
    import sys

    ws = write_workspace(tmp_path / "ws")
    cache = tmp_path / "cache"
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from cxstack.orchestration.router import IntentRouter\n"
        "from cxstack.app import build_engine\n"
        "from cxstack.workspace.loader import load_workspace\n"
        "fit = IntentRouter.fit\n"
        "def counting(self, *a, **k):\n"
        "    print('trained', flush=True)\n"
        "    return fit(self, *a, **k)\n"
        "IntentRouter.fit = counting\n"
        "build_engine(load_workspace(sys.argv[1]), embedder_name='hashing', cache_dir=Path(sys.argv[2]))\n"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(ws), str(cache)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0]
    assert sum(output.count("trained") for output in outputs) == 1
