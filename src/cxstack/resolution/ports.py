from __future__ import annotations

from typing import Any, Protocol

from cxstack.domain.models import ActionResult
from cxstack.domain.turn import Outcome, ResolutionPlan
from cxstack.resolution.models import TurnContext
from cxstack.workspace.models import ActionConfig


class Resolver(Protocol):
    """One per mechanism (content, action, human, later agent and multi_agent), registered by name."""

    mechanism: str

    async def resolve(self, ctx: TurnContext, plan: ResolutionPlan) -> Outcome: ...


class ActionConnector(Protocol):
    """Calls a back-office action. Retries, timeouts and idempotency are the connector's job. `customer_id`
    is the verified customer the call is made for (None for an anonymous one); a connector passes it on so
    the back office can refuse objects that are not theirs too."""

    async def call(
        self,
        action: ActionConfig,
        slots: dict[str, Any],
        idempotency_key: str,
        *,
        customer_id: str | None = None,
    ) -> ActionResult: ...
