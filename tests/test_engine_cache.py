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
    assert len(fits) == 3 and len(list(cache.iterdir())) == 3


def test_a_broken_cache_file_is_rebuilt_not_trusted(tmp_path: Path, fits: list[int]) -> None:
    cache = tmp_path / "cache"
    ws = load_workspace(write_workspace(tmp_path / "ws"))
    first = build_engine(ws, embedder_name="hashing", cache_dir=cache)
    [saved] = cache.iterdir()
    saved.write_bytes(b"not a pickle")
    again = build_engine(ws, embedder_name="hashing", cache_dir=cache)
    assert len(fits) == 2
    assert again.router_report.n_examples == first.router_report.n_examples
    assert saved.read_bytes() != b"not a pickle"
