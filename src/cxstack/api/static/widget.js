/* cxstack web chat widget. One line on any page:
     <script src="https://cx.example/widget.js" data-cxstack-url="https://cx.example" defer></script>
   Optional: data-session-url="/cxstack-session" (the site's own endpoint: it opens a session for the logged-in
   customer with its integration key and answers cxstack's JSON), data-title="Chat with us".
   Plain JavaScript, no build step, nothing loaded from anywhere else; everything it draws lives in a shadow
   root, so the host page's CSS cannot reach it. */
(() => {
  "use strict";

  const script = document.currentScript;
  if (!script || window.cxstackWidget) return;
  const BASE = (script.dataset.cxstackUrl || new URL(script.src).origin).replace(/\/+$/, "");
  const SESSION_URL = script.dataset.sessionUrl || "";
  const TITLE = script.dataset.title || "Chat with us";
  const STORE_KEY = "cxstack.widget:" + BASE;
  const OPEN_KEY = STORE_KEY + ":open";
  const REFRESH_MARGIN_MS = 60_000;
  const MAX_BACKOFF_MS = 15_000;
  const SILENCE_MS = 45_000; // three of the server's heartbeats

  const CSS = `
:host { all: initial; }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
.root { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; color: #1c2430; }
button, textarea { font: inherit; }
:focus-visible { outline: 3px solid #1c2430; outline-offset: 2px; }
.bubble {
  position: fixed; right: 20px; bottom: 20px; z-index: 2147483000; width: 60px; height: 60px;
  border: 0; border-radius: 50%; background: #2f5bea; color: #fff; cursor: pointer;
  box-shadow: 0 6px 20px rgba(16, 24, 40, .28); display: grid; place-items: center;
}
.bubble svg { width: 28px; height: 28px; }
.panel {
  position: fixed; right: 20px; bottom: 92px; z-index: 2147483001; width: 370px; max-width: calc(100vw - 40px);
  height: min(600px, calc(100vh - 120px)); display: flex; flex-direction: column; overflow: hidden;
  background: #fff; border-radius: 14px; box-shadow: 0 12px 40px rgba(16, 24, 40, .3);
}
header { display: flex; align-items: center; gap: 8px; padding: 12px 12px 12px 16px; background: #1f3fae; color: #fff; }
header h2 { flex: 1; margin: 0; font-size: 16px; font-weight: 600; }
.close { border: 0; background: transparent; color: #fff; width: 44px; height: 44px; border-radius: 8px; cursor: pointer; font-size: 24px; line-height: 1; }
.close:focus-visible { outline-color: #fff; }
.notice { margin: 0; padding: 8px 16px; background: #fff4e0; color: #5c3300; border-bottom: 1px solid #f0d9b5; font-size: 14px; }
.log { flex: 1; margin: 0; padding: 12px 16px; list-style: none; overflow-y: auto; overflow-x: hidden; display: flex; flex-direction: column; gap: 10px; }
.msg { max-width: 85%; display: flex; flex-direction: column; gap: 2px; }
.msg .who { font-size: 12px; color: #4b5563; }
.msg .text { padding: 8px 12px; border-radius: 12px; white-space: pre-wrap; overflow-wrap: anywhere; }
.msg.customer { align-self: flex-end; align-items: flex-end; }
.msg.customer .text { background: #2f5bea; color: #fff; border-bottom-right-radius: 4px; }
.msg.assistant .text { background: #eef0f3; color: #1c2430; border-bottom-left-radius: 4px; }
.msg.human_agent .text { background: #e3f4e8; color: #0f3d1e; border-bottom-left-radius: 4px; }
.msg.failed .text { background: #fdeaea; color: #8a1c21; }
.typing { margin: 0 16px 8px; color: #4b5563; font-size: 13px; }
.error { margin: 0 16px 8px; color: #a3191f; font-size: 13px; }
form { display: flex; gap: 8px; padding: 10px 12px 12px; border-top: 1px solid #e3e6ea; align-items: flex-end; }
.field { flex: 1; min-width: 0; display: flex; flex-direction: column; gap: 2px; }
label { font-size: 12px; color: #4b5563; }
textarea { width: 100%; min-height: 44px; max-height: 140px; resize: none; padding: 10px; border: 1px solid #6b7280; border-radius: 10px; color: #1c2430; background: #fff; }
.send { height: 44px; padding: 0 16px; border: 0; border-radius: 10px; background: #2f5bea; color: #fff; font-weight: 600; cursor: pointer; }
.send:disabled { background: #4b5563; cursor: default; }
.sr { position: absolute; width: 1px; height: 1px; margin: -1px; padding: 0; overflow: hidden; clip: rect(0 0 0 0); border: 0; }
@media (max-width: 480px) {
  .panel { inset: 0; width: 100%; max-width: 100%; height: 100%; border-radius: 0; }
}`;

  const ICON = '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false"><path fill="currentColor" d="M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H8l-4 4V6a2 2 0 0 1 2-2z"/></svg>';
  const WHO = { customer: "You", assistant: "Assistant", human_agent: "Support team (a person)" };

  // --- the DOM ---------------------------------------------------------------------------------------------

  const host = document.createElement("cxstack-widget");
  // Inline and important: a host stylesheet cannot hide or move the widget's own element.
  host.style.setProperty("all", "initial", "important");
  host.style.setProperty("display", "block", "important");
  const shadow = host.attachShadow({ mode: "open" });
  shadow.innerHTML = `<style>${CSS}</style>
<div class="root">
  <button class="bubble" type="button" aria-label="Open chat" aria-expanded="false" aria-controls="cx-panel">${ICON}</button>
  <section class="panel" id="cx-panel" role="dialog" aria-labelledby="cx-title" hidden>
    <header><h2 id="cx-title"></h2><button class="close" type="button" aria-label="Close chat">&times;</button></header>
    <p class="notice" role="status" hidden>A person will reply here.</p>
    <ol class="log" aria-label="Conversation" tabindex="0"></ol>
    <p class="typing" hidden>Assistant is typing…</p>
    <p class="error" role="alert" hidden></p>
    <p class="sr" aria-live="polite" aria-atomic="true"></p>
    <form novalidate>
      <div class="field"><label for="cx-input">Your message</label>
        <textarea id="cx-input" rows="1" maxlength="4000" aria-describedby="cx-hint"></textarea>
        <span class="sr" id="cx-hint">Enter sends, Shift+Enter starts a new line, Escape closes the chat.</span></div>
      <button class="send" type="submit">Send</button>
    </form>
  </section>
</div>`;
  const $ = (selector) => shadow.querySelector(selector);
  const ui = {
    bubble: $(".bubble"), panel: $(".panel"), close: $(".close"), notice: $(".notice"), log: $(".log"),
    typing: $(".typing"), error: $(".error"), announce: $("p.sr[aria-live]"), form: $("form"),
    input: $("textarea"), send: $(".send"),
  };
  $("#cx-title").textContent = TITLE;

  // --- state -----------------------------------------------------------------------------------------------

  const state = {
    session: null, // {token, conversation_id, customer_id, verified, expires_at}
    lastEventId: 0, // position of the last message the stream delivered
    shown: new Map(), // message id -> <li>
    pending: new Map(), // client id -> <li> of a message sent but not yet seen on the stream
    handoff: false,
    connected: false,
    stream: null, // AbortController of the open stream
    failures: 0,
    refreshTimer: 0,
    started: null, // the promise of start()
  };

  const randomId = () => {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return "w" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  };
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const backoff = (n) => Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(n, 6)) * (0.5 + Math.random() / 2);

  class HttpError extends Error {
    constructor(status, detail) {
      super(detail || `HTTP ${status}`);
      this.status = status;
    }
  }

  async function call(path, { method = "GET", body, token } = {}) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(BASE + path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store",
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new HttpError(response.status, typeof data.detail === "string" ? data.detail : "");
    return data;
  }

  // --- the session: kept in sessionStorage, so a reload resumes the conversation ----------------------------

  function loadStored() {
    try {
      const stored = JSON.parse(sessionStorage.getItem(STORE_KEY) || "null");
      return stored && typeof stored.token === "string" ? stored : null;
    } catch (_) {
      return null;
    }
  }

  function keep(session) {
    state.session = session;
    try {
      sessionStorage.setItem(STORE_KEY, JSON.stringify(session));
    } catch (_) { /* storage off: the session lasts as long as the page */ }
    scheduleRefresh();
  }

  function forget() {
    state.session = null;
    try { sessionStorage.removeItem(STORE_KEY); } catch (_) { /* nothing kept */ }
  }

  async function fromSite(conversationId) {
    // The site vouches for its logged-in customer; what the visitor types never reaches this request.
    const response = await fetch(SESSION_URL, {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(conversationId ? { conversation_id: conversationId } : {}),
    });
    if (!response.ok) throw new HttpError(response.status, "this site could not open a chat session");
    const session = await response.json();
    if (!session || typeof session.token !== "string") throw new HttpError(502, "this site answered no chat session");
    return session;
  }

  async function openSession() {
    const stored = loadStored();
    if (SESSION_URL) {
      return fromSite(stored && stored.verified ? stored.conversation_id : null);
    }
    if (stored && !stored.verified) {
      try {
        return await call("/v1/webchat/sessions/refresh", { method: "POST", token: stored.token });
      } catch (error) {
        if (!(error instanceof HttpError) || error.status !== 401) throw error;
        // Expired or not ours: a new conversation (an anonymous one cannot be reopened without its token).
      }
    }
    return call("/v1/webchat/sessions", { method: "POST", body: {} });
  }

  async function renew() {
    // A still-valid token is refreshed; an expired one is replaced the way it was first obtained.
    const old = state.session;
    try {
      keep(await call("/v1/webchat/sessions/refresh", { method: "POST", token: old.token }));
      return;
    } catch (error) {
      if (!(error instanceof HttpError) || error.status !== 401) throw error;
    }
    if (SESSION_URL) {
      keep(await fromSite(old.conversation_id));
      return;
    }
    forget();
    resetTranscript();
    keep(await call("/v1/webchat/sessions", { method: "POST", body: {} }));
    showError("Your chat session ended, so a new conversation has started.");
  }

  function scheduleRefresh() {
    clearTimeout(state.refreshTimer);
    if (!state.session) return;
    const wait = Date.parse(state.session.expires_at) - Date.now() - REFRESH_MARGIN_MS;
    state.refreshTimer = setTimeout(() => {
      renew().catch(() => scheduleRetryRefresh());
    }, Math.max(wait, 5_000));
  }

  function scheduleRetryRefresh() {
    clearTimeout(state.refreshTimer);
    state.refreshTimer = setTimeout(() => renew().catch(() => scheduleRetryRefresh()), 10_000);
  }

  // --- the transcript ---------------------------------------------------------------------------------------

  function messageItem(role, text) {
    const li = document.createElement("li");
    li.className = `msg ${role}`;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = WHO[role] || "";
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text; // text, never HTML: a reply cannot inject markup into the page
    li.append(who, body);
    return li;
  }

  function scrollToEnd() {
    ui.log.scrollTop = ui.log.scrollHeight;
  }

  function onMessage(message) {
    if (state.shown.has(message.id)) return;
    let li = message.client_id ? state.pending.get(message.client_id) : null;
    if (li) {
      state.pending.delete(message.client_id);
      li.classList.remove("failed");
    } else {
      li = messageItem(message.role, message.text);
      ui.log.append(li);
      if (message.role !== "customer") ui.announce.textContent = `${WHO[message.role]}: ${message.text}`;
    }
    li.dataset.id = message.id;
    state.shown.set(message.id, li);
    scrollToEnd();
    updateTyping();
  }

  function onState(data) {
    state.handoff = Boolean(data.handoff);
    ui.notice.hidden = !state.handoff;
    updateTyping();
  }

  function updateTyping() {
    // The customer spoke last and the bot has the conversation: a reply is on its way.
    const last = ui.log.lastElementChild;
    const waiting = Boolean(last && last.classList.contains("customer") && !last.classList.contains("failed"));
    ui.typing.hidden = !(waiting && !state.handoff);
  }

  function resetTranscript() {
    ui.log.replaceChildren();
    state.shown.clear();
    state.pending.clear();
    state.lastEventId = 0;
    state.handoff = false;
    ui.notice.hidden = true;
    updateTyping();
  }

  function showError(text) {
    ui.error.textContent = text;
    ui.error.hidden = !text;
  }

  // --- the live stream: Server-Sent Events over fetch (the token stays in a header) -------------------------

  function dispatch(block) {
    let event = "message", data = "", id = null;
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event = value;
      else if (field === "data") data += (data ? "\n" : "") + value;
      else if (field === "id") id = value;
    }
    if (!data) return;
    const payload = JSON.parse(data);
    if (event === "message") {
      onMessage(payload);
      if (id !== null) state.lastEventId = Number(id);
    } else if (event === "state") {
      onState(payload);
    }
  }

  async function readStream(signal, watchdog) {
    const response = await fetch(BASE + "/v1/webchat/stream", {
      headers: {
        Accept: "text/event-stream",
        Authorization: `Bearer ${state.session.token}`,
        "Last-Event-ID": String(state.lastEventId),
      },
      cache: "no-store",
      signal,
    });
    if (!response.ok) throw new HttpError(response.status, "");
    state.failures = 0;
    setConnected(true);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      watchdog.last = Date.now();
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  }

  async function streamForever() {
    const running = state.stream;
    while (state.stream === running && !running.signal.aborted) {
      // One connection per attempt; the watchdog drops one that stopped receiving even heartbeats (a
      // half-open connection after a network change never errors by itself).
      const attempt = new AbortController();
      const watchdog = { last: Date.now() };
      const timer = setInterval(() => {
        if (Date.now() - watchdog.last > SILENCE_MS) attempt.abort();
      }, 5_000);
      const stop = () => attempt.abort();
      running.signal.addEventListener("abort", stop);
      try {
        await readStream(attempt.signal, watchdog);
      } catch (error) {
        if (running.signal.aborted) return;
        if (!attempt.signal.aborted) state.failures += 1;
        if (error instanceof HttpError && error.status === 401) {
          try { await renew(); } catch (_) { /* retried below */ }
        } else if (error instanceof HttpError && error.status === 400) {
          // Our position is not this conversation's (a stale copy): read it from the start.
          resetTranscript();
        }
      } finally {
        clearInterval(timer);
        running.signal.removeEventListener("abort", stop);
      }
      if (state.stream !== running) return;
      setConnected(false);
      await sleep(state.failures ? backoff(state.failures) : 250);
    }
  }

  function setConnected(connected) {
    state.connected = connected;
    ui.panel.dataset.connected = String(connected);
    if (connected && ui.error.dataset.kind === "offline") {
      ui.error.dataset.kind = "";
      showError("");
    } else if (!connected && state.failures >= 2) {
      ui.error.dataset.kind = "offline";
      showError("Reconnecting…");
    }
  }

  function start() {
    if (!state.started) {
      state.started = (async () => {
        keep(await openSession());
        state.stream = new AbortController();
        streamForever();
      })().catch((error) => {
        state.started = null;
        showError(`Chat is unavailable right now (${error.message}). Please try again.`);
        throw error;
      });
    }
    return state.started;
  }

  // --- sending ----------------------------------------------------------------------------------------------

  async function send(text) {
    const clientId = randomId();
    const li = messageItem("customer", text);
    ui.log.append(li);
    state.pending.set(clientId, li);
    scrollToEnd();
    updateTyping();
    for (let attempt = 0; ; attempt += 1) {
      try {
        await start();
        // The same external id on every attempt: a resend after a lost answer is stored once.
        const accepted = await call("/v1/webchat/messages", {
          method: "POST", token: state.session.token, body: { text, external_id: clientId },
        });
        if (state.shown.has(accepted.message_id) && state.shown.get(accepted.message_id) !== li) {
          li.remove();
        } else {
          li.dataset.id = accepted.message_id;
          state.shown.set(accepted.message_id, li);
        }
        state.pending.delete(clientId);
        updateTyping();
        return;
      } catch (error) {
        const status = error instanceof HttpError ? error.status : 0;
        if (status === 401 && attempt < 3) {
          try { await renew(); } catch (_) { /* counted as an attempt */ }
          continue;
        }
        if ((status === 0 || status >= 500) && attempt < 5) {
          await sleep(backoff(attempt));
          continue;
        }
        li.classList.add("failed");
        state.pending.delete(clientId);
        showError(status === 413 || status === 422 ? "That message could not be sent (too long?)." : "Your message could not be sent. Please try again.");
        updateTyping();
        return;
      }
    }
  }

  // --- open, close, keys ------------------------------------------------------------------------------------

  function remember(key, value) {
    try { sessionStorage.setItem(key, value); } catch (_) { /* storage off */ }
  }

  function open() {
    remember(OPEN_KEY, "1");
    ui.panel.hidden = false;
    ui.bubble.setAttribute("aria-expanded", "true");
    ui.bubble.setAttribute("aria-label", "Chat is open");
    ui.input.focus();
    scrollToEnd();
    start().catch(() => {});
  }

  function close() {
    remember(OPEN_KEY, "");
    ui.panel.hidden = true;
    ui.bubble.setAttribute("aria-expanded", "false");
    ui.bubble.setAttribute("aria-label", "Open chat");
    ui.bubble.focus();
  }

  // On a phone the panel covers the page: it is then a modal dialog, and Tab must not wander to the page (or
  // the bubble) hidden beneath it. On a wider screen the page stays usable beside it.
  const phone = window.matchMedia("(max-width: 480px)");
  function markModal() {
    if (phone.matches) ui.panel.setAttribute("aria-modal", "true");
    else ui.panel.removeAttribute("aria-modal");
  }
  markModal();
  phone.addEventListener("change", markModal);

  function trapFocus(event) {
    if (!phone.matches || ui.panel.hidden) return;
    const reachable = [...ui.panel.querySelectorAll("button, textarea, [tabindex='0']")].filter(
      (el) => !el.disabled && !el.closest("[hidden]") && el.getClientRects().length > 0);
    if (!reachable.length) return;
    const first = reachable[0];
    const last = reachable[reachable.length - 1];
    const active = shadow.activeElement;
    if (event.shiftKey && (active === first || !reachable.includes(active))) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && (active === last || !reachable.includes(active))) {
      event.preventDefault();
      first.focus();
    }
  }

  ui.bubble.addEventListener("click", () => (ui.panel.hidden ? open() : close()));
  ui.close.addEventListener("click", close);
  ui.panel.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      close();
    } else if (event.key === "Tab") {
      trapFocus(event);
    }
  });
  ui.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.form.requestSubmit();
    }
  });
  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = ui.input.value.trim();
    if (!text) return;
    ui.input.value = "";
    showError("");
    send(text);
  });

  window.cxstackWidget = {
    version: "1",
    open, close,
    get conversationId() { return state.session ? state.session.conversation_id : null; },
    get connected() { return state.connected; },
  };

  function mount() {
    document.body.append(host);
    // A visitor who reloads mid-conversation finds it as they left it.
    let wasOpen = false;
    try { wasOpen = sessionStorage.getItem(OPEN_KEY) === "1"; } catch (_) { /* storage off */ }
    if (wasOpen) {
      ui.panel.hidden = false;
      ui.bubble.setAttribute("aria-expanded", "true");
      ui.bubble.setAttribute("aria-label", "Chat is open");
    }
    if (wasOpen || loadStored()) start().catch(() => {});
  }

  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount, { once: true });
})();
