"""The step verifier: checks what one step of a turn produced before the next step starts or the reply is
sent. Errors compound across the steps of a multi-step resolution, so each step is checked on its own, by
code, against what the turn actually knows — never by asking a model whether a model was right.

Checks (a failed one is named in the trace and the step's output is not sent):
  empty_reply           a reply step with no text and nothing done
  over_long_reply       longer than MAX_REPLY_CHARS: a runaway generation, not an answer
  uncited_answer        an answer from the knowledge base that cites no fact
  unsupported_reference an identifier (order number, tracking code, account id, e-mail address) that appears
                        in none of the turn's evidence: the customer's words and profile, the cited facts,
                        the back-office results, the workspace's own texts
  low_confidence        the step's confidence is below the workspace's answer_min_confidence
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cxstack.domain.turn import Outcome
from cxstack.resolution.models import TurnContext

MAX_REPLY_CHARS = 3000

# Tokens that name a specific object: a run of letters, digits and dashes with at least one digit and at
# least four characters (ORD-10005, 1Z999AA1, 10005), or an e-mail address. Amounts and short numbers
# ("5-7 days") are left to the money policy and the grounding check.
_REFERENCE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+|\b(?=[A-Za-z0-9-]*\d)[A-Za-z0-9][A-Za-z0-9-]{3,}\b")


@dataclass(frozen=True, slots=True)
class Verification:
    failed: tuple[str, ...] = ()
    unsupported: tuple[str, ...] = ()  # the references no evidence backs

    @property
    def passed(self) -> bool:
        return not self.failed


def references(text: str) -> list[str]:
    return [m.group(0).strip(".-") for m in _REFERENCE.finditer(text)]


def verify_step(
    outcome: Outcome, *, mechanism: str, evidence: Iterable[str], min_confidence: float
) -> Verification:
    if outcome.kind == "handoff":
        return Verification()  # nothing goes to the customer from this step but the handoff reply
    reply = (outcome.reply or "").strip()
    failed: list[str] = []
    if outcome.kind == "reply" and not reply and not outcome.actions:
        failed.append("empty_reply")
    if len(reply) > MAX_REPLY_CHARS:
        failed.append("over_long_reply")
    if mechanism == "content" and outcome.kind == "reply" and reply and not outcome.facts:
        failed.append("uncited_answer")
    known = " ".join(evidence).casefold()
    unsupported = tuple(dict.fromkeys(r for r in references(reply) if r.casefold() not in known))
    if unsupported:
        failed.append("unsupported_reference")
    if outcome.kind == "reply" and outcome.confidence < min_confidence:
        failed.append("low_confidence")
    return Verification(tuple(failed), unsupported)


def evidence_for(ctx: TurnContext, outcome: Outcome) -> list[str]:
    """Everything a reply in this turn may legitimately name."""
    customer = ctx.customer
    texts = [*(m.text for m in ctx.history), ctx.message.text]
    texts += [str(customer.id), customer.name, customer.email, json.dumps(customer.attributes, default=str)]
    for fact in [*ctx.shared.facts, *outcome.facts]:
        texts.append(fact.text)
    for result in [*ctx.shared.actions, *outcome.actions]:
        texts.append(json.dumps([result.request, result.response], default=str))
    workspace = ctx.workspace
    texts += [str(v) for v in workspace.settings.replies.model_dump().values()]
    texts += [f"{a.success_reply} {a.confirmation_prompt} {a.failure_reply}" for a in workspace.actions]
    texts += [f"{s.prompt or ''} {s.description}" for a in workspace.actions for s in a.slots]
    texts.append(workspace.settings.scope or "")
    texts += [i.handoff_reply for i in workspace.intents if i.handoff_reply]
    return texts
