"""The contract every `Store` adapter must pass. Subclass `StoreContract` and provide a `store` fixture:

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store(self) -> Iterator[Store]:
            yield MyStore(...)

The fixture must hand each test an empty store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from cxstack.domain.auth import ApiKey, ApiRole
from cxstack.domain.conversation_state import IllegalTransitionError, Transition
from cxstack.domain.llm import LLM_STEP
from cxstack.domain.models import (
    ActionResult,
    ConversationId,
    ConversationStatus,
    Customer,
    CustomerId,
    Decision,
    EscalationId,
    EscalationPacket,
    FactCitation,
    FactVersion,
    InboundMessage,
    Layer,
    Message,
    MessageId,
    Priority,
    Role,
    Trace,
    TraceId,
    TraceStep,
    WorkspaceVersionId,
    new_id,
    utcnow,
)
from cxstack.domain.ports import (
    EmailRecord,
    FactVersionConflictError,
    IngestResult,
    LeaseLostError,
    OutboxStatus,
    StaleStateError,
    Store,
    TurnCommit,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def inbound(
    external_id: str,
    conversation: str = "conv-1",
    text: str = "where is my order?",
    *,
    channel: str = "webchat",
    customer_id: str = "cus-1",
    customer: Customer | None = None,
    received_at: datetime | None = None,
) -> InboundMessage:
    return InboundMessage(
        channel=channel,
        external_id=external_id,
        conversation_id=ConversationId(conversation),
        customer_id=CustomerId(customer_id),
        text=text,
        received_at=received_at or utcnow(),
        customer=customer,
    )


def make_trace(
    conversation_id: str,
    message_id: str,
    *,
    trace_id: str | None = None,
    created_at: datetime | None = None,
    intent: str | None = "order_status",
    reply: str | None = "It ships tomorrow.",
) -> Trace:
    return Trace(
        id=TraceId(trace_id or new_id("trc")),
        conversation_id=ConversationId(conversation_id),
        message_id=MessageId(message_id),
        workspace_version=WorkspaceVersionId("wsv-abc"),
        steps=[
            TraceStep(Layer.STRATEGY, "assess", {"customer": "cus-1"}, {"tier": "gold", "rules": ["vip"]}),
            TraceStep(
                Layer.ORCHESTRATION,
                "classify",
                {"text": "where is my order?"},
                {"intent": intent, "alternatives": [["refund", 0.1]]},
                confidence=0.87,
                duration_ms=1.5,
            ),
        ],
        intent=intent,
        intent_confidence=0.87,
        mechanism="content",
        decision=Decision.CONTINUE,
        outcome="automated",
        reply=reply,
        reason_code=None,
        variant="B",
        created_at=created_at or utcnow(),
        duration_ms=12.25,
    )


def make_reply(conversation_id: str, text: str = "It ships tomorrow.") -> Message:
    return Message(
        id=MessageId(new_id("msg")),
        conversation_id=ConversationId(conversation_id),
        role=Role.ASSISTANT,
        text=text,
        created_at=utcnow(),
        channel="webchat",
        author="cxstack",
    )


def make_packet(
    conversation_id: str, *, queue: str = "billing", priority: Priority = Priority.NORMAL
) -> EscalationPacket:
    return EscalationPacket(
        id=EscalationId(new_id("esc")),
        conversation_id=ConversationId(conversation_id),
        queue=queue,
        priority=priority,
        reason_code="low_confidence",
        summary="Customer asks for a refund of a double charge.",
        intent="refund",
        intent_confidence=0.41,
        customer={"id": "cus-1", "tier": "gold"},
        fired_rules=["vip-refund-human"],
        facts_used=[FactCitation("refund-policy", 0.8, "Refunds within 30 days.")],
        actions_tried=[
            ActionResult("lookup_order", True, 200, {"order": "A1"}, {"status": "paid"}, attempts=2),
        ],
        transcript=[{"role": "customer", "text": "I was charged twice"}],
        created_at=utcnow(),
    )


def make_commit(
    conversation_id: str,
    message_id: str,
    *,
    reply: str | None = "It ships tomorrow.",
    state: dict[str, Any] | None = None,
    transitions: tuple[Transition, ...] = (),
    escalation: EscalationPacket | None = None,
    trace_id: str | None = None,
    **extra: Any,
) -> TurnCommit:
    return TurnCommit(
        conversation_id=ConversationId(conversation_id),
        message_id=message_id,
        trace=make_trace(conversation_id, message_id, trace_id=trace_id, reply=reply),
        reply=None if reply is None else make_reply(conversation_id, reply),
        state=state if state is not None else {"last_intent": "order_status"},
        transitions=transitions,
        escalation=escalation,
        **extra,
    )


def run_in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Runs `work(i)` in `count` threads released together; returns the results, re-raising any error."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = work(index)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


class StoreContract:
    """Behaviour every Store adapter shares. Subclasses provide the `store` fixture (an empty store)."""

    @pytest.fixture
    def store(self) -> Store:
        raise NotImplementedError("a StoreContract subclass must provide a `store` fixture")

    # ---- ingest ------------------------------------------------------------------------------------------

    def test_ingest_stores_message_and_creates_conversation_and_customer(self, store: Store) -> None:
        received = datetime(2025, 3, 1, 13, 30, 0, 5, tzinfo=timezone(timedelta(hours=2)))
        result = store.ingest(inbound("wa-1", received_at=received))

        assert result.created
        message = result.message
        assert (message.role, message.text, message.channel) == (
            Role.CUSTOMER,
            "where is my order?",
            "webchat",
        )
        assert message.external_id == "wa-1"
        assert message.conversation_id == "conv-1"
        assert message.created_at == received and message.created_at.tzinfo == UTC
        conversation = store.get_conversation(ConversationId("conv-1"))
        assert conversation is not None
        assert (conversation.customer_id, conversation.channel) == ("cus-1", "webchat")
        assert conversation.status == ConversationStatus.BOT and conversation.state == {}
        assert store.get_customer(CustomerId("cus-1")) == Customer(id=CustomerId("cus-1"))
        assert store.list_messages(ConversationId("conv-1")) == [message]
        assert store.pending_messages(ConversationId("conv-1")) == [message]
        assert store.conversations_with_pending() == ["conv-1"]

    def test_duplicate_ingest_returns_the_stored_message_and_writes_nothing(self, store: Store) -> None:
        first = store.ingest(inbound("wa-1", text="first delivery"))
        before = store.get_conversation(ConversationId("conv-1"))
        again = store.ingest(
            inbound("wa-1", text="redelivered", customer=Customer(CustomerId("cus-1"), name="Changed"))
        )

        assert not again.created
        assert again.message == first.message
        assert store.list_messages(ConversationId("conv-1")) == [first.message]
        assert store.get_conversation(ConversationId("conv-1")) == before
        customer = store.get_customer(CustomerId("cus-1"))
        assert customer is not None and customer.name == ""

    def test_same_external_id_on_another_channel_is_another_message(self, store: Store) -> None:
        store.ingest(inbound("id-1", channel="webchat"))
        other = store.ingest(inbound("id-1", conversation="conv-2", channel="email"))

        assert other.created
        assert len(store.list_messages(ConversationId("conv-2"))) == 1

    def test_messages_keep_arrival_order(self, store: Store) -> None:
        texts = [f"message {i}" for i in range(6)]
        # Arrival order wins over the channel's timestamps.
        for i, text in enumerate(texts):
            store.ingest(inbound(f"wa-{i}", text=text, received_at=T0 - timedelta(seconds=i)))

        assert [m.text for m in store.list_messages(ConversationId("conv-1"))] == texts
        assert [m.text for m in store.pending_messages(ConversationId("conv-1"))] == texts

    def test_ingest_upserts_the_customer_it_carries(self, store: Store) -> None:
        store.upsert_customers([Customer(CustomerId("cus-1"), name="Ana", plan="pro", arr=1200.0)])
        store.ingest(inbound("wa-1"))
        kept = store.get_customer(CustomerId("cus-1"))
        assert kept is not None and kept.name == "Ana"  # a known customer is left alone

        newer = Customer(
            CustomerId("cus-1"), name="Ana B", email="ana@example.com", plan="enterprise", arr=9e4
        )
        store.ingest(inbound("wa-2", customer=newer))
        assert store.get_customer(CustomerId("cus-1")) == newer

    def test_a_closed_conversation_is_reopened_by_the_turn_that_answers_it(self, store: Store) -> None:
        message = store.ingest(inbound("wa-1")).message
        store.commit_turn(make_commit("conv-1", message.id, transitions=(Transition.CLOSE,)))
        again = store.ingest(inbound("wa-2")).message
        conversation = store.get_conversation(ConversationId("conv-1"))
        assert conversation is not None and conversation.status == ConversationStatus.CLOSED

        store.commit_turn(make_commit("conv-1", again.id, transitions=(Transition.REOPEN,)))
        conversation = store.get_conversation(ConversationId("conv-1"))
        assert conversation is not None and conversation.status == ConversationStatus.BOT
        changes = store.list_status_changes(ConversationId("conv-1"))
        assert [(c.transition, c.from_status, c.to_status, c.actor) for c in changes] == [
            (Transition.CLOSE, ConversationStatus.BOT, ConversationStatus.CLOSED, "bot"),
            (Transition.REOPEN, ConversationStatus.CLOSED, ConversationStatus.BOT, "bot"),
        ]

    # ---- pending and turns -------------------------------------------------------------------------------

    def test_pending_work_is_tracked_per_conversation(self, store: Store) -> None:
        first = store.ingest(inbound("a-1", conversation="conv-a")).message
        store.ingest(inbound("b-1", conversation="conv-b"))
        second = store.ingest(inbound("a-2", conversation="conv-a")).message
        assert set(store.conversations_with_pending()) == {"conv-a", "conv-b"}

        store.commit_turn(make_commit("conv-a", first.id))
        assert store.pending_messages(ConversationId("conv-a")) == [second]
        assert set(store.conversations_with_pending()) == {"conv-a", "conv-b"}

        store.commit_turn(make_commit("conv-a", second.id))
        assert store.pending_messages(ConversationId("conv-a")) == []
        assert store.conversations_with_pending() == ["conv-b"]

    def test_commit_turn_stores_trace_reply_outbox_and_state(self, store: Store) -> None:
        message = store.ingest(inbound("wa-1")).message
        commit = make_commit(
            "conv-1", message.id, state={"last_intent": "order_status", "slots": {"order": "A1"}}
        )
        store.commit_turn(commit)

        assert store.list_traces(ConversationId("conv-1")) == [commit.trace]
        assert commit.reply is not None
        transcript = store.list_messages(ConversationId("conv-1"))
        assert transcript == [message, commit.reply]
        [item] = store.pending_outbox()
        assert (item.conversation_id, item.message_id, item.channel) == ("conv-1", commit.reply.id, "webchat")
        assert (item.text, item.attempts) == ("It ships tomorrow.", 0)
        conversation = store.get_conversation(ConversationId("conv-1"))
        assert conversation is not None
        assert conversation.state == {"last_intent": "order_status", "slots": {"order": "A1"}}
        assert conversation.updated_at >= conversation.created_at
        assert store.pending_messages(ConversationId("conv-1")) == []
        assert store.list_escalations(status=None) == []

    def test_commit_turn_without_reply_queues_nothing(self, store: Store) -> None:
        message = store.ingest(inbound("wa-1")).message
        store.commit_turn(make_commit("conv-1", message.id, reply=None))

        assert store.pending_outbox() == []
        assert store.list_messages(ConversationId("conv-1")) == [message]
        assert len(store.list_traces()) == 1

    def test_commit_turn_twice_for_one_message_is_a_no_op(self, store: Store) -> None:
        message = store.ingest(inbound("wa-1")).message
        first = make_commit("conv-1", message.id, state={"n": 1})
        store.commit_turn(first)
        store.commit_turn(make_commit("conv-1", message.id, state={"n": 2}, escalation=make_packet("conv-1")))

        assert store.list_traces() == [first.trace]
        assert len(store.pending_outbox()) == 1
        assert len(store.list_messages(ConversationId("conv-1"))) == 2
        assert store.list_escalations(status=None) == []
        conversation = store.get_conversation(ConversationId("conv-1"))
        assert conversation is not None and conversation.state == {"n": 1}

    def test_commit_turn_is_all_or_nothing(self, store: Store) -> None:
        first = store.ingest(inbound("wa-1")).message
        store.commit_turn(make_commit("conv-1", first.id, trace_id="trc-same", state={"n": 1}))
        second = store.ingest(inbound("wa-2")).message
        clashing = make_commit(
            "conv-1",
            second.id,
            trace_id="trc-same",
            state={"n": 2},
            transitions=(Transition.ESCALATE,),
            escalation=make_packet("conv-1"),
        )

        with pytest.raises(ValueError):
            store.commit_turn(clashing)

        assert store.pending_messages(ConversationId("conv-1")) == [second]
        assert len(store.list_messages(ConversationId("conv-1"))) == 3
        assert len(store.pending_outbox()) == 1
        assert store.list_escalations(status=None) == []
        conversation = store.get_conversation(ConversationId("conv-1"))
        assert conversation is not None
        assert (conversation.state, conversation.status) == ({"n": 1}, ConversationStatus.BOT)

    def test_commit_turn_for_an_unknown_message_raises_key_error(self, store: Store) -> None:
        store.ingest(inbound("wa-1"))
        with pytest.raises(KeyError):
            store.commit_turn(make_commit("conv-1", "msg_missing"))
        assert store.list_traces() == []

    def test_traces_round_trip_exactly(self, store: Store) -> None:
        message = store.ingest(inbound("wa-1")).message
        trace = make_trace(
            "conv-1",
            message.id,
            created_at=datetime(2025, 3, 1, 8, 0, 0, 999, tzinfo=timezone(-timedelta(hours=5))),
        )
        store.commit_turn(TurnCommit(ConversationId("conv-1"), message.id, trace, None, {}))

        [stored] = store.list_traces()
        assert stored == trace
        assert stored.created_at.tzinfo == UTC
        assert all(isinstance(step.layer, Layer) for step in stored.steps)
        assert isinstance(stored.decision, Decision)
        assert stored.steps[1].output == {"intent": "order_status", "alternatives": [["refund", 0.1]]}

    def test_list_traces_filters_by_conversation_and_keeps_the_newest(self, store: Store) -> None:
        created: list[Trace] = []
        for i in range(5):
            conversation = "conv-a" if i % 2 == 0 else "conv-b"
            message = store.ingest(inbound(f"wa-{i}", conversation=conversation)).message
            trace = make_trace(conversation, message.id, created_at=T0 + timedelta(minutes=i))
            store.commit_turn(TurnCommit(trace.conversation_id, message.id, trace, None, {}))
            created.append(trace)

        assert store.list_traces() == created
        assert store.list_traces(limit=2) == created[3:]
        assert store.list_traces(ConversationId("conv-a")) == [created[0], created[2], created[4]]
        assert store.list_traces(ConversationId("conv-missing")) == []

    def test_model_usage_is_summed_per_intent_over_a_period(self, store: Store) -> None:
        def llm_step(calls: int, tokens: tuple[int, int], cost: str | None) -> TraceStep:
            output = {
                "calls": [{"model": "m"}] * calls,
                "input_tokens": tokens[0],
                "output_tokens": tokens[1],
                "cost": cost,
            }
            return TraceStep(Layer.ORCHESTRATION, LLM_STEP, {"calls": calls}, output)

        turns = [  # intent, outcome, model step, minutes after T0
            ("refund", "automated", llm_step(2, (1000, 200), "0.0012"), 0),
            ("refund", "escalated", llm_step(1, (500, 0), "0.000300"), 1),
            ("refund", "automated", None, 2),
            ("order_status", "automated", llm_step(1, (10, 5), None), 3),  # a model with no price
            ("refund", "automated", llm_step(1, (1, 1), "9"), 60),  # outside the period
        ]
        for i, (intent, outcome, step, minutes) in enumerate(turns):
            message = store.ingest(inbound(f"wa-{i}", conversation=f"conv-{i}")).message
            trace = make_trace(
                f"conv-{i}", message.id, intent=intent, created_at=T0 + timedelta(minutes=minutes)
            )
            trace = replace(trace, outcome=outcome, steps=[*trace.steps, *([step] if step else [])])
            store.commit_turn(TurnCommit(trace.conversation_id, message.id, trace, None, {}))

        refund, status = store.usage_by_intent(since=T0, until=T0 + timedelta(minutes=30))
        assert (refund.intent, refund.turns, refund.automated, refund.escalated) == ("refund", 3, 2, 1)
        assert (refund.llm_calls, refund.input_tokens, refund.output_tokens) == (3, 1500, 200)
        assert refund.cost == Decimal("0.0015") and refund.unpriced_turns == 0
        assert refund.cost_per_automated == Decimal("0.00075")
        assert (status.intent, status.llm_calls, status.cost, status.unpriced_turns) == (
            "order_status",
            1,
            None,
            1,
        )
        assert [u.turns for u in store.usage_by_intent()] == [4, 1]
        assert store.usage_by_intent(since=T0 + timedelta(days=1)) == []

    def test_state_is_stored_as_plain_json(self, store: Store) -> None:
        message = store.ingest(inbound("wa-1")).message
        store.commit_turn(
            make_commit("conv-1", message.id, state={"slots": ("a", "b"), "at": T0, "status": Decision.RETRY})
        )
        conversation = store.get_conversation(ConversationId("conv-1"))
        assert conversation is not None
        assert conversation.state == {"slots": ["a", "b"], "at": T0.isoformat(), "status": "retry"}

    # ---- outbox ------------------------------------------------------------------------------------------

    def test_outbox_lifecycle(self, store: Store) -> None:
        for i in range(3):
            message = store.ingest(inbound(f"wa-{i}", conversation=f"conv-{i}")).message
            store.commit_turn(make_commit(f"conv-{i}", message.id, reply=f"reply {i}"))
        items = store.pending_outbox()
        assert [item.text for item in items] == ["reply 0", "reply 1", "reply 2"]
        assert [item.text for item in store.pending_outbox(limit=2)] == ["reply 0", "reply 1"]
        assert all(item.status == OutboxStatus.PENDING and item.attempts == 0 for item in items)
        assert all(item.next_attempt_at == item.created_at for item in items)  # due as soon as committed

        store.mark_send_failed(items[0].id, "HTTP 503")
        store.mark_send_failed(items[0].id, "timeout")
        store.mark_sent(items[1].id)
        store.mark_sent(items[1].id)  # a second confirmation changes nothing

        later = utcnow() + timedelta(days=1)
        remaining = {item.id: (item.attempts, item.last_error) for item in store.pending_outbox(now=later)}
        assert remaining == {items[0].id: (2, "timeout"), items[2].id: (0, None)}
        after_send = store.mark_send_failed(items[1].id, "late failure report")  # already sent: stays sent
        assert (after_send.status, after_send.attempts) == (OutboxStatus.SENT, 0)
        assert items[1].id not in {item.id for item in store.pending_outbox(now=later)}

    def test_delivery_reports_move_a_reply_on_and_never_back(self, store: Store) -> None:
        message = store.ingest(inbound("wa-d", conversation="conv-d")).message
        store.commit_turn(make_commit("conv-d", message.id, reply="on its way"))
        item = store.pending_outbox()[0]
        assert store.apply_delivery_status("webchat", "wamid.1", "sent") is None  # no reply has that id yet
        store.mark_sent(item.id, "wamid.1")
        store.mark_sent(item.id, "wamid.other")  # the first provider id is kept
        # callbacks out of order: read arrives before delivered, a late "sent" after both
        for status in ("read", "delivered", "sent", "failed"):
            updated = store.apply_delivery_status("webchat", "wamid.1", status)
            assert updated is not None and updated.delivery_status == "read"
        assert store.apply_delivery_status("whatsapp", "wamid.1", "read") is None  # another channel's id

    def test_customers_are_found_by_their_phone_attribute(self, store: Store) -> None:
        store.upsert_customers(
            [
                Customer(id=CustomerId("cus-a"), name="A", attributes={"phone": "+15551230001"}),
                Customer(id=CustomerId("cus-b"), name="B", attributes={"phone": "+15551230002"}),
                Customer(id=CustomerId("cus-c"), name="C", attributes={"phone": "+15551230002"}),
                Customer(id=CustomerId("cus-d"), name="D"),
            ]
        )
        assert [c.id for c in store.customers_with_phone("+15551230001")] == ["cus-a"]
        assert sorted(c.id for c in store.customers_with_phone("+15551230002")) == ["cus-b", "cus-c"]
        assert store.customers_with_phone("+15559999999") == []
        assert store.customers_with_phone("15551230001") == []  # the stored form only

    def test_customers_are_found_by_their_email_ignoring_case(self, store: Store) -> None:
        store.upsert_customers(
            [
                Customer(id=CustomerId("cus-e"), name="E", email="Eve@Example.com"),
                Customer(id=CustomerId("cus-f"), name="F", email="twin@example.com"),
                Customer(id=CustomerId("cus-g"), name="G", email="twin@example.com"),
            ]
        )
        assert [c.id for c in store.customers_with_email("eve@example.COM")] == ["cus-e"]
        assert sorted(c.id for c in store.customers_with_email("twin@example.com")) == ["cus-f", "cus-g"]
        assert store.customers_with_email("nobody@example.com") == []

    def test_email_threads_are_found_by_any_message_id(self, store: Store) -> None:
        conversation = ConversationId("em:thread-1")
        first = EmailRecord(
            "a1@mail.test", conversation, "in", "Sam@Mail.test", True, "Refund", None, "hi\n> q"
        )
        assert store.add_email(first)
        assert not store.add_email(replace(first, conversation_id=ConversationId("em:other")))
        store.add_email(
            EmailRecord("cx.out_1@shop.test", conversation, "out", "sam@mail.test", outbox_id="out_1")
        )
        found = store.email_for(["unknown@x", "cx.out_1@shop.test", "a1@mail.test"])
        assert found is not None and found.outbox_id == "out_1" and found.direction == "out"
        assert store.email_for(["unknown@x"]) is None and store.email_for([]) is None
        thread = store.email_thread(conversation)
        assert [r.message_id for r in thread] == ["a1@mail.test", "cx.out_1@shop.test"]
        assert (
            thread[0].address == "sam@mail.test" and thread[0].verified and thread[0].full_text == "hi\n> q"
        )
        assert store.email_thread(ConversationId("em:other")) == []

    def test_a_permanent_failure_is_dead_at_once(self, store: Store) -> None:
        message = store.ingest(inbound("wa-p", conversation="conv-p")).message
        store.commit_turn(make_commit("conv-p", message.id, reply="late"))
        item = store.pending_outbox()[0]
        dead = store.mark_send_failed(item.id, "outside the 24-hour window", permanent=True)
        assert (dead.status, dead.attempts, dead.last_error) == (
            OutboxStatus.DEAD,
            1,
            "outside the 24-hour window",
        )

    def test_a_reply_keeps_its_structured_content(self, store: Store) -> None:
        message = store.ingest(inbound("wa-s", conversation="conv-s")).message
        choices = {"choices": ["Track an order", "Cancel an order"]}
        store.commit_turn(make_commit("conv-s", message.id, reply="Which one?", reply_content=choices))
        template = {"template": {"name": "order_update", "language": "en", "parameters": ["Sam"]}}
        store.add_human_reply(ConversationId("conv-s"), "Hello Sam", "ana", True, content=template)
        assert [i.content for i in store.outbox_for(ConversationId("conv-s"))] == [choices, template]

    def test_an_undelivered_reply_goes_to_a_person_once(self, store: Store) -> None:
        message = store.ingest(inbound("wa-u", conversation="conv-u")).message
        store.commit_turn(make_commit("conv-u", message.id, reply="It ships tomorrow."))
        item = store.pending_outbox()[0]
        assert store.escalate_undelivered(item.id, queue="general") is None  # still on its way
        store.mark_send_failed(item.id, "outside the 24-hour window", permanent=True)
        packet = store.escalate_undelivered(item.id, queue="general")
        assert packet is not None and packet.reason_code == "undelivered" and packet.queue == "general"
        assert packet.draft_reply == "It ships tomorrow." and "24-hour" in packet.summary
        assert [t["role"] for t in packet.transcript] == ["customer", "assistant"]
        conversation = store.get_conversation(ConversationId("conv-u"))
        assert conversation is not None and conversation.status == ConversationStatus.WAITING
        assert store.escalate_undelivered(item.id, queue="general") is None  # a person has it already
        assert [p.id for p in store.list_escalations()] == [packet.id]
        with pytest.raises(KeyError):
            store.escalate_undelivered("out_unknown", queue="general")

    def test_a_failed_item_waits_for_its_next_attempt(self, store: Store) -> None:
        message = store.ingest(inbound("wa-1")).message
        store.commit_turn(make_commit("conv-1", message.id))
        [item] = store.pending_outbox()
        policy = store.send_retry
        failed_at = utcnow()

        first = store.mark_send_failed(item.id, "HTTP 503", now=failed_at)
        assert (first.status, first.attempts, first.last_error) == (OutboxStatus.PENDING, 1, "HTTP 503")
        longest = timedelta(seconds=policy.first_delay_s)
        assert failed_at + longest * (1 - policy.jitter) <= first.next_attempt_at <= failed_at + longest
        assert store.pending_outbox(now=failed_at) == []
        assert store.pending_outbox(now=first.next_attempt_at) == [first]

        second = store.mark_send_failed(item.id, "HTTP 503", now=first.next_attempt_at)
        gap = second.next_attempt_at - first.next_attempt_at
        assert longest * 2 * (1 - policy.jitter) <= gap <= longest * 2  # the wait doubles
        assert store.pending_outbox(now=first.next_attempt_at) == []

    def test_an_item_failing_max_attempts_times_is_dead_and_can_be_requeued(self, store: Store) -> None:
        message = store.ingest(inbound("wa-1")).message
        store.commit_turn(make_commit("conv-1", message.id))
        [item] = store.pending_outbox()
        due = item.next_attempt_at
        for attempt in range(1, store.send_retry.max_attempts + 1):
            assert [i.id for i in store.pending_outbox(now=due)] == [item.id]
            failed = store.mark_send_failed(item.id, f"HTTP 400 #{attempt}", now=due)
            assert failed.attempts == attempt
            due = failed.next_attempt_at

        assert failed.status == OutboxStatus.DEAD
        far = utcnow() + timedelta(days=365)
        assert store.pending_outbox(now=far) == []
        [dead] = store.list_outbox(OutboxStatus.DEAD)
        assert (dead.id, dead.text, dead.last_error) == (item.id, item.text, f"HTTP 400 #{attempt}")
        assert store.count_outbox(OutboxStatus.DEAD) == 1 and store.count_outbox(OutboxStatus.PENDING) == 0
        again = store.mark_send_failed(item.id, "late report")  # a dead item stays as it was
        assert (again.status, again.attempts) == (OutboxStatus.DEAD, store.send_retry.max_attempts)

        requeued = store.requeue_outbox(item.id)
        assert (requeued.status, requeued.attempts) == (OutboxStatus.PENDING, 0)
        assert [i.id for i in store.pending_outbox()] == [item.id]
        assert store.list_outbox(OutboxStatus.DEAD) == [] and store.count_outbox(OutboxStatus.DEAD) == 0
        store.mark_sent(item.id)
        with pytest.raises(ValueError):
            store.requeue_outbox(item.id)
        assert [i.id for i in store.list_outbox(OutboxStatus.SENT)] == [item.id]

    def test_stuck_items_never_delay_a_new_reply(self, store: Store) -> None:
        """150 replies whose channel keeps failing, then a new one: the new one is first in the queue."""
        # One instant for the failures and the look at the queue, so the test's own speed cannot matter.
        moment = utcnow() + timedelta(hours=1)
        stuck = []
        for i in range(150):
            message = store.ingest(inbound(f"wa-{i}", conversation=f"stuck-{i % 10}")).message
            store.commit_turn(make_commit(f"stuck-{i % 10}", message.id, reply=f"stuck {i}"))
        for item in store.pending_outbox(limit=200, now=moment):
            stuck.append(store.mark_send_failed(item.id, "HTTP 503", now=moment))
        assert len(stuck) == 150 and store.pending_outbox(now=moment) == []

        message = store.ingest(inbound("wa-new", conversation="fresh")).message
        store.commit_turn(make_commit("fresh", message.id, reply="new reply"))
        assert [item.text for item in store.pending_outbox(limit=100, now=moment)] == ["new reply"]
        # Once the stuck items are due again, the new reply (due earlier) still comes first.
        everything_due = max(item.next_attempt_at for item in stuck)
        queue = store.pending_outbox(limit=100, now=everything_due)
        assert queue[0].text == "new reply" and len(queue) == 100
        assert [item.next_attempt_at for item in queue] == sorted(item.next_attempt_at for item in queue)
        assert store.count_outbox(OutboxStatus.PENDING) == 151

    def test_listing_dead_items_keeps_them_oldest_first_and_limited(self, store: Store) -> None:
        ids = []
        for i in range(3):
            message = store.ingest(inbound(f"wa-{i}", conversation=f"conv-{i}")).message
            store.commit_turn(make_commit(f"conv-{i}", message.id, reply=f"reply {i}"))
        for item in store.pending_outbox():
            ids.append(item.id)
            for _ in range(store.send_retry.max_attempts):
                store.mark_send_failed(item.id, "HTTP 410")
        assert [i.id for i in store.list_outbox(OutboxStatus.DEAD)] == ids
        assert [i.id for i in store.list_outbox(OutboxStatus.DEAD, limit=2)] == ids[:2]
        assert store.list_outbox(OutboxStatus.PENDING) == []

    def test_unknown_outbox_id_raises_key_error(self, store: Store) -> None:
        with pytest.raises(KeyError):
            store.mark_sent("out_missing")
        with pytest.raises(KeyError):
            store.mark_send_failed("out_missing", "boom")
        with pytest.raises(KeyError):
            store.requeue_outbox("out_missing")

    # ---- escalations and humans --------------------------------------------------------------------------

    def test_escalations_by_queue_status_and_priority(self, store: Store) -> None:
        packets = {}
        for name, queue, priority in [
            ("a", "billing", Priority.NORMAL),
            ("b", "billing", Priority.URGENT),
            ("c", "tech", Priority.HIGH),
        ]:
            message = store.ingest(inbound(f"wa-{name}", conversation=f"conv-{name}")).message
            packets[name] = make_packet(f"conv-{name}", queue=queue, priority=priority)
            store.commit_turn(
                make_commit(
                    f"conv-{name}", message.id, transitions=(Transition.ESCALATE,), escalation=packets[name]
                )
            )

        assert store.list_escalations(queue="billing") == [packets["b"], packets["a"]]
        assert store.list_escalations() == [packets["b"], packets["c"], packets["a"]]
        assert store.list_escalations(queue="tech", status="resolved") == []
        assert store.get_escalation(packets["c"].id) == packets["c"]
        conversation = store.get_conversation(ConversationId("conv-a"))
        assert conversation is not None and conversation.status == ConversationStatus.WAITING

    def test_human_reply_without_hand_back_keeps_the_escalation(self, store: Store) -> None:
        message = store.ingest(inbound("wa-1")).message
        packet = make_packet("conv-1")
        store.commit_turn(
            make_commit(
                "conv-1", message.id, reply=None, transitions=(Transition.ESCALATE,), escalation=packet
            )
        )
        reply = store.add_human_reply(
            ConversationId("conv-1"), "Looking into it.", "agent-7", hand_back=False
        )

        assert (reply.role, reply.author, reply.text, reply.channel) == (
            Role.HUMAN_AGENT,
            "agent-7",
            "Looking into it.",
            "webchat",
        )
        assert reply.created_at.tzinfo == UTC
        assert store.list_messages(ConversationId("conv-1")) == [message, reply]
        [item] = store.pending_outbox()
        assert (item.message_id, item.text, item.channel) == (reply.id, "Looking into it.", "webchat")
        conversation = store.get_conversation(ConversationId("conv-1"))
        assert conversation is not None and conversation.status == ConversationStatus.PERSON
        assert store.list_escalations() == [packet]

    def test_human_reply_gives_the_person_the_conversation(self, store: Store) -> None:
        message = store.ingest(inbound("wa-1")).message
        store.commit_turn(make_commit("conv-1", message.id, reply=None, transitions=(Transition.ESCALATE,)))
        store.add_human_reply(ConversationId("conv-1"), "On it.", "agent-7", hand_back=False)
        conversation = store.get_conversation(ConversationId("conv-1"))
        assert conversation is not None and conversation.status == ConversationStatus.PERSON
        changes = store.list_status_changes(ConversationId("conv-1"))
        assert [(c.transition, c.actor) for c in changes] == [
            (Transition.ESCALATE, "bot"),
            (Transition.PERSON_REPLIED, "agent:agent-7"),
        ]

    def test_human_hand_back_reopens_and_resolves_escalations(self, store: Store) -> None:
        message = store.ingest(inbound("wa-1")).message
        packet = make_packet("conv-1")
        store.commit_turn(
            make_commit(
                "conv-1", message.id, reply=None, transitions=(Transition.ESCALATE,), escalation=packet
            )
        )
        store.add_human_reply(ConversationId("conv-1"), "Refunded. Anything else?", "agent-7", hand_back=True)

        conversation = store.get_conversation(ConversationId("conv-1"))
        assert conversation is not None and conversation.status == ConversationStatus.BOT
        assert store.list_escalations() == []
        resolved = store.get_escalation(packet.id)
        assert resolved is not None and resolved.status == "resolved"
        assert store.list_escalations(status="resolved") == [resolved]

    def test_illegal_transitions_are_refused_and_change_nothing(self, store: Store) -> None:
        message = store.ingest(inbound("wa-1")).message
        store.commit_turn(make_commit("conv-1", message.id, reply=None))
        with pytest.raises(IllegalTransitionError):
            store.change_status(ConversationId("conv-1"), Transition.HAND_BACK, actor="agent:x")
        second = store.ingest(inbound("wa-2")).message
        with pytest.raises(ValueError):  # the bot cannot reopen what is not closed
            store.commit_turn(make_commit("conv-1", second.id, transitions=(Transition.REOPEN,)))
        conversation = store.get_conversation(ConversationId("conv-1"))
        assert conversation is not None and conversation.status == ConversationStatus.BOT
        assert store.pending_messages(ConversationId("conv-1")) == [second]
        assert store.list_status_changes(ConversationId("conv-1")) == []

    def test_close_resolves_open_escalations(self, store: Store) -> None:
        message = store.ingest(inbound("wa-1")).message
        packet = make_packet("conv-1")
        store.commit_turn(
            make_commit("conv-1", message.id, transitions=(Transition.ESCALATE,), escalation=packet)
        )
        closed = store.change_status(
            ConversationId("conv-1"), Transition.CLOSE, actor="agent:ana", cause="resolved by phone"
        )
        assert closed.status == ConversationStatus.CLOSED
        assert store.list_escalations() == []
        assert store.list_status_changes(ConversationId("conv-1"))[-1].cause == "resolved by phone"

    def test_followups_are_attached_to_the_open_packet(self, store: Store) -> None:
        message = store.ingest(inbound("wa-1")).message
        packet = make_packet("conv-1")
        store.commit_turn(
            make_commit("conv-1", message.id, transitions=(Transition.ESCALATE,), escalation=packet)
        )
        later = [store.ingest(inbound(f"wa-{i}", text=f"also {i}")).message for i in (2, 3)]
        store.commit_turn(
            make_commit(
                "conv-1",
                later[1].id,
                reply=None,
                message_ids=(later[0].id, later[1].id),
                attach_to_escalation=True,
            )
        )
        [stored] = store.list_escalations()
        assert [f["text"] for f in stored.followups] == ["also 2", "also 3"]
        assert store.pending_messages(ConversationId("conv-1")) == []

    def test_a_burst_is_answered_by_one_turn(self, store: Store) -> None:
        burst = [store.ingest(inbound(f"wa-{i}", text=f"part {i}")).message for i in range(3)]
        store.commit_turn(
            make_commit("conv-1", burst[-1].id, message_ids=tuple(m.id for m in burst), reply="One answer.")
        )
        assert store.pending_messages(ConversationId("conv-1")) == []
        assert store.conversations_with_pending() == []
        assert [m.text for m in store.list_messages(ConversationId("conv-1"))][-1] == "One answer."
        assert len(store.pending_outbox()) == 1

    def test_a_turn_that_read_an_old_version_is_refused(self, store: Store) -> None:
        message = store.ingest(inbound("wa-1")).message
        read = store.get_conversation(ConversationId("conv-1"))
        assert read is not None
        store.commit_turn(make_commit("conv-1", message.id, reply=None, transitions=(Transition.ESCALATE,)))
        store.add_human_reply(ConversationId("conv-1"), "Back to the bot.", "agent-1", hand_back=True)
        second = store.ingest(inbound("wa-2")).message
        stale = make_commit("conv-1", second.id, state={"old": True}, expected_version=read.version)
        with pytest.raises(StaleStateError):
            store.commit_turn(stale)
        assert store.pending_messages(ConversationId("conv-1")) == [second]
        current = store.get_conversation(ConversationId("conv-1"))
        assert current is not None and current.version > read.version
        store.commit_turn(make_commit("conv-1", second.id, expected_version=current.version))
        assert store.pending_messages(ConversationId("conv-1")) == []

    def test_one_lease_holder_at_a_time(self, store: Store) -> None:
        message = store.ingest(inbound("wa-1")).message
        cid = ConversationId("conv-1")
        assert store.claim_conversation(cid, "worker-a", ttl_seconds=30)
        assert store.claim_conversation(cid, "worker-a", ttl_seconds=30)  # renewal
        assert not store.claim_conversation(cid, "worker-b", ttl_seconds=30)
        with pytest.raises(LeaseLostError):
            store.commit_turn(make_commit("conv-1", message.id, lease_owner="worker-b"))
        assert store.pending_messages(cid) == [message]
        store.commit_turn(make_commit("conv-1", message.id, lease_owner="worker-a"))
        store.release_conversation(cid, "worker-a")
        assert store.claim_conversation(cid, "worker-b", ttl_seconds=30)

    def test_an_expired_lease_can_be_taken_over(self, store: Store) -> None:
        store.ingest(inbound("wa-1"))
        cid = ConversationId("conv-1")
        assert store.claim_conversation(cid, "dead-worker", ttl_seconds=-1)
        assert store.claim_conversation(cid, "worker-b", ttl_seconds=30)
        assert not store.claim_conversation(cid, "dead-worker", ttl_seconds=30)

    def test_concurrent_claims_give_the_lease_to_one(self, store: Store) -> None:
        store.ingest(inbound("wa-1"))
        results = run_in_threads(
            8, lambda i: store.claim_conversation(ConversationId("conv-1"), f"w{i}", ttl_seconds=30)
        )
        assert sum(results) == 1

    def test_failed_turns_back_off_and_are_counted(self, store: Store) -> None:
        message = store.ingest(inbound("wa-1")).message
        cid = ConversationId("conv-1")
        later = utcnow() + timedelta(hours=1)
        assert store.record_turn_failure(cid, [message.id], "boom", later) == 1
        assert store.conversations_with_pending() == []  # backing off
        assert (
            store.record_turn_failure(cid, [message.id], "boom again", utcnow() - timedelta(seconds=1)) == 2
        )
        assert store.conversations_with_pending() == [cid]
        store.commit_turn(make_commit("conv-1", message.id))
        assert store.conversations_with_pending() == []

    def test_the_leases_a_worker_holds_and_the_failures_a_message_carries(self, store: Store) -> None:
        first = store.ingest(inbound("wa-1")).message
        store.ingest(inbound("wa-2", conversation="conv-2"))
        store.ingest(inbound("wa-3", conversation="conv-3"))
        assert store.claim_conversation(ConversationId("conv-1"), "worker-a", ttl_seconds=30)
        assert store.claim_conversation(ConversationId("conv-3"), "worker-a", ttl_seconds=30)
        assert store.claim_conversation(ConversationId("conv-2"), "worker-b", ttl_seconds=30)
        assert store.conversations_leased_to("worker-a") == ["conv-1", "conv-3"]
        store.release_conversation(ConversationId("conv-3"), "worker-a")
        assert store.conversations_leased_to("worker-a") == ["conv-1"]
        assert store.conversations_leased_to("nobody") == []

        assert store.pending_messages(ConversationId("conv-1"))[0].turn_failures == 0
        store.record_turn_failure(ConversationId("conv-1"), [first.id], "worker died", utcnow())
        store.record_turn_failure(ConversationId("conv-1"), [first.id], "worker died", utcnow())
        [pending] = store.pending_messages(ConversationId("conv-1"))
        assert pending.id == first.id and pending.turn_failures == 2

    def test_verification_binds_the_conversation_to_the_customer(self, store: Store) -> None:
        store.upsert_customers([Customer(CustomerId("cus-real"), name="Ana")])
        message = store.ingest(inbound("wa-1", customer_id="anon-1")).message
        conversation = store.get_conversation(ConversationId("conv-1"))
        assert conversation is not None and not conversation.verified
        store.commit_turn(make_commit("conv-1", message.id, verified_customer=CustomerId("cus-real")))
        conversation = store.get_conversation(ConversationId("conv-1"))
        assert conversation is not None
        assert (conversation.customer_id, conversation.verified) == ("cus-real", True)

    def test_the_channel_decides_whether_the_customer_is_verified(self, store: Store) -> None:
        store.ingest(inbound("wa-1", conversation="conv-anon"))
        store.ingest(replace(inbound("wa-2", conversation="conv-known"), verified=True))
        anon = store.get_conversation(ConversationId("conv-anon"))
        known = store.get_conversation(ConversationId("conv-known"))
        assert anon is not None and known is not None
        assert (anon.verified, known.verified) == (False, True)

    def test_human_reply_to_unknown_conversation_raises_key_error(self, store: Store) -> None:
        with pytest.raises(KeyError):
            store.add_human_reply(ConversationId("conv-missing"), "hello", "agent-7", hand_back=False)

    # ---- customers, workspace versions, listings ---------------------------------------------------------

    def test_upsert_customers_inserts_and_updates(self, store: Store) -> None:
        ana = Customer(CustomerId("cus-1"), name="Ana", plan="pro", arr=1200.5, attributes={"tags": ["vip"]})
        bo = Customer(CustomerId("cus-2"), name="Bo", segment="smb")
        assert store.upsert_customers([ana, bo]) == 2
        changed = Customer(CustomerId("cus-1"), name="Ana", plan="enterprise", arr=50000.0)
        assert store.upsert_customers([changed]) == 1

        assert store.get_customer(CustomerId("cus-1")) == changed
        assert store.get_customer(CustomerId("cus-2")) == bo

    def test_list_customers_by_name_with_a_search(self, store: Store) -> None:
        store.upsert_customers(
            [
                Customer(CustomerId("cus-2"), name="Bo", email="bo@shop.test", plan="basic"),
                Customer(CustomerId("cus-1"), name="Ana", email="ana@corp.test", plan="Enterprise"),
                Customer(CustomerId("cus-3"), name="Cy", plan="pro"),
            ]
        )
        assert [c.id for c in store.list_customers()] == ["cus-1", "cus-2", "cus-3"]
        assert [c.id for c in store.list_customers("ENTER")] == ["cus-1"]
        assert [c.id for c in store.list_customers("shop.test")] == ["cus-2"]
        assert [c.id for c in store.list_customers(limit=2)] == ["cus-1", "cus-2"]
        assert store.list_customers("nobody") == []

    def test_workspace_versions_are_stored_once_by_hash(self, store: Store) -> None:
        content = {"intents": [{"name": "refund", "examples": ["money back"]}], "threshold": 0.7}
        assert store.save_workspace_version(WorkspaceVersionId("sha-1"), "demo", content)
        assert not store.save_workspace_version(WorkspaceVersionId("sha-1"), "demo", {"other": True})
        assert store.get_workspace_version(WorkspaceVersionId("sha-1")) == content

    def test_workspace_versions_are_listed_newest_first_without_content(self, store: Store) -> None:
        for name in ["v1", "v2", "v3"]:
            store.save_workspace_version(WorkspaceVersionId(f"ws_{name}"), "shop", {"n": name})
        listed = store.list_workspace_versions()
        assert [v.id for v in listed] == ["ws_v3", "ws_v2", "ws_v1"]
        assert {v.name for v in listed} == {"shop"}
        assert [v.id for v in store.list_workspace_versions(limit=1)] == ["ws_v3"]

    def test_conversations_started_in_a_window_oldest_first(self, store: Store) -> None:
        for name in ["a", "b", "c"]:
            store.ingest(inbound(f"wa-{name}", conversation=f"conv-{name}"))
        store.ingest(inbound("wa-a2", conversation="conv-a"))  # a later message does not move conv-a
        started = {str(c.id): c.created_at for c in store.list_conversations()}

        window = store.conversations_started_between
        assert [c.id for c in window(started["conv-a"])] == ["conv-a", "conv-b", "conv-c"]
        assert [c.id for c in window(started["conv-b"])] == ["conv-b", "conv-c"]
        assert [c.id for c in window(started["conv-a"], started["conv-c"])] == ["conv-a", "conv-b"]
        assert [c.id for c in window(started["conv-a"], limit=1)] == ["conv-a"]
        assert window(started["conv-c"] + timedelta(seconds=1)) == []

    def test_list_conversations_most_recently_updated_first(self, store: Store) -> None:
        for name in ["a", "b", "c"]:
            store.ingest(inbound(f"wa-{name}", conversation=f"conv-{name}"))
        store.ingest(inbound("wa-a2", conversation="conv-a"))

        assert [c.id for c in store.list_conversations()] == ["conv-a", "conv-c", "conv-b"]
        assert [c.id for c in store.list_conversations(limit=2)] == ["conv-a", "conv-c"]

    def test_unknown_ids_read_as_none_or_empty(self, store: Store) -> None:
        assert store.get_conversation(ConversationId("nope")) is None
        assert store.get_customer(CustomerId("nope")) is None
        assert store.get_escalation(EscalationId("nope")) is None
        assert store.get_workspace_version(WorkspaceVersionId("nope")) is None
        assert store.list_messages(ConversationId("nope")) == []
        assert store.pending_messages(ConversationId("nope")) == []
        assert store.list_conversations() == []
        assert store.conversations_with_pending() == []
        assert store.pending_outbox() == []

    def test_nul_characters_are_dropped(self, store: Store) -> None:
        # PostgreSQL refuses NUL in text; every adapter drops it so that none of them accepts more.
        message = store.ingest(inbound("wa-1", text="hel\x00lo")).message
        assert message.text == "hello"
        assert store.list_messages(ConversationId("conv-1"))[0].text == "hello"

    # ---- API keys ----------------------------------------------------------------------------------------

    def test_api_keys_round_trip_oldest_first(self, store: Store) -> None:
        admin = ApiKey(
            "k1abcdef", "ops laptop", ApiRole.ADMIN, "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA", T0
        )
        widget = ApiKey(
            "k2abcdef",
            "shop widget",
            ApiRole.INTEGRATION,
            "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$b3RoZXI",
            T0 + timedelta(seconds=1),
            channel="webchat",
        )
        store.add_api_key(widget)
        store.add_api_key(admin)

        assert store.get_api_key("k1abcdef") == admin
        assert store.get_api_key("k2abcdef") == widget
        assert store.list_api_keys() == [admin, widget]
        assert store.get_api_key("nope") is None

    def test_api_key_ids_are_unique(self, store: Store) -> None:
        key = ApiKey("k1abcdef", "first", ApiRole.VIEWER, "hash-1", T0)
        store.add_api_key(key)
        with pytest.raises(ValueError):
            store.add_api_key(ApiKey("k1abcdef", "second", ApiRole.ADMIN, "hash-2", T0))
        assert store.list_api_keys() == [key]

    def test_revoking_a_key_keeps_it_listed_with_its_first_revoke_time(self, store: Store) -> None:
        store.add_api_key(ApiKey("k1abcdef", "old", ApiRole.AGENT, "hash-1", T0))
        revoked = store.revoke_api_key("k1abcdef", T0 + timedelta(hours=1))
        assert revoked.revoked_at == T0 + timedelta(hours=1) and not revoked.active
        again = store.revoke_api_key("k1abcdef", T0 + timedelta(hours=2))
        assert again.revoked_at == T0 + timedelta(hours=1)
        assert store.get_api_key("k1abcdef") == revoked
        with pytest.raises(KeyError):
            store.revoke_api_key("missing", T0)

    # ---- knowledge fact versions -------------------------------------------------------------------------

    def test_fact_versions_are_numbered_per_fact_and_listed_oldest_first(self, store: Store) -> None:
        first = FactVersion("returns", 1, {"id": "returns", "text": "30 days"}, "files", "seen", "files", T0)
        second = FactVersion(
            "returns", 2, {"id": "returns", "text": "45 days"}, "ana", "longer window", "api", T0
        )
        other = FactVersion("gift-wrap", 1, {"id": "gift-wrap", "text": "free"}, "files", "seen", "files", T0)
        store.add_fact_version(first)
        store.add_fact_version(other)
        store.add_fact_version(second)
        assert store.fact_versions("returns") == [first, second]
        assert store.latest_fact_versions() == {"returns": second, "gift-wrap": other}
        assert store.fact_versions("nope") == []

    def test_a_taken_fact_version_number_is_a_conflict_naming_the_newer_version(self, store: Store) -> None:
        store.add_fact_version(FactVersion("returns", 1, {"text": "30 days"}, "files", "seen", "files", T0))
        mine = FactVersion("returns", 2, {"text": "45 days"}, "ana", "mine", "api", T0)
        theirs = FactVersion("returns", 2, {"text": "60 days"}, "bo", "theirs", "api", T0)
        store.add_fact_version(mine)
        with pytest.raises(FactVersionConflictError) as conflict:
            store.add_fact_version(theirs)
        assert conflict.value.latest == mine and "version 2 by ana" in str(conflict.value)
        with pytest.raises(FactVersionConflictError):  # skipping a number is not allowed either
            store.add_fact_version(FactVersion("returns", 5, None, "bo", "gap", "api", T0))
        kept = [v.content for v in store.fact_versions("returns")]
        assert kept == [{"text": "30 days"}, {"text": "45 days"}]

    def test_a_removed_fact_is_a_version_without_content(self, store: Store) -> None:
        store.add_fact_version(FactVersion("old", 1, {"text": "x"}, "files", "seen", "files", T0))
        store.add_fact_version(FactVersion("old", 2, None, "files", "removed", "files", T0))
        assert store.latest_fact_versions()["old"].content is None

    # ---- concurrency -------------------------------------------------------------------------------------

    def test_ingest_many_stores_a_batch_in_order_and_answers_each(self, store: Store) -> None:
        store.ingest(inbound("wa-0", text="stored before"))
        profile = Customer(CustomerId("cus-9"), name="Nia", plan="pro")
        batch = [
            inbound("wa-1", text="one"),
            inbound("wa-0", text="a redelivery"),
            inbound("wa-2", text="two"),
            inbound("wa-1", text="the same message twice in one batch"),
            inbound(
                "wa-3", conversation="conv-2", customer_id="cus-9", customer=profile, text="with profile"
            ),
            inbound("wa-4", text="three"),
        ]
        outcomes = store.ingest_many(batch)

        assert [isinstance(o, IngestResult) and o.created for o in outcomes] == [
            True,
            False,
            True,
            False,
            True,
            True,
        ]
        results = [o for o in outcomes if isinstance(o, IngestResult)]
        assert results[3].message.id == results[0].message.id
        texts = [m.text for m in store.list_messages(ConversationId("conv-1"))]
        assert texts == ["stored before", "one", "two", "three"]
        assert [m.text for m in store.pending_messages(ConversationId("conv-1"))] == texts
        customer = store.get_customer(CustomerId("cus-9"))
        assert customer is not None and customer.plan == "pro"
        assert store.ingest_many([]) == []

    def test_concurrent_duplicate_deliveries_store_one_message(self, store: Store) -> None:
        results = run_in_threads(8, lambda i: store.ingest(inbound("wa-dup", text=f"copy {i}")))

        assert sum(result.created for result in results) == 1
        assert len({result.message.id for result in results}) == 1
        assert len(store.list_messages(ConversationId("conv-1"))) == 1
        assert len(store.pending_messages(ConversationId("conv-1"))) == 1

    def test_concurrent_messages_to_one_new_conversation_are_all_stored(self, store: Store) -> None:
        results = run_in_threads(8, lambda i: store.ingest(inbound(f"wa-{i}", text=f"message {i}")))

        assert all(result.created for result in results)
        stored = store.list_messages(ConversationId("conv-1"))
        assert sorted(m.id for m in stored) == sorted(result.message.id for result in results)
        assert len(store.pending_messages(ConversationId("conv-1"))) == 8
        assert store.conversations_with_pending() == ["conv-1"]
