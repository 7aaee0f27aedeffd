"""The outbound gate: what may be sent to a customer on their channel, decided in one place for every sender.

A person's reply, a help desk's, a follow-up or a survey all queue through `CxApp.human_reply`, which asks
`check` before anything is stored; the bot's replies answer a message that just arrived. The channel asks
again when it sends (`WhatsAppChannel.send`), because an item can wait in the outbox past the window's end.

WhatsApp's rule: free text only inside the 24-hour customer-service window, which opens with the customer's
last message; outside it only an approved template (declared in the workspace's `whatsapp.templates`). A
refusal names the window and the templates that may be sent instead; nothing is dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cxstack.domain.models import Message, Role
from cxstack.workspace.models import TEMPLATE_PLACEHOLDER, WhatsAppConfig

WHATSAPP = "whatsapp"
SERVICE_WINDOW = timedelta(hours=24)
# WhatsApp refuses a template parameter with a newline or a tab, or more than four spaces in a row.
_BAD_PARAMETER = re.compile(r"[\n\t]| {5,}")
PARAMETER_MAX = 1024


class OutboundRefusedError(ValueError):
    """A message the customer's channel would not deliver; the message says why and what may be sent."""


class TemplateError(OutboundRefusedError):
    """A template that is not approved here, or parameters it cannot take."""


@dataclass(frozen=True, slots=True)
class RenderedTemplate:
    text: str  # the body as the customer sees it, for the transcript
    content: dict[str, Any]  # the outbox item's structured content


def last_customer_message_at(messages: Sequence[Message]) -> datetime | None:
    last = max((m.created_at for m in messages if m.role == Role.CUSTOMER), default=None)
    if last is None:
        return None
    return last if last.tzinfo else last.replace(tzinfo=UTC)


def window_open(messages: Sequence[Message], now: datetime) -> bool:
    last = last_customer_message_at(messages)
    return last is not None and now - last < SERVICE_WINDOW


def window_refusal(messages: Sequence[Message], config: WhatsAppConfig | None) -> str:
    last = last_customer_message_at(messages)
    when = f"the customer last wrote at {last:%Y-%m-%d %H:%M} UTC" if last else "the customer never wrote"
    names = ", ".join(sorted({t.name for t in config.templates})) if config else ""
    instead = f"send an approved template instead ({names})" if names else "no approved template is declared"
    return (
        f"outside WhatsApp's 24-hour customer-service window ({when}): free text is not delivered; {instead}"
    )


def render_template(
    config: WhatsAppConfig, name: str, parameters: Sequence[str], language: str | None = None
) -> RenderedTemplate:
    template = config.template(name, language)
    if template is None:
        approved = ", ".join(f"{t.name} ({t.language})" for t in config.templates) or "none is declared"
        raise TemplateError(f"template {name!r} is not an approved template here (approved: {approved})")
    if len(parameters) != template.parameter_count:
        raise TemplateError(
            f"template {name!r} takes {template.parameter_count} parameter(s), got {len(parameters)}"
        )
    for number, value in enumerate(parameters, start=1):
        if not value.strip():
            raise TemplateError(f"template {name!r}: parameter {{{{{number}}}}} is empty")
        if _BAD_PARAMETER.search(value) or len(value) > PARAMETER_MAX:
            raise TemplateError(
                f"template {name!r}: parameter {{{{{number}}}}} has a newline, a tab, five spaces in a row "
                f"or over {PARAMETER_MAX} characters, which WhatsApp refuses"
            )
    text = re.sub(TEMPLATE_PLACEHOLDER, lambda m: parameters[int(m.group(1)) - 1], template.body)
    return RenderedTemplate(
        text=text,
        content={
            "template": {"name": template.name, "language": template.language, "parameters": list(parameters)}
        },
    )


def check(
    channel: str,
    messages: Sequence[Message],
    content: dict[str, Any] | None,
    config: WhatsAppConfig | None,
    now: datetime | None = None,
) -> None:
    """Raises OutboundRefusedError if `channel` would not deliver this message now."""
    if content and "template" in content and channel != WHATSAPP:
        raise OutboundRefusedError(f"templates are WhatsApp's; this conversation is on {channel}")
    if channel != WHATSAPP or (content and "template" in content):
        return
    if not window_open(messages, now or datetime.now(UTC)):
        raise OutboundRefusedError(window_refusal(messages, config))
