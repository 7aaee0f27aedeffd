/* Shared helpers for the cxstack pages. Every text from the server goes through textContent (no innerHTML). */
"use strict";

/* Credentials. A staff key arrives in the address fragment (#key=…: never sent to the server or its logs) or
   through a log-in form, lives in sessionStorage (this tab only) and is sent only to this server's API. */
const STAFF_KEY = "cx.key";

const cx = {
  staffKey() { return sessionStorage.getItem(STAFF_KEY); },
  setStaffKey(key) { sessionStorage.setItem(STAFF_KEY, key.trim()); },
  signOut() { sessionStorage.removeItem(STAFF_KEY); sessionStorage.removeItem("cx.session"); },

  takeKeyFromFragment() {
    if (!location.hash.startsWith("#key=")) return;
    const key = decodeURIComponent(location.hash.slice(5));
    if (key) cx.setStaffKey(key);
    history.replaceState(null, "", location.pathname + location.search);
  },

  /** cx.api(path, {json, method, token}): `token` is an API key or a web-chat session token. */
  async api(path, options = {}) {
    const { token, ...rest } = options;
    const init = { headers: { Accept: "application/json" }, ...rest };
    if (token) init.headers.Authorization = `Bearer ${token}`;
    if (options.json !== undefined) {
      init.method = init.method || "POST";
      init.headers = { ...init.headers, "Content-Type": "application/json" };
      init.body = JSON.stringify(options.json);
      delete init.json;
    }
    const response = await fetch(path, init);
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    if (!response.ok) {
      const detail = body && (body.message || (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)));
      const error = new Error(detail || `${response.status} ${response.statusText}`);
      error.status = response.status;
      throw error;
    }
    return body;
  },

  /** el("div", {class: "x", onclick: fn}, "text", childNode, [moreChildren]) */
  el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    const add = (child) => {
      if (child === undefined || child === null || child === false) return;
      if (Array.isArray(child)) child.forEach(add);
      else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    };
    children.forEach(add);
    return node;
  },

  ms(value) {
    if (value === null || value === undefined) return "–";
    return value < 10 ? `${value.toFixed(1)} ms` : `${Math.round(value)} ms`;
  },

  money(value) {
    return "$" + Number(value || 0).toLocaleString("en-US", { maximumFractionDigits: 0 });
  },

  pct(value) {
    return value === null || value === undefined ? "–" : `${Math.round(value * 100)}%`;
  },

  bar(value, small) {
    const v = Math.max(0, Math.min(1, Number(value) || 0));
    const level = v < 0.4 ? " verylow" : v < 0.6 ? " lowc" : "";
    return cx.el("span", { class: `bar${small ? " small" : ""}${level}`, title: cx.pct(v) },
      cx.el("i", { style: `width:${(v * 100).toFixed(1)}%` }));
  },

  ago(iso) {
    const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
    if (seconds < 60) return `${Math.round(seconds)} s ago`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
    return `${Math.round(seconds / 86400)} d ago`;
  },

  time(iso) {
    return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  },

  uid(prefix) {
    const bytes = new Uint8Array(8);
    (window.crypto || window.msCrypto).getRandomValues(bytes);
    return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  },

  /** Who the staff key is (GET /v1/me), or null without one; a refused key is forgotten. */
  async whoAmI() {
    const key = cx.staffKey();
    if (!key) return null;
    try {
      return await cx.api("/v1/me", { token: key });
    } catch (error) {
      if (error.status === 401) cx.signOut();
      return null;
    }
  },

  showWho(me) {
    const box = document.getElementById("who");
    if (!box) return;
    box.replaceChildren();
    if (!me) return;
    box.append(cx.el("span", { title: me.scopes.join(", ") }, `${me.name} · ${me.role}`), " ",
      cx.el("button", { type: "button", class: "linkish", onclick: () => { cx.signOut(); location.reload(); } }, "sign out"));
  },

  async checkHealth() {
    const dot = document.getElementById("health");
    if (!dot) return;
    try {
      const health = await cx.api("/health");
      dot.className = "health " + (health.status === "ok" ? "ok" : "bad");
      dot.title = `${health.status} · db ${health.db_ok ? "ok" : "down"} · ${health.pending ?? "?"} pending`;
    } catch (error) {
      dot.className = "health bad";
      dot.title = String(error.message || error);
    }
  },
};

cx.takeKeyFromFragment();
// The log-in link opened in a tab already on this page only changes the fragment: take it and start over.
window.addEventListener("hashchange", () => {
  if (location.hash.startsWith("#key=")) { cx.takeKeyFromFragment(); location.reload(); }
});
cx.checkHealth();
setInterval(cx.checkHealth, 30000);
