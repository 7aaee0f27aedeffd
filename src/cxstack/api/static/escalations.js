/* Escalation desk: open packets per queue, most urgent first, with a reply form (reply + hand back).
   It needs a staff key (agent or admin): from the #key=… link `make run` prints, or the log-in form. */
"use strict";

(() => {
  const { el } = cx;
  const $ = (id) => document.getElementById(id);
  const state = { queue: new URLSearchParams(location.search).get("queue") || "" };

  async function loadQueues() {
    let workspace = null;
    try { workspace = await cx.api("/v1/workspace", { token: cx.staffKey() }); } catch (error) { refused(error); return; }
    const tabs = $("queue-tabs");
    const total = workspace.queues.reduce((sum, q) => sum + q.open, 0);
    const tab = (name, label, count) => el("button", {
      type: "button", role: "tab", class: state.queue === name ? "active" : "", title: name ? `queue ${name}` : "every queue",
      onclick: () => { state.queue = name; loadQueues(); loadPackets(); },
    }, label, el("span", { class: "count" }, count));
    tabs.replaceChildren(tab("", "All queues", total),
      ...workspace.queues.map((q) => tab(q.name, q.name.replaceAll("_", " "), q.open)));
  }

  async function loadPackets() {
    const box = $("packets");
    const params = new URLSearchParams({ status: $("status-select").value });
    if (state.queue) params.set("queue", state.queue);
    history.replaceState(null, "", state.queue ? `?queue=${encodeURIComponent(state.queue)}` : location.pathname);
    try {
      const packets = await cx.api(`/v1/escalations?${params}`, { token: cx.staffKey() });
      box.replaceChildren(...(packets.length ? packets.map(packetCard)
        : [el("div", { class: "empty" }, "Nothing waiting here. 🎉")]));
    } catch (error) {
      if (refused(error)) return;
      box.replaceChildren(el("div", { class: "error-banner" }, String(error.message || error)));
    }
  }

  function packetCard(p) {
    const who = p.customer.name || p.customer.id || "customer";
    const facts = p.facts_used.map((f) => el("div", { title: f.text }, el("code", {}, f.fact_id), ` ${f.score.toFixed(2)}`));
    const actions = p.actions_tried.map((a) => el("div", {},
      el("span", { class: a.ok ? "ok" : "fail" }, a.ok ? "✓ " : "✗ "), el("code", {}, a.action),
      ` status ${a.status_code ?? "–"}, ${a.attempts} attempt(s)`, a.error ? el("span", { class: "errtext" }, ` ${a.error}`) : null));
    return el("article", { class: "packet" },
      el("div", { class: "packet-head" },
        el("span", { class: `badge p-${p.priority}` }, p.priority),
        el("span", { class: "who" }, who),
        el("span", { class: "chip" }, p.queue),
        el("span", { class: "sub" }, p.reason),
        p.status !== "open" ? el("span", { class: "status-pill" }, p.status) : null,
        el("span", { class: "age", title: p.created_at }, cx.ago(p.created_at))),
      el("div", {},
        el("p", { class: "summary" }, p.summary),
        el("dl", {},
          el("dt", {}, "Customer"), el("dd", {}, `${p.customer.id || ""} · ${p.customer.plan || "no plan"} · ARR ${cx.money(p.customer.arr)}`),
          el("dt", {}, "Intent"), el("dd", {}, p.intent || "unrecognised", p.intent_confidence !== null ? [cx.bar(p.intent_confidence, true), cx.pct(p.intent_confidence)] : null),
          el("dt", {}, "Reason code"), el("dd", {}, el("code", {}, p.reason_code)),
          p.fired_rules.length ? [el("dt", {}, "Rules fired"), el("dd", {}, p.fired_rules.map((r) => el("span", { class: "chip rule" }, r)))] : null,
          facts.length ? [el("dt", {}, "Facts used"), el("dd", {}, facts)] : null,
          actions.length ? [el("dt", {}, "Actions tried"), el("dd", {}, actions)] : null,
          el("dt", {}, "Conversation"), el("dd", {}, el("a", { href: `/#${encodeURIComponent(p.conversation_id)}` }, p.conversation_id))),
        el("details", {}, el("summary", {}, `Transcript (${p.transcript.length} messages)`),
          el("ul", { class: "transcript" }, p.transcript.map((m) => el("li", {}, el("span", { class: "role" }, m.role), m.text))))),
      replyForm(p));
  }

  function replyForm(p) {
    const text = el("textarea", { placeholder: `Reply to ${p.customer.name || "the customer"}…`, maxlength: 4000, required: true });
    const author = el("input", { placeholder: "your name", value: localStorage.getItem("cx.agent") || "", required: true, size: 12 });
    const handBack = el("input", { type: "checkbox", checked: true });
    const button = el("button", { class: "btn primary", type: "submit" }, "Send reply");
    const note = el("div", { class: "sub" });
    const form = el("form", { class: "reply-form", onsubmit: async (event) => {
      event.preventDefault();
      button.disabled = true;
      localStorage.setItem("cx.agent", author.value.trim());
      try {
        const reply = await cx.api(`/v1/conversations/${encodeURIComponent(p.conversation_id)}/human-replies`, {
          json: { text: text.value, author: author.value, hand_back: handBack.checked }, token: cx.staffKey(),
        });
        note.className = "sent";
        note.textContent = `Sent. Conversation is now ${reply.status}${reply.hand_back ? " — automation takes the next message" : ""}.`;
        text.value = "";
        setTimeout(() => { loadQueues(); loadPackets(); }, 1200);
      } catch (error) {
        note.className = "errtext";
        note.textContent = String(error.message || error);
        // WhatsApp's 24-hour window has shut: only an approved template can reach the customer now.
        if (error.status === 409 && /24-hour/.test(String(error.message))) await offerTemplates();
      } finally {
        button.disabled = false;
      }
    } },
      text,
      el("div", { class: "row" }, author, el("label", { class: "check" }, handBack, "hand back to automation")),
      el("div", { class: "row" }, note, button));
    const templateBox = el("div", { class: "template-box", hidden: true });
    async function offerTemplates() {
      let templates = [];
      try { templates = (await cx.api("/v1/workspace", { token: cx.staffKey() })).whatsapp_templates || []; } catch { return; }
      if (!templates.length) return;
      const select = el("select", { "aria-label": "approved template" },
        templates.map((t, i) => el("option", { value: String(i) }, `${t.name} (${t.language})`)));
      const fields = el("div", { class: "row" });
      const preview = el("p", { class: "sub" });
      const sendNote = el("div", { class: "sub" });
      const chosen = () => templates[Number(select.value)];
      const render = () => {
        const t = chosen();
        fields.replaceChildren(...Array.from({ length: t.parameters }, (_, i) =>
          el("input", { placeholder: `{{${i + 1}}}`, "aria-label": `parameter ${i + 1}`, required: true, size: 14,
            oninput: showPreview })));
        showPreview();
      };
      function showPreview() {
        const values = [...fields.querySelectorAll("input")].map((input) => input.value);
        preview.textContent = chosen().body.replace(/\{\{(\d+)\}\}/g, (_, n) => values[n - 1] || `{{${n}}}`);
      }
      select.addEventListener("change", render);
      const send = el("button", { class: "btn primary", type: "button", onclick: async () => {
        send.disabled = true;
        const parameters = [...fields.querySelectorAll("input")].map((input) => input.value);
        try {
          const reply = await cx.api(`/v1/conversations/${encodeURIComponent(p.conversation_id)}/human-replies`, {
            json: { template: { name: chosen().name, language: chosen().language, parameters }, author: author.value,
              hand_back: handBack.checked }, token: cx.staffKey(),
          });
          sendNote.className = "sent";
          sendNote.textContent = `Template sent. Conversation is now ${reply.status}.`;
          setTimeout(() => { loadQueues(); loadPackets(); }, 1200);
        } catch (error) {
          sendNote.className = "errtext";
          sendNote.textContent = String(error.message || error);
        } finally {
          send.disabled = false;
        }
      } }, "Send template");
      templateBox.replaceChildren(el("div", { class: "sub" }, "Outside the window, send an approved template:"),
        el("div", { class: "row" }, select, send), fields, preview, sendNote);
      templateBox.hidden = false;
      render();
    }
    return el("div", {}, form, templateBox);
  }

  function refused(error) {
    // A key revoked or expired while the desk is open: back to the log-in form.
    if (error.status !== 401) return false;
    cx.signOut();
    showLogin("Your key was refused (revoked?). Sign in again.");
    return true;
  }

  function showLogin(message) {
    $("desk").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("login-key").focus();
  }

  async function signIn(event) {
    event.preventDefault();
    cx.setStaffKey($("login-key").value);
    $("login-key").value = "";
    await start();
  }

  async function start() {
    const me = await cx.whoAmI();
    cx.showWho(me);
    if (!me) { showLogin(cx.staffKey() === null && $("login").hidden ? "" : "That key was not accepted."); return; }
    if (!me.scopes.includes("escalations:read")) {
      cx.signOut();
      showLogin(`A ${me.role} key cannot open the escalation desk: use an agent or admin key.`);
      return;
    }
    $("login").hidden = true;
    $("desk").hidden = false;
    loadQueues();
    loadPackets();
  }

  $("login-form").addEventListener("submit", signIn);
  $("status-select").addEventListener("change", loadPackets);
  $("refresh").addEventListener("click", () => { loadQueues(); loadPackets(); });
  start();
  setInterval(() => {
    // Never wipe a reply someone is writing.
    if ($("desk").hidden) return;
    const busy = [...document.querySelectorAll(".reply-form textarea")].some((t) => t.value || t === document.activeElement);
    if (!busy) { loadQueues(); loadPackets(); }
  }, 30000);
})();
