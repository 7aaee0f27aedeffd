"""The web-chat widget: time from a message typed in Chromium to its reply shown, no LLM, beside the same
messages through the REST web-chat API with a plain HTTP client in the same run.

    python -m benchmarks.widget [--messages 60] [--embedder minilm] [--json PATH]

`cxstack serve` runs the demo workspace (no model: answers are composed from facts, actions go to the demo
back office). A plain page on another origin embeds the widget with its one line; Playwright drives Debian's
Chromium (headless), which types each message into the widget's textarea and presses Enter. The clock runs
in the page: from the Enter keydown to the first animation frame after the reply's element is in the
transcript (what the customer sees), so it holds the POST, the turn, the stream event and the rendering,
and nothing of Playwright's own round trips. A conversation handed to a person gets no further bot replies,
so after a handoff the next message starts a new conversation (as it does after every `--per-conversation`
messages). Every message waits out the workspace's burst window first (the demo's: 1200 ms on web chat,
for a customer's next short message), unless `--burst-window-ms` says otherwise. The baseline: each message
posted to `POST /v1/webchat/messages?wait=true` by httpx with a session token, timed to the answer carrying
the reply: the same turn without a browser or a stream.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from benchmarks.turn_latency import free_port, ingest_texts, percentile, wait_up

CHROMIUM = "/usr/bin/chromium"
WARMUP = 3

# Installed in the page before each message: `window.cxReply` resolves with the milliseconds from the Enter
# keydown to the first frame painted after a reply (an assistant's or a person's message) joined the
# transcript; -1 after `timeout` ms.
MEASURE = """
(timeout) => { window.cxReply = new Promise((resolve) => {
  const root = document.querySelector("cxstack-widget").shadowRoot;
  const log = root.querySelector(".log");
  const replies = () => log.querySelectorAll(".msg.assistant, .msg.human_agent").length;
  const before = replies();
  let started = null;
  const onKey = (event) => { if (event.key === "Enter" && !event.shiftKey) started = performance.now(); };
  root.querySelector("textarea").addEventListener("keydown", onKey, { capture: true, once: true });
  const timer = setTimeout(() => { observer.disconnect(); resolve(-1); }, timeout);
  const observer = new MutationObserver(() => {
    if (started === null || replies() <= before) return;
    observer.disconnect();
    clearTimeout(timer);
    requestAnimationFrame(() => resolve(performance.now() - started));
  });
  observer.observe(log, { childList: true });
}); }
"""


def widget_latencies(
    cx_url: str, host_url: str, texts: list[str], per_conversation: int
) -> tuple[list[float], int, int, int]:
    """(milliseconds per reply shown, messages without a reply in 15 s, conversations used, messages sent
    while the handoff notice was arriving: a person's, so no bot reply was due)."""
    from playwright.sync_api import sync_playwright

    latencies: list[float] = []
    missing = conversations = silenced = 0
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(30_000)
        in_conversation = per_conversation

        def new_conversation() -> None:
            page.goto(host_url + "/")
            page.evaluate("sessionStorage.clear()")
            page.reload()
            page.locator("cxstack-widget").locator(".bubble").click()
            page.wait_for_function("window.cxstackWidget.connected === true")

        notice = page.locator("cxstack-widget").locator(".notice")
        for i, text in enumerate([*texts[:WARMUP], *texts]):
            # A person has it (the state event can trail the handoff reply by a moment): the bot stays silent.
            if in_conversation >= per_conversation or notice.is_visible():
                new_conversation()
                conversations += 1
                in_conversation = 0
            box = page.locator("cxstack-widget").locator("textarea")
            box.fill(text)
            page.evaluate(MEASURE, 15_000)
            box.press("Enter")
            elapsed = float(page.evaluate("window.cxReply"))
            in_conversation += 1
            if i < WARMUP:
                continue
            if elapsed >= 0:
                latencies.append(elapsed)
            elif notice.is_visible():
                silenced += 1
            else:
                missing += 1
        browser.close()
    return latencies, missing, conversations, silenced


def rest_latencies(cx_url: str, texts: list[str], per_conversation: int) -> tuple[list[float], int]:
    latencies: list[float] = []
    missing = 0
    with httpx.Client(base_url=cx_url, timeout=30) as client:
        token, in_conversation = "", per_conversation
        for i, text in enumerate([*texts[:WARMUP], *texts]):
            if in_conversation >= per_conversation:
                token = client.post("/v1/webchat/sessions", json={}).json()["token"]
                in_conversation = 0
            started = time.perf_counter()
            answer = client.post(
                "/v1/webchat/messages",
                params={"wait": "true"},
                json={"text": text, "external_id": f"bench{i}"},
                headers={"Authorization": f"Bearer {token}"},
            )
            elapsed = (time.perf_counter() - started) * 1000
            in_conversation += 1
            body = answer.json()
            if i >= WARMUP:
                if answer.status_code == 202 and body.get("reply"):
                    latencies.append(elapsed)
                else:
                    missing += 1
            if handed_off(client, token):
                in_conversation = per_conversation
    return latencies, missing


def handed_off(client: httpx.Client, token: str) -> bool:
    """The stream's state event: a person has the conversation or will."""
    stream = client.get(
        "/v1/webchat/stream", params={"timeout": 0}, headers={"Authorization": f"Bearer {token}"}
    )
    return '"handoff": true' in stream.text


def run(messages: int, per_conversation: int, embedder: str, burst_window_ms: int | None) -> dict[str, Any]:
    from cxstack.testing.live import HostSite

    if not os.path.exists(CHROMIUM):
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install chromium")
    texts = ingest_texts(messages)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    env.pop("CXSTACK_DATABASE_URL", None)
    env.pop("CXSTACK_BURST_WINDOW_MS", None)
    if burst_window_ms is not None:
        env["CXSTACK_BURST_WINDOW_MS"] = str(burst_window_ms)
    result: dict[str, Any] = {
        "messages": messages,
        "per_conversation": per_conversation,
        "embedder": embedder,
        # the workspace's: the demo waits 1200 ms on web chat for more messages of the same burst
        "burst_window": "the workspace's" if burst_window_ms is None else f"{burst_window_ms} ms",
    }
    with tempfile.TemporaryDirectory() as tmp:
        workspace, home = Path(tmp) / "ws", Path(tmp) / "home"
        subprocess.run(
            [sys.executable, "-m", "cxstack.cli.main", "init", "--demo", str(workspace)],
            check=True,
            stdout=subprocess.DEVNULL,
            env=env,
        )
        port = free_port()
        serve = ["serve", str(workspace), "--port", str(port), "--home", str(home), "--embedder", embedder]
        cmd = [sys.executable, "-m", "cxstack.cli.main", *serve]
        proc = subprocess.Popen(cmd, env={**env, "CXSTACK_HOME": str(home)}, stdout=subprocess.DEVNULL)
        cx_url = f"http://127.0.0.1:{port}"
        try:
            wait_up(f"{cx_url}/health", timeout=600)
            with HostSite(cx_url) as site:
                shown, no_reply, conversations, silenced = widget_latencies(
                    cx_url, site.url, texts, per_conversation
                )
            rest, rest_missing = rest_latencies(cx_url, texts, per_conversation)
        finally:
            proc.terminate()
            proc.wait()
    result["widget"] = _summary(shown, no_reply) | {"conversations": conversations, "to_a_person": silenced}
    result["rest"] = _summary(rest, rest_missing)
    return result


def _summary(latencies: list[float], missing: int) -> dict[str, Any]:
    return {
        "n": len(latencies),
        "no_reply": missing,
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(max(latencies, default=float("nan")), 1),
    }


def table(result: dict[str, Any]) -> Table:
    out = Table(
        title=f"web-chat widget: {result['messages']} messages typed in Chromium, demo workspace, no LLM "
        f"({result['embedder']} router)",
        caption=f"burst window {result['burst_window']}. widget: Enter keydown → first frame with the reply "
        "in the transcript (POST, turn, SSE event, render); REST: POST ?wait=true → answer with the reply, "
        "same turns, no browser",
    )
    for column in ("path", "replies", "no reply", "p50 ms", "p99 ms", "max ms"):
        out.add_column(column, justify="left" if column == "path" else "right")
    for label, key in (("REST web-chat API, httpx (baseline)", "rest"), ("widget in Chromium", "widget")):
        row = result[key]
        out.add_row(
            label,
            str(row["n"]),
            str(row["no_reply"]),
            f"{row['p50_ms']:.1f}",
            f"{row['p99_ms']:.1f}",
            f"{row['max_ms']:.1f}",
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=60, help="messages timed on each path (default 60)")
    parser.add_argument(
        "--per-conversation", type=int, default=5, help="messages per conversation (default 5)"
    )
    parser.add_argument("--embedder", default="minilm", help="the router's embedder (default minilm)")
    parser.add_argument(
        "--burst-window-ms",
        type=int,
        help="override the workspace's burst window (the demo's: 1200 ms on web chat); 0: none",
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    result = run(args.messages, args.per_conversation, args.embedder, args.burst_window_ms)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    Console(width=max(Console().width, 120)).print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
