/* Review page: the next conversation in the review queue for this key's holder, with the rubric as a form.
   It needs an agent or admin key (from the #key=… link or the log-in form), like the escalation desk. */
"use strict";

(() => {
  const { el } = cx;
  const $ = (id) => document.getElementById(id);

  async function loadNext() {
    const box = $("review");
    try {
      const packet = await cx.api("/v1/reviews/next", { token: cx.staffKey() });
      box.replaceChildren(packet ? reviewCard(packet)
        : el("div", { class: "empty" }, "Nothing to review right now. Draw new conversations, or come back later."));
    } catch (error) {
      if (refused(error)) return;
      box.replaceChildren(el("div", { class: "error-banner" }, String(error.message || error)));
    }
  }

  function reviewCard(p) {
    const turns = p.turns.map((t, i) => el("li", {},
      el("span", { class: "role" }, `turn ${i + 1}`),
      `${t.intent || "no intent"} via ${t.mechanism || "—"} → ${t.outcome}${t.reason ? ` (${t.reason})` : ""}`,
      t.facts.length ? el("span", { class: "sub" }, ` facts: ${t.facts.join(", ")}`) : null,
      t.actions.length ? el("span", { class: "sub" }, ` actions: ${t.actions.map((a) => `${a.action} ${a.ok ? "ok" : "failed"}`).join(", ")}`) : null));
    const fields = p.rubric.criteria.map((c) => criterionField(c));
    const comment = el("textarea", { id: "review-comment", maxlength: 4000, placeholder: "What was wrong, or right? (optional)" });
    const button = el("button", { class: "btn primary", type: "submit" }, "Save review");
    const note = el("div", { class: "sub", role: "alert" });
    const form = el("form", { class: "reply-form", onsubmit: async (event) => {
      event.preventDefault();
      const scores = {};
      for (const c of p.rubric.criteria) {
        const picked = form.querySelector(`input[name="c-${c.id}"]:checked`);
        if (!picked) { note.className = "errtext"; note.textContent = `Score “${c.id}” first.`; return; }
        scores[c.id] = Number(picked.value);
      }
      button.disabled = true;
      try {
        const saved = await cx.api("/v1/reviews", { token: cx.staffKey(), json: {
          conversation_id: p.conversation_id, scores, comment: comment.value, reason: p.item ? p.item.reason : "manual",
        } });
        $("status").textContent = `Saved: ${saved.passed ? "passes" : "fails"} the rubric (${saved.rubric_version}).`;
        loadNext();
      } catch (error) {
        note.className = "errtext";
        note.textContent = String(error.message || error);
        button.disabled = false;
      }
    } }, fields, el("label", { for: "review-comment" }, "Comment"), comment, el("div", { class: "row" }, note, button));
    const why = p.item ? `${p.item.reason}${p.item.detail.oversampled ? ` · oversampled: ${p.item.detail.oversampled.join(", ")}` : ""}` : "manual";
    return el("article", { class: "packet" },
      el("div", { class: "packet-head" },
        el("span", { class: "chip" }, why),
        el("span", { class: "who" }, p.conversation_id),
        p.item && p.item.wanted > 1 ? el("span", { class: "sub" }, "second opinion wanted") : null),
      el("ul", { class: "transcript", "aria-label": "transcript" }, p.transcript.map((m) => el("li", {}, el("span", { class: "role" }, m.role), m.text))),
      el("details", {}, el("summary", {}, `What the assistant decided (${p.turns.length} turns)`), el("ul", { class: "transcript" }, turns)),
      form);
  }

  function criterionField(c) {
    const [low, high] = c.scale;
    const options = [];
    for (let v = low; v <= high; v += 1) {
      const id = `c-${c.id}-${v}`;
      const label = c.kind === "pass_fail" ? (v ? "pass" : "fail") : String(v);
      options.push(el("input", { type: "radio", name: `c-${c.id}`, id, value: String(v), required: true }), el("label", { for: id, class: "check" }, label));
    }
    const gate = c.gate ? `passes at ${c.kind === "pass_fail" ? "pass" : c.pass_at}` : "tracked, does not decide the pass";
    return el("fieldset", { class: "criterion" },
      el("legend", {}, c.id, el("span", { class: "sub" }, ` — ${gate}`)),
      el("p", { class: "hint" }, c.description),
      el("div", { class: "row" }, options));
  }

  function refused(error) {
    if (error.status !== 401 && error.status !== 403) return false;
    cx.signOut();
    showLogin(error.status === 403 ? "That key may not review: use an agent or admin key." : "Your key was refused. Sign in again.");
    return true;
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
    if (!me.scopes.includes("reviews:write")) {
      cx.signOut();
      showLogin(`A ${me.role} key cannot review: use an agent or admin key.`);
      return;
    }
    $("login").hidden = true;
    $("desk").hidden = false;
    loadNext();
  }

  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    cx.setStaffKey($("login-key").value);
    $("login-key").value = "";
    await start();
  });
  $("refresh").addEventListener("click", loadNext);
  $("draw").addEventListener("click", async () => {
    try {
      const drawn = await cx.api("/v1/reviews/sample", { token: cx.staffKey(), method: "POST" });
      $("status").textContent = `Drew ${drawn.drawn} conversations; queue: ${JSON.stringify(drawn.queue)}.`;
      loadNext();
    } catch (error) { if (!refused(error)) $("status").textContent = String(error.message || error); }
  });
  start();
})();
