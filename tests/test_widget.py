"""The embeddable web-chat widget, end to end: a real cxstack server (uvicorn), a host page on another origin
that embeds it with one line, and Debian's Chromium driven by Playwright. Plus the stream's wire format
(Server-Sent Events, ids that resume, heartbeats) read with a plain HTTP client."""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import write_workspace

from cxstack.api.widget import HEARTBEAT, host_page
from cxstack.app import CxApp, Settings, build
from cxstack.domain.models import ConversationId, Role
from cxstack.testing.authz import make_role_keys
from cxstack.testing.live import HostSite, LiveServer
from cxstack.workspace.loader import load_workspace

CHROMIUM = "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does) for the browser tests",
)
SECRET = "widget-tests-secret-" + "x" * 32
ACCENT = (0x2F, 0x5B, 0xEA)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("widget")
    workspace = load_workspace(write_workspace(root / "ws"))
    saved = {k: os.environ.get(k) for k in ("CXSTACK_WIDGET_HEARTBEAT_SECONDS",)}
    os.environ["CXSTACK_WIDGET_HEARTBEAT_SECONDS"] = "1"

    def make_app() -> CxApp:
        return build(
            # Tokens live 66 s, so the widget refreshes them 6 s in (a minute before expiry) during the tests.
            Settings(
                home=root / "home",
                embedder="hashing",
                secret_key=SECRET,
                runtime="thread",
                session_minutes=1.1,
            ),
            workspace=workspace,
        )

    live = LiveServer(make_app)
    try:
        with live:
            yield live
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def keys(server: LiveServer) -> dict[str, str]:
    assert server.cx is not None
    return make_role_keys(server.cx.store)


@pytest.fixture(scope="module")
def site(server: LiveServer, keys: dict[str, str]) -> Iterator[HostSite]:
    with HostSite(server.url, integration_key=keys["integration"], customer_id="cus_1001") as host:
        yield host


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(20_000)
    yield context.new_page()
    context.close()


def anonymous_session(server: LiveServer) -> dict[str, Any]:
    response = httpx.post(f"{server.url}/v1/webchat/sessions", json={}, timeout=10)
    assert response.status_code == 201, response.text
    return dict(response.json())


def sse_events(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.split("\n"):
            if line and not line.startswith(":") and ":" in line:
                name, value = line.split(":", 1)
                fields[name] = value.removeprefix(" ")
        if "data" in fields:
            fields["data"] = json.loads(fields["data"])
            events.append(fields)
    return events


def customer_messages(server: LiveServer, conversation_id: str) -> list[str]:
    assert server.cx is not None
    messages = server.cx.store.list_messages(ConversationId(conversation_id))
    return [m.text for m in messages if m.role == Role.CUSTOMER]


# --- the script and the stream, over plain HTTP -------------------------------------------------------------


def test_the_script_is_served_cacheable_to_any_site_and_only_the_chat_routes_allow_other_origins(
    server: LiveServer,
) -> None:
    script = httpx.get(f"{server.url}/widget.js", headers={"Origin": "https://shop.example"}, timeout=10)
    assert script.status_code == 200
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.headers["access-control-allow-origin"] == "*"
    assert "max-age" in script.headers["cache-control"] and script.headers["etag"]
    assert "attachShadow" in script.text and "import " not in script.text  # no modules, nothing fetched
    again = httpx.get(
        f"{server.url}/widget.js", headers={"If-None-Match": script.headers["etag"]}, timeout=10
    )
    assert again.status_code == 304

    preflight = httpx.options(
        f"{server.url}/v1/webchat/stream",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, last-event-id",
        },
        timeout=10,
    )
    assert preflight.status_code == 200
    assert "last-event-id" in preflight.headers["access-control-allow-headers"].lower()
    staff = httpx.get(
        f"{server.url}/v1/conversations", headers={"Origin": "https://shop.example"}, timeout=10
    )
    assert "access-control-allow-origin" not in staff.headers

    demo = httpx.get(f"{server.url}/widget/demo", timeout=10)
    assert demo.status_code == 200 and f'src="{server.url}/widget.js"' in demo.text


def test_the_stream_resumes_after_the_last_event_id_and_heartbeats_when_idle(server: LiveServer) -> None:
    session = anonymous_session(server)
    auth = {"Authorization": f"Bearer {session['token']}"}
    for i, text in enumerate(["what is your return policy", "how many days do I have to return something"]):
        posted = httpx.post(
            f"{server.url}/v1/webchat/messages?wait=true",
            json={"text": text, "external_id": f"m{i}"},
            headers=auth,
            timeout=15,
        )
        assert posted.status_code == 202 and posted.json()["completed"], posted.text

    stream = f"{server.url}/v1/webchat/stream"
    whole = sse_events(httpx.get(stream, params={"timeout": 0}, headers=auth, timeout=10).text)
    messages = [e for e in whole if e["event"] == "message"]
    assert [e["id"] for e in messages] == ["1", "2", "3", "4"]
    assert [e["data"]["role"] for e in messages] == ["customer", "assistant", "customer", "assistant"]
    assert messages[0]["data"]["client_id"] == "m0" and messages[1]["data"]["client_id"] is None
    assert "30 days" in messages[1]["data"]["text"]
    assert [e["data"] for e in whole if e["event"] == "state"] == [
        {"status": "bot", "handoff": False, "awaiting_reply": False}
    ]

    resumed = sse_events(
        httpx.get(stream, params={"timeout": 0}, headers={**auth, "Last-Event-ID": "2"}, timeout=10).text
    )
    assert [e["id"] for e in resumed if e["event"] == "message"] == ["3", "4"]  # nothing lost or repeated

    again = httpx.post(  # a resend whose first answer was lost: stored once, shown once
        f"{server.url}/v1/webchat/messages",
        json={"text": "what is your return policy", "external_id": "m0"},
        headers=auth,
        timeout=15,
    )
    assert again.status_code == 200 and again.json()["duplicate"]
    replay = sse_events(httpx.get(stream, params={"timeout": 0}, headers=auth, timeout=10).text)
    assert [e["id"] for e in replay if e["event"] == "message"] == ["1", "2", "3", "4"]

    idle = httpx.get(stream, params={"timeout": 2.5}, headers={**auth, "Last-Event-ID": "4"}, timeout=10)
    assert HEARTBEAT in idle.text and idle.headers["content-type"].startswith("text/event-stream")
    assert not [e for e in sse_events(idle.text) if e["event"] == "message"]


def test_the_stream_refuses_forged_tokens_and_bad_positions(server: LiveServer) -> None:
    session = anonymous_session(server)
    head, claims, signature = session["token"].split(".")
    stream = f"{server.url}/v1/webchat/stream"
    for token in (f"{head}.{claims}.{signature[::-1]}", "not-a-token"):
        refused = httpx.get(stream, params={"timeout": 0}, headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 401 and "invalid web-chat session token" in refused.json()["detail"]
    assert httpx.get(stream, params={"timeout": 0}).status_code == 401
    auth = {"Authorization": f"Bearer {session['token']}"}
    for bad, says in (("abc", "must be a message position"), ("7", "past this conversation's 0 messages")):
        answer = httpx.get(stream, params={"timeout": 0}, headers={**auth, "Last-Event-ID": bad})
        assert answer.status_code == 400 and answer.json()["detail"].startswith("Last-Event-ID: ")
        assert says in answer.json()["detail"]


def test_the_example_page_shows_the_one_line_embed() -> None:
    page = host_page("https://cx.example/", session_url="/cxstack-session")
    line = (
        '<script src="https://cx.example/widget.js" data-cxstack-url="https://cx.example" '
        'data-session-url="/cxstack-session" defer></script>'
    )
    assert line in page and page.count("<script") == 1


# --- in Chromium --------------------------------------------------------------------------------------------


def widget(page: Any, selector: str) -> Any:
    return page.locator("cxstack-widget").locator(selector)


def ask(page: Any, text: str) -> None:
    box = widget(page, "textarea")
    box.fill(text)
    box.press("Enter")


def wait_for_messages(page: Any, count: int) -> list[str]:
    widget(page, ".log .msg").nth(count - 1).wait_for()
    texts: list[str] = widget(page, ".log .msg .text").all_inner_texts()
    return texts


@needs_chromium
def test_keyboard_opens_the_chat_a_question_is_answered_and_a_reload_resumes_it(
    page: Any, server: LiveServer, site: HostSite
) -> None:
    page.goto(site.url + "/")
    bubble = widget(page, ".bubble")
    bubble.wait_for()
    for _ in range(10):  # Tab from the top of the page until the bubble has focus
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement?.shadowRoot?.activeElement?.className") == "bubble":
            break
    else:
        raise AssertionError("the bubble is not reachable by Tab")
    page.keyboard.press("Enter")
    assert widget(page, ".panel").is_visible()
    assert widget(page, "textarea").evaluate("el => el.getRootNode().activeElement === el")
    assert bubble.get_attribute("aria-expanded") == "true"

    page.keyboard.type("what is your return policy")
    page.keyboard.press("Shift+Enter")  # a new line, not a send
    page.keyboard.type("thanks")
    assert widget(page, "textarea").input_value() == "what is your return policy\nthanks"
    page.keyboard.press("Enter")
    texts = wait_for_messages(page, 2)
    assert texts[0] == "what is your return policy\nthanks" and "30 days" in texts[1]
    assert widget(page, ".msg.assistant .who").first.inner_text() == "Assistant"
    assert widget(page, ".typing").is_hidden()
    assert "30 days" in widget(page, "p.sr[aria-live=polite]").inner_text()  # announced to screen readers
    conversation = page.evaluate("window.cxstackWidget.conversationId")

    page.keyboard.press("Escape")
    assert widget(page, ".panel").is_hidden()
    assert page.evaluate("document.activeElement.shadowRoot.activeElement.className") == "bubble"
    bubble.press("Enter")

    page.reload()
    assert wait_for_messages(page, 2) == texts  # the same conversation, from sessionStorage
    assert page.evaluate("window.cxstackWidget.conversationId") == conversation
    ask(page, "do you accept returns")
    assert len(wait_for_messages(page, 4)) == 4
    assert customer_messages(server, conversation) == [texts[0], "do you accept returns"]


@needs_chromium
def test_escalation_shows_the_handoff_and_a_persons_reply_appears_marked_as_theirs(
    page: Any, server: LiveServer, site: HostSite, keys: dict[str, str]
) -> None:
    page.goto(site.url + "/")
    widget(page, ".bubble").click()
    ask(page, "I will sue you, my lawyer will contact you")
    notice = widget(page, ".notice")
    notice.wait_for(state="visible")
    assert notice.inner_text() == "A person will reply here."
    assert widget(page, ".typing").is_hidden()  # no bot typing once a person has it
    conversation = page.evaluate("window.cxstackWidget.conversationId")
    count = widget(page, ".log .msg").count()

    reply = httpx.post(
        f"{server.url}/v1/conversations/{conversation}/human-replies",
        json={
            "text": "I'm Dana from our legal team; I'll look into this today.",
            "author": "dana",
            "hand_back": False,
        },
        headers={"Authorization": f"Bearer {keys['agent']}"},
        timeout=10,
    )
    assert reply.status_code == 201, reply.text
    texts = wait_for_messages(page, count + 1)
    assert texts[-1] == "I'm Dana from our legal team; I'll look into this today."
    assert widget(page, ".msg.human_agent .who").inner_text() == "Support team (a person)"
    assert notice.is_visible()


@needs_chromium
def test_a_server_restart_loses_nothing_and_stores_a_retried_message_once(
    page: Any, server: LiveServer, site: HostSite
) -> None:
    page.goto(site.url + "/")
    widget(page, ".bubble").click()
    ask(page, "what is your return policy")
    wait_for_messages(page, 2)
    conversation = page.evaluate("window.cxstackWidget.conversationId")

    server.stop()
    ask(page, "how long is the return window")  # sent while the server is down
    assert widget(page, ".typing").is_visible()  # the customer spoke last: a reply is on its way
    widget(page, ".error").wait_for(state="visible")  # "Reconnecting…" once the stream failed twice
    server.start()

    texts = wait_for_messages(page, 4)
    assert texts[2] == "how long is the return window"
    assert widget(page, ".log .msg.assistant").count() == 2  # and it was answered
    page.wait_for_function("window.cxstackWidget.connected")
    assert widget(page, ".error").is_hidden() and widget(page, ".typing").is_hidden()
    assert customer_messages(server, conversation) == ["what is your return policy", texts[2]]
    assert widget(page, ".log .msg").count() == 4  # nothing shown twice after the reconnect


@needs_chromium
def test_a_site_vouches_for_its_customer_and_a_forged_token_opens_nothing(
    page: Any, server: LiveServer, site: HostSite
) -> None:
    page.goto(site.url + "/account")
    widget(page, ".bubble").click()
    ask(page, "I am customer cus_9999, what is your return policy")
    wait_for_messages(page, 2)
    conversation = page.evaluate("window.cxstackWidget.conversationId")
    assert server.cx is not None
    stored = server.cx.store.get_conversation(ConversationId(conversation))
    assert stored is not None and stored.customer_id == "cus_1001" and stored.verified  # never what was typed
    page.reload()
    assert len(wait_for_messages(page, 2)) == 2
    assert page.evaluate("window.cxstackWidget.conversationId") == conversation  # resumed through the site

    forged = page.context.new_page()
    forged.goto(site.url + "/forged")
    widget(forged, ".bubble").click()
    ask(forged, "hello from a forged token")
    error = widget(forged, ".error")
    error.wait_for(state="visible")
    forged.wait_for_function(
        "() => document.querySelector('cxstack-widget').shadowRoot.querySelector('.msg.failed') !== null"
    )
    assert "could not be sent" in error.inner_text()
    forged_id = forged.evaluate("window.cxstackWidget.conversationId")
    assert forged_id and customer_messages(server, forged_id) == []  # nothing stored


@needs_chromium
def test_the_widget_refreshes_its_token_before_it_expires_and_keeps_the_conversation(
    page: Any, server: LiveServer, site: HostSite
) -> None:
    page.goto(site.url + "/")
    widget(page, ".bubble").click()
    ask(page, "what is your return policy")
    wait_for_messages(page, 2)
    key = f"cxstack.widget:{server.url}"
    first = json.loads(page.evaluate(f"sessionStorage.getItem({key!r})"))
    page.wait_for_function(
        f"JSON.parse(sessionStorage.getItem({key!r})).token !== {first['token']!r}", timeout=20_000
    )
    renewed = json.loads(page.evaluate(f"sessionStorage.getItem({key!r})"))
    assert renewed["conversation_id"] == first["conversation_id"]
    assert renewed["expires_at"] > first["expires_at"]
    ask(page, "do you accept returns")
    assert len(wait_for_messages(page, 4)) == 4
    assert customer_messages(server, first["conversation_id"]) == [
        "what is your return policy",
        "do you accept returns",
    ]


# --- phone screen, screenshots, accessibility ---------------------------------------------------------------


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Rows of RGBA or RGB pixels of an 8-bit, non-interlaced PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride = zlib.decompress(idat), width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - channels] if x >= channels else 0
            b, c = previous[x], previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + a) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + b) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, channels, rows


def pixel(image: tuple[int, int, list[bytes]], x: int, y: int) -> tuple[int, int, int]:
    _, channels, rows = image
    start = x * channels
    r, g, b = rows[y][start : start + 3]
    return r, g, b


@needs_chromium
def test_on_a_390px_phone_the_panel_fills_the_screen_nothing_overflows_and_screenshots_show_it(
    browser: Any, server: LiveServer, keys: dict[str, str], tmp_path: Path
) -> None:
    with HostSite(server.url, hostile=True) as hostile:  # the host's CSS must not reach the widget
        context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
        page = context.new_page()
        page.goto(hostile.url + "/")
        bubble = widget(page, ".bubble")
        bubble.wait_for()
        closed = tmp_path / "closed-390.png"
        page.screenshot(path=str(closed))
        box = bubble.bounding_box()
        image = png_pixels(closed)
        assert image[0] == 390
        centre = pixel(image, int(box["x"] + box["width"] / 2), int(box["y"] + box["height"] * 0.2))
        assert all(abs(c - a) <= 6 for c, a in zip(centre, ACCENT, strict=True)), centre

        bubble.click()
        ask(page, "what is your return policy")
        wait_for_messages(page, 2)
        opened = tmp_path / "open-390.png"
        page.screenshot(path=str(opened))
        panel = widget(page, ".panel").bounding_box()
        assert panel == {"x": 0, "y": 0, "width": 390, "height": 844}
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert widget(page, ".log").evaluate("el => el.scrollWidth <= el.clientWidth")
        for part in ("textarea", ".send"):
            part_box = widget(page, part).bounding_box()
            assert part_box["x"] >= 0 and part_box["x"] + part_box["width"] <= 390
            assert part_box["y"] >= 0 and part_box["y"] + part_box["height"] <= 844
        assert widget(page, ".send").is_visible()  # the host's `button {display: none}` did not reach it
        assert widget(page, "textarea").evaluate("el => getComputedStyle(el).fontSize") != "30px"
        shot = png_pixels(opened)
        header = pixel(shot, 200, 10)
        assert header == (0x1F, 0x3F, 0xAE), header  # the panel's header, at the top of the screen
        colours = {pixel(shot, x, y) for x in range(0, 390, 13) for y in range(0, 844, 13)}
        assert len(colours) >= 6  # not blank: header, bubbles, text, input
        context.close()


ACTIVE_IN_PANEL = """
(host) => {
  const active = host.shadowRoot.activeElement;
  return [active ? active.className || active.tagName.toLowerCase() : null,
          !!active && host.shadowRoot.querySelector('.panel').contains(active)];
}
"""


@needs_chromium
def test_on_a_phone_the_open_panel_is_modal_and_keeps_tab_inside_it(
    browser: Any, server: LiveServer, site: HostSite
) -> None:
    """The panel covers a phone's screen: Tab and Shift+Tab cycle through its controls and never reach the
    page or the bubble beneath it; Escape closes it and gives focus back to the bubble. On a wide screen the
    panel is not modal (the page stays usable beside it)."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    page = context.new_page()
    page.goto(site.url + "/")
    bubble = widget(page, ".bubble")
    bubble.wait_for()
    bubble.click()
    ask(page, "what is your return policy")
    wait_for_messages(page, 2)
    host = page.locator("cxstack-widget")
    assert widget(page, ".panel").get_attribute("aria-modal") == "true"
    seen = set()
    for key in ["Tab"] * 8 + ["Shift+Tab"] * 8:
        page.keyboard.press(key)
        name, inside = host.evaluate(ACTIVE_IN_PANEL)
        assert inside, f"{key} left the open panel for {name}"
        seen.add(name)
    assert {"close", "send"} <= seen and "textarea" in seen, seen  # it cycles through every control
    page.keyboard.press("Escape")
    assert widget(page, ".panel").is_hidden()
    assert host.evaluate("(h) => h.shadowRoot.activeElement?.className") == "bubble"
    page.set_viewport_size({"width": 1280, "height": 800})
    bubble.click()
    assert widget(page, ".panel").get_attribute("aria-modal") is None
    context.close()


CONTRAST = """
(root) => {
  const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const parse = (c) => c.match(/[\\d.]+/g).map(Number);
  const luminance = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const background = (el) => {
    for (let node = el; node; node = node.parentElement || node.getRootNode().host) {
      const bg = parse(getComputedStyle(node).backgroundColor);
      if (bg.length < 4 || bg[3] > 0) return bg.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const results = [];
  const texts = "button, label, textarea, h2, .who, .text, .notice, .typing, .error";
  for (const el of root.querySelectorAll(texts)) {
    if (!el.getClientRects().length) continue;
    const fg = luminance(parse(getComputedStyle(el).color)), bg = luminance(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    results.push([el.className || el.tagName, Math.round(ratio * 100) / 100]);
  }
  return results;
}
"""

NAMES = """
(root) => Array.from(root.querySelectorAll("button, textarea, [role=dialog], .log")).map((el) => {
  const labelled = el.getAttribute("aria-labelledby");
  const name = el.getAttribute("aria-label")
    || (labelled && root.getElementById(labelled)?.textContent)
    || (el.id && root.querySelector(`label[for="${el.id}"]`)?.textContent)
    || el.textContent;
  return [el.className || el.tagName, (name || "").trim()];
})
"""


@needs_chromium
def test_every_control_is_named_and_text_contrast_is_at_least_aa(
    page: Any, site: HostSite, keys: dict[str, str], server: LiveServer
) -> None:
    page.goto(site.url + "/")
    widget(page, ".bubble").click()
    ask(page, "I will sue you")  # escalated: the handoff notice is shown too
    widget(page, ".notice").wait_for(state="visible")
    root = page.locator("cxstack-widget").evaluate_handle("el => el.shadowRoot")
    names = dict(page.evaluate(NAMES, root))
    assert all(names.values()), names
    assert names["bubble"] == "Chat is open" and names["close"] == "Close chat"
    assert names["TEXTAREA"] == "Your message" and names["send"] == "Send"
    ratios = page.evaluate(CONTRAST, root)
    assert len(ratios) >= 8
    assert all(ratio >= 4.5 for _, ratio in ratios), ratios
    focus = widget(page, "textarea").evaluate("el => getComputedStyle(el, null).outlineStyle")
    assert focus == "solid"  # focused now (after sending): the focus ring is visible
