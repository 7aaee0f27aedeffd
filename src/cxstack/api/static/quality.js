/* Quality page: the quality report (GET /v1/report, the page `cxstack report` writes) in a sandboxed frame.
   The frame runs nothing and loads nothing (sandbox without permissions; the report is inline SVG and CSS). */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  async function load() {
    $("status").textContent = "Loading…";
    try {
      const response = await fetch(`/v1/report?days=${encodeURIComponent($("days").value)}`, {
        headers: { Authorization: `Bearer ${cx.staffKey()}`, Accept: "text/html" },
      });
      if (response.status === 401 || response.status === 403) { refused(response.status); return; }
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      $("report").srcdoc = await response.text();
      $("status").textContent = "";
    } catch (error) {
      $("status").textContent = String(error.message || error);
    }
  }

  function refused(status) {
    cx.signOut();
    showLogin(status === 403 ? "That key may not read metrics." : "Your key was refused. Sign in again.");
  }

  function showLogin(message) {
    $("desk").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("login-key").focus();
  }

  async function start() {
    const me = await cx.whoAmI();
    cx.showWho(me);
    if (!me) { showLogin(cx.staffKey() === null && $("login").hidden ? "" : "That key was not accepted."); return; }
    if (!me.scopes.includes("metrics:read")) { cx.signOut(); showLogin(`A ${me.role} key cannot read metrics.`); return; }
    $("login").hidden = true;
    $("desk").hidden = false;
    load();
  }

  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    cx.setStaffKey($("login-key").value);
    $("login-key").value = "";
    await start();
  });
  $("refresh").addEventListener("click", load);
  $("days").addEventListener("change", load);
  start();
})();
