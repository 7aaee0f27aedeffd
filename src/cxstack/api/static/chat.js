/* Web chat. A customer (no key) talks through an anonymous web-chat session and sees only the conversation.
   With a staff key (#key=… or the desk's log-in) the page adds the demo affordances its key allows: an admin key
   picks the customer (an identified session minted with the key) and every role that reads conversations sees
   the decisions panel (each turn's trace). */
"use strict";

(() => {
  const { el } = cx;
  const $ = (id) => document.getElementById(id);
  const SESSION = "cx.session";
  const state = { me: null, session: null, conversationId: null, customers: [], messageCount: 0, pollToken: 0, sending: false };
  // ?live=0 turns off long-polling (static snapshots, headless screenshots that wait for the network to settle).
  const live = new URLSearchParams(location.search).get("live") !== "0";
  const can = (scope) => Boolean(state.me && state.me.scopes.includes(scope));
  const staff = () => can("conversations:read");
  const identifies = () => can("webchat:identify") && can("customers:read");

  // --- customers (admin: the picker mints a session for the chosen customer) -----------------------------

  async function loadCustomers() {
    const select = $("customer-select");
    try {
      state.customers = await cx.api("/v1/customers?limit=200", { token: cx.staffKey() });
    } catch (_) {
      state.customers = [];
    }
    const groups = new Map();
    for (const c of state.customers) {
      const key = c.segment || "other";
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(c);
    }
    select.replaceChildren();
    for (const [segment, members] of groups) {
      select.append(el("optgroup", { label: segment },
        members.map((c) => el("option", { value: c.id }, `${c.name || c.id} — ${c.plan || "no plan"} · ${cx.money(c.arr)}`))));
    }
    select.append(el("optgroup", { label: "other" }, el("option", { value: "__custom" }, "Custom customer…")));
    const remembered = localStorage.getItem("cx.customer");
    if (remembered && [...select.options].some((o) => o.value === remembered)) select.value = remembered;
    $("custom-customer").hidden = select.value !== "__custom";
  }

  function onCustomerChange() {
    const value = $("customer-select").value;
    localStorage.setItem("cx.customer", value);
    $("custom-customer").hidden = value !== "__custom";
    newConversation();  // a session belongs to one customer
  }

  function pickCustomer(customerId) {
    const select = $("customer-select");
    if (state.customers.some((c) => c.id === customerId)) select.value = customerId;
    $("custom-customer").hidden = select.value !== "__custom";
  }

  async function chosenCustomerId() {
    // A custom profile is stored first (an admin key may set plan and ARR), then chatted as.
    const value = $("customer-select").value;
    if (value && value !== "__custom") return value;
    const id = $("cust-id").value.trim() || "cus_web";
    await cx.api(`/v1/customers/${encodeURIComponent(id)}`, {
      method: "PUT", token: cx.staffKey(),
      json: { name: id, plan: $("cust-plan").value.trim(), arr: Number($("cust-arr").value) || 0, segment: $("cust-segment").value.trim() },
    });
    return id;
  }

  // --- sessions ---------------------------------------------------------------------------------------------

  function keepSession(session) {
    state.session = session;
    sessionStorage.setItem(SESSION, JSON.stringify(session));
  }

  async function startSession(body) {
    const session = body
      ? await cx.api("/v1/webchat/sessions", { json: body, token: cx.staffKey() })
      : await cx.api("/v1/webchat/sessions", { json: {} });
    keepSession(session);
    return session;
  }

  function storedSession() {
    try {
      const session = JSON.parse(sessionStorage.getItem(SESSION) || "null");
      return session && new Date(session.expires_at).getTime() > Date.now() + 5000 ? session : null;
    } catch (_) { return null; }
  }

  async function refreshSession() {
    if (!state.session) return;
    const left = new Date(state.session.expires_at).getTime() - Date.now();
    if (left > 10 * 60 * 1000) return;
    try {
      keepSession(await cx.api("/v1/webchat/sessions/refresh", { method: "POST", token: state.session.token }));
    } catch (_) { /* an expired session is replaced on the next send */ }
  }

  async function sessionCall(path, options = {}) {
    // A session that expired while the page sat idle: say so, and carry on in a new conversation.
    try {
      return await cx.api(path, { ...options, token: state.session.token });
    } catch (error) {
      if (error.status !== 401) throw error;
      await newConversation();
      showError(new Error("Your chat session expired, so a new conversation was started."));
      throw error;
    }
  }

  // --- conversations ----------------------------------------------------------------------------------------

  function setConversation(id) {
    state.conversationId = id;
    state.messageCount = 0;
    state.pollToken += 1;
    $("conversation-id").textContent = id;
    if (staff()) history.replaceState(null, "", `#${encodeURIComponent(id)}`);
  }

  function clearView() {
    $("conversation-status").textContent = "new";
    $("conversation-status").className = "status-pill";
    $("messages").replaceChildren(emptyChat());
    $("turns").replaceChildren(el("div", { class: "empty" }, "No turns yet. Each customer message becomes one traced turn."));
    $("composer").hidden = false;
    $("read-only")?.remove();
  }

  async function newConversation() {
    clearView();
    try {
      const session = identifies() ? await startSession({ customer_id: await chosenCustomerId() }) : await startSession(null);
      setConversation(session.conversation_id);
      poll(state.pollToken);
    } catch (error) {
      showError(error);
    }
    $("message-text").focus();
  }

  function emptyChat() {
    return el("div", { class: "empty" },
      el("p", {}, identifies() ? "Pick a customer and write as they would." : "How can we help?"),
      staff() ? el("p", { class: "hint" }, "Every reply is produced by the workspace's layers; the panel on the right shows which layer decided what.") : null);
  }

  async function openConversation(id) {
    // Staff only: read the conversation with the key; continuing it as its customer needs an admin key.
    try {
      const conversation = await cx.api(`/v1/conversations/${encodeURIComponent(id)}`, { token: cx.staffKey() });
      clearView();
      if (identifies()) {
        pickCustomer(conversation.customer_id);
        await startSession({ customer_id: conversation.customer_id, conversation_id: id });
      } else {
        state.session = null;
        $("composer").hidden = true;
        $("composer").after(el("div", { class: "read-only-note", id: "read-only" },
          "Read only: an admin key can continue this conversation as its customer."));
      }
      setConversation(id);
      render(conversation);
      poll(state.pollToken);
    } catch (error) {
      if (error.status === 404) newConversation(); else showError(error);
    }
  }

  async function loadRecent() {
    const select = $("recent-select");
    try {
      const recent = await cx.api("/v1/conversations?limit=25", { token: cx.staffKey() });
      select.replaceChildren(el("option", { value: "" }, "Open recent…"),
        ...recent.map((c) => el("option", { value: c.id }, `${c.id} · ${c.customer_id} · ${c.status}`)));
    } catch (_) { /* the list is a convenience */ }
  }

  async function refreshView(flashMessageId) {
    if (staff()) {
      try {
        const conversation = await cx.api(`/v1/conversations/${encodeURIComponent(state.conversationId)}`, { token: cx.staffKey() });
        const trace = conversation.traces.find((t) => t.message_id === flashMessageId);
        render(conversation, trace && trace.id);
      } catch (error) {
        if (error.status !== 404) throw error;  // no message yet
      }
      return;
    }
    const events = await sessionCall("/v1/webchat/messages?timeout=0");
    render({ messages: events.messages, traces: [], status: null, facts: {} });
  }

  async function poll(token) {
    // Long-poll for news a person (escalation desk) or a late turn adds to this conversation.
    while (live && token === state.pollToken) {
      try {
        const id = encodeURIComponent(state.conversationId);
        if (staff()) {
          const events = await cx.api(`/v1/conversations/${id}/events?after=${state.messageCount}&timeout=25`, { token: cx.staffKey() });
          if (token !== state.pollToken) return;
          if (events.changed && !state.sending) render(events.conversation);
        } else {
          const events = await sessionCall(`/v1/webchat/messages?after=${state.messageCount}&timeout=25`);
          if (token !== state.pollToken) return;
          if (events.changed && !state.sending) render({ messages: events.messages, traces: [], status: null, facts: {} });
        }
      } catch (error) {
        if (token !== state.pollToken || error.status === 404) return;  // not created yet: the first send restarts polling
        await new Promise((r) => setTimeout(r, 3000));
      }
    }
  }

  async function send(text) {
    if (state.sending || !state.session) return;
    state.sending = true;
    $("send").disabled = true;
    clearError();
    const messages = $("messages");
    messages.querySelector(".empty")?.remove();
    messages.append(el("div", { class: "msg customer pending" }, el("div", { class: "bubble" }, text)));
    const typing = el("div", { class: "typing" }, "assistant is working");
    messages.append(typing);
    messages.scrollTop = messages.scrollHeight;
    const wasNew = state.messageCount === 0;
    try {
      const accepted = await sessionCall("/v1/webchat/messages?wait=true", { json: { text, external_id: cx.uid("web_") } });
      await refreshView(accepted.message_id);
      if (wasNew && staff()) { state.pollToken += 1; poll(state.pollToken); loadRecent(); }
    } catch (error) {
      typing.remove();
      if (error.status !== 401) showError(error);
    } finally {
      state.sending = false;
      $("send").disabled = false;
      $("message-text").focus();
    }
  }

  function showError(error) {
    clearError();
    const banner = el("div", { class: "error-banner", id: "error-banner" }, String(error.message || error));
    $("composer").before(banner);
  }
  function clearError() { $("error-banner")?.remove(); }

  // --- rendering ------------------------------------------------------------------------------------------

  function render(conversation, flashTraceId) {
    state.messageCount = conversation.messages.length;
    const pill = $("conversation-status");
    pill.textContent = conversation.status || "";
    pill.className = `status-pill ${conversation.status || ""}`;
    const traceByMessage = new Map(conversation.traces.map((t, i) => [t.message_id, { trace: t, n: i + 1 }]));
    renderMessages(conversation, traceByMessage);
    renderTurns(conversation, flashTraceId);
  }

  function renderMessages(conversation, traceByMessage) {
    const box = $("messages");
    box.replaceChildren();
    if (!conversation.messages.length) { box.append(emptyChat()); return; }
    let turn = null;
    for (const m of conversation.messages) {
      const meta = el("div", { class: "meta" }, cx.time(m.created_at));
      if (m.role === "customer") {
        turn = traceByMessage.get(m.id) || null;
        if (!turn) meta.append(el("span", {}, "pending"));
        else if (turn.trace.outcome === "handled_by_human") meta.append(turnLink(turn, `turn #${turn.n}`), "· waiting for a person");
        else meta.append(turnLink(turn, `turn #${turn.n}`));
      } else if (m.role === "assistant" && turn) {
        const t = turn.trace;
        meta.append(turnLink(turn, [t.intent || "no intent", t.mechanism ? ` · ${t.mechanism}` : ""].join("")),
          el("span", { class: `badge d-${t.decision}` }, t.decision));
      } else if (m.role === "human_agent") {
        meta.append(el("span", {}, `${m.author || "agent"} (person)`));
      }
      box.append(el("div", { class: `msg ${m.role}` }, el("div", { class: "bubble" }, m.text), meta));
    }
    box.scrollTop = box.scrollHeight;
  }

  function turnLink(turn, label) {
    return el("a", { class: "turn-link", href: `#turn-${turn.trace.id}`, title: "show this turn's decisions",
      onclick: (event) => { event.preventDefault(); flash(turn.trace.id); } }, label);
  }

  function flash(traceId) {
    const card = document.getElementById(`turn-${traceId}`);
    if (!card) return;
    card.scrollIntoView({ behavior: "smooth", block: "nearest" });
    card.classList.remove("flash");
    void card.offsetWidth;
    card.classList.add("flash");
  }

  function renderTurns(conversation, flashTraceId) {
    const box = $("turns");
    box.replaceChildren();
    if (!conversation.traces.length) {
      box.append(el("div", { class: "empty" }, "No turns yet. Each customer message becomes one traced turn."));
      return;
    }
    const textById = new Map(conversation.messages.map((m) => [m.id, m.text]));
    conversation.traces.forEach((trace, i) => box.append(turnCard(trace, i + 1, textById.get(trace.message_id), conversation.facts)));
    box.scrollTop = box.scrollHeight;
    if (flashTraceId) flash(flashTraceId);
  }

  function turnCard(trace, n, customerText, facts) {
    const body = el("div", { class: "turn-body" });
    for (const step of trace.steps) {
      const [layer, label] = [step.layer, stepLabel(step)];
      body.append(el("div", { class: "k" }, el("span", { class: `layer-tag l-${layer}` }, layer),
        el("div", { class: "sub" }, label)));
      body.append(el("div", { class: "v" }, stepView(step, facts)));
    }
    if (trace.reason_code) {
      body.append(el("div", { class: "k" }, el("span", { class: "sub" }, "reason")),
        el("div", { class: "v" }, el("b", {}, trace.reason_code), el("span", { class: "sub" }, ` — ${trace.reason || ""}`)));
    }
    body.append(el("div", { class: "timing" },
      trace.steps.map((s) => el("span", {}, `${stepLabel(s)} `, el("span", { class: "num" }, cx.ms(s.duration_ms)))),
      el("span", {}, "total ", el("b", { class: "num" }, cx.ms(trace.duration_ms))),
      el("span", { title: trace.workspace_version }, "workspace ", el("code", {}, trace.workspace_version.slice(0, 10))),
      trace.variant ? el("span", {}, "variant ", el("code", {}, trace.variant)) : null));
    return el("article", { class: "turn", id: `turn-${trace.id}` },
      el("div", { class: "turn-head" },
        el("span", { class: "n" }, `#${n}`),
        el("span", { class: "q", title: customerText || "" }, customerText ? `“${customerText}”` : trace.message_id),
        el("span", { class: `badge d-${trace.decision}` }, trace.decision),
        el("span", { class: "sub" }, trace.outcome),
        el("span", { class: "t" }, cx.ms(trace.duration_ms))),
      body);
  }

  function stepLabel(step) {
    if (step.name === "route") return "route";
    if (step.name === "assess") return "assess";
    if (step.name.startsWith("resolve:")) return step.name.replace(":", " · ");
    return step.name;
  }

  const kv = (key, value) => (value === null || value === undefined || value === "" || value === false)
    ? null : el("span", { class: "kv" }, `${key} `, el("b", {}, value === true ? "yes" : String(value)), "  ");

  function stepView(step, facts) {
    const o = step.output || {};
    if (step.name === "route") {
      const alts = (o.alternatives || []).map(([intent, p]) => el("span", {}, intent, cx.bar(p, true), cx.pct(p)));
      return [
        el("div", {}, el("b", {}, o.intent || "out of scope"), cx.bar(o.confidence), el("span", { class: "num" }, cx.pct(o.confidence)),
          el("span", { class: "sub" }, `  decided by ${o.decided_by || "router"}`),
          o.router_intent && o.router_intent !== o.intent ? el("span", { class: "sub" }, ` (router said ${o.router_intent})`) : null,
          o.out_of_scope ? el("span", { class: "chip" }, "out of scope") : null),
        alts.length ? el("div", { class: "alts" }, "alternatives:", alts) : null,
      ];
    }
    if (step.name === "assess") {
      return [
        el("div", {}, kv("tier", o.tier), kv("priority", o.priority), kv("value", o.value === null || o.value === undefined ? null : Number(o.value).toLocaleString("en-US")),
          kv("queue", o.queue), kv("cap", o.cap_amount), kv("force human", o.force_human),
          kv("confirm", o.require_confirmation)),
        o.tone ? el("div", { class: "sub" }, `tone: ${o.tone}`) : null,
        el("div", {}, (o.fired_rules || []).length
          ? ["rules fired: ", o.fired_rules.map((r) => el("span", { class: "chip rule" }, r))]
          : el("span", { class: "sub" }, "no policy rule fired")),
      ];
    }
    if (step.name === "plan") {
      return [
        el("div", {}, kv("mechanism", o.mechanism), kv("queue", o.queue), kv("priority", o.priority),
          kv("action", o.action), kv("fallback", o.fallback), kv("cap", o.cap_amount)),
        o.reason ? el("div", { class: "sub" }, o.reason) : null,
      ];
    }
    if (step.name.startsWith("resolve:")) {
      const factItems = (o.facts || []).map((f) => el("li", { title: facts[f.id] || "" },
        el("code", {}, f.id), cx.bar(f.score, true), el("span", { class: "num" }, f.score.toFixed(2)),
        facts[f.id] ? el("span", { class: "ftext" }, facts[f.id]) : null));
      const actions = (o.actions || []).map((a) => el("div", {},
        el("span", { class: a.ok ? "ok" : "fail" }, a.ok ? "✓ " : "✗ "), el("code", {}, a.action),
        el("span", { class: "sub" }, `  status ${a.status ?? "–"} · ${a.attempts} attempt${a.attempts === 1 ? "" : "s"}`),
        a.error ? el("span", { class: "errtext" }, `  ${a.error}`) : null));
      return [
        el("div", {}, kv("outcome", o.kind), el("span", { class: "kv" }, "confidence "), cx.bar(o.confidence),
          el("span", { class: "num" }, cx.pct(o.confidence)), o.handoff_reason ? el("span", { class: "sub" }, `  handoff: ${o.handoff_reason}`) : null),
        factItems.length ? el("ul", { class: "facts" }, factItems) : (step.layer === "knowledge" ? el("div", { class: "sub" }, "no fact cited") : null),
        actions,
        o.detail && o.detail.error ? el("div", { class: "errtext" }, o.detail.error) : null,
      ];
    }
    if (step.name === "decide") {
      return el("div", {}, el("span", { class: `badge d-${o.decision}` }, o.decision || "?"),
        el("span", { class: "sub" }, `  ${o.reason || ""}`),
        step.input && step.input.options ? el("span", { class: "sub" }, `  between ${step.input.options.join(" / ")}`) : null);
    }
    if (step.name === "escalate") {
      return el("div", {}, kv("queue", o.queue), el("span", { class: `badge p-${o.priority}` }, o.priority),
        el("span", { class: "sub" }, "  "), el("code", {}, o.escalation_id || ""));
    }
    return el("pre", { class: "json" }, JSON.stringify(o, null, 1));
  }

  // --- wiring ---------------------------------------------------------------------------------------------

  $("customer-select").addEventListener("change", onCustomerChange);
  $("new-conversation").addEventListener("click", newConversation);
  $("recent-select").addEventListener("change", (event) => {
    if (event.target.value) openConversation(event.target.value);
    event.target.value = "";
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const box = $("message-text");
    const text = box.value.trim();
    if (!text) return;
    box.value = "";
    send(text);
  });
  $("message-text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("composer").requestSubmit(); }
  });
  setInterval(refreshSession, 60000);

  (async () => {
    state.me = await cx.whoAmI();
    cx.showWho(state.me);
    document.body.classList.toggle("staff", staff());
    document.body.classList.toggle("customer-view", !staff());
    document.body.classList.toggle("can-identify", identifies());
    if (identifies()) await loadCustomers();
    if (staff()) loadRecent();
    const fromHash = decodeURIComponent(location.hash.slice(1));
    const resumed = storedSession();
    if (staff() && fromHash) {
      await openConversation(fromHash);
    } else if (resumed && (!identifies() || resumed.verified)) {
      // A reload keeps the conversation: the session is in this tab's storage.
      state.session = resumed;
      setConversation(resumed.conversation_id);
      if (identifies()) pickCustomer(resumed.customer_id);
      clearView();
      await refreshView().catch(showError);
      poll(state.pollToken);
    } else {
      await newConversation();
    }
  })();
})();
