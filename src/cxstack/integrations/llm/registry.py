"""LLM providers by name through the `cxstack.llm_providers` entry point group (built-ins register the same
way), and the guarded client a workspace's `llm:` settings describe."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from cxstack.domain.llm import LLMProvider, ModelPrice
from cxstack.domain.secrets import resolve
from cxstack.integrations.llm.guard import LLMClient, LLMLimits
from cxstack.workspace.models import LLMSettings

ENTRY_POINT_GROUP = "cxstack.llm_providers"


class UnknownLLMProviderError(LookupError):
    pass


def available_llm_providers() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def load_llm_provider(name: str, **options: Any) -> LLMProvider:
    matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not matches:
        raise UnknownLLMProviderError(
            f"no LLM provider named {name!r}; available: {', '.join(available_llm_providers()) or 'none'}"
            f" (plug-ins register under the entry point group {ENTRY_POINT_GROUP!r})"
        )
    provider: LLMProvider = matches[0].load()(**options)
    return provider


def llm_client(settings: LLMSettings, *, base_url: str | None = None) -> LLMClient:
    """The guarded client for a workspace's `llm:` settings; `base_url` overrides the workspace's (a local
    server started for this run). Raises MissingSecretError when a referenced variable is not set."""
    url = base_url or (
        resolve(settings.base_url, where="llm.base_url") if settings.base_url is not None else None
    )
    key = resolve(settings.api_key, where="llm.api_key") if settings.api_key else None
    provider = load_llm_provider(
        settings.provider,
        model=settings.model,
        base_url=url if isinstance(url, str) or url is None else url.reveal(),
        api_key=key,
        stream=settings.stream,
        timeout_s=settings.timeout_s,
    )
    limits = LLMLimits(
        max_retries=settings.max_retries,
        breaker_failures=settings.breaker_failures,
        breaker_reset_s=settings.breaker_reset_s,
        turn_tokens=settings.turn_tokens,
        turn_seconds=settings.turn_seconds,
    )
    prices = {
        model: ModelPrice(p.input_per_million, p.output_per_million) for model, p in settings.prices.items()
    }
    return LLMClient(provider, limits=limits, prices=prices)
