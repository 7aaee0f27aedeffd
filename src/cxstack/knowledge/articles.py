"""Long human-written articles (Markdown, HTML, plain text) read into blocks of text, boilerplate left out.

A block is one paragraph or list item as plain text, with where it came from: its line range in the file,
its character offsets when the text maps onto the file exactly (Markdown and plain text), and the path of
headings above it. What is not article text is dropped: code, scripts and styles; navigation, headers,
footers, sidebars, cookie banners and share/feedback boxes; link-dense blocks (menus, tables of contents);
sections such as "Related articles" or "In this article"; lines such as "Was this article helpful?".

Files are decoded as UTF-8 (with or without a BOM) or UTF-16 with a BOM; anything else is refused with the
file's name, as is a file over `MAX_BYTES` (checked before it is read) and an HTML page that is mostly
navigation.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 50 * 1024 * 1024
KINDS = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".txt": "text",
    ".text": "text",
}
# A page whose article text is under this share of its words, and short, is a navigation page.
NAV_SHARE = 0.6
NAV_MIN_WORDS = 150
LINK_DENSITY = 0.5  # a block with at least this share of its characters in links is a menu or a contents list

_BOILERPLATE_LINE = re.compile(
    r"was this (?:article|page|answer|information) (?:helpful|useful)|did this (?:article|answer|page) help|"
    r"we use cookies|(?:accept|reject|manage) (?:all )?cookies|cookie (?:settings|policy|preferences)|"
    r"all rights reserved|©|\(c\) \d{4}|skip to (?:main )?content|back to top|^last (?:updated|modified)\b|"
    r"subscribe to our newsletter|^still need help|^share (?:this|on)\b|^print this|"
    r"^(?:yes|no)\s*/\s*(?:yes|no)$|^(?:home|menu|search)\s*$|^contact (?:us|support)\.?$",
    re.IGNORECASE,
)
_BOILERPLATE_LINE_MAX_WORDS = 25
_BOILERPLATE_HEADING = re.compile(
    r"^(?:table of contents|contents|in this (?:article|section|page)|on this page|"
    r"related (?:articles|topics|links|questions|posts)|see also|was this (?:article|page) helpful\??|"
    r"share(?: this(?: article| page)?)?|recently viewed(?: articles)?|popular articles|more help|comments?)"
    r"\s*:?$",
    re.IGNORECASE,
)
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*\r?$\n?", re.DOTALL | re.MULTILINE)
_WORDS = re.compile(r"\w+")


class ArticleError(Exception):
    """A file that cannot be ingested, with its name in the message."""


@dataclass(frozen=True, slots=True)
class Block:
    text: str  # plain text, whitespace collapsed
    headings: tuple[str, ...]
    line_start: int  # 1-based, inclusive
    line_end: int
    start: int | None = None  # character offset of `raw` in the decoded file, when known exactly
    raw: str = ""  # the source text the block was read from (from `line_start`), to locate its sentences
    item: bool = False  # a list item


@dataclass(slots=True)
class Article:
    path: Path
    kind: str  # markdown | html | text
    blocks: list[Block]
    title: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # Markdown front matter (subject, owner, tags)
    dropped: int = 0  # blocks dropped as boilerplate
    warnings: list[str] = field(default_factory=list)


def words(text: str) -> int:
    return len(_WORDS.findall(text))


def _collapse(text: str) -> str:
    return " ".join(text.split())


def is_boilerplate(text: str) -> bool:
    return words(text) <= _BOILERPLATE_LINE_MAX_WORDS and bool(_BOILERPLATE_LINE.search(text.strip()))


def decode(data: bytes, name: str) -> str:
    """UTF-8 (a BOM is dropped), or UTF-16 with a BOM; anything else is an `ArticleError` naming the file."""
    try:
        if data.startswith(codecs.BOM_UTF8):
            text = data[len(codecs.BOM_UTF8) :].decode("utf-8")
        elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            text = data.decode("utf-16")
        else:
            text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArticleError(
            f"{name}: not UTF-8 or UTF-16 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from exc
    if "\x00" in text:
        raise ArticleError(f"{name}: contains NUL characters: a binary file, or text in an unknown encoding")
    return text


def _size(count: int) -> str:
    megabytes = count / 1024 / 1024
    return f"{count} bytes" if megabytes < 1 else f"{megabytes:.1f}".removesuffix(".0") + " MB"


def read_article(path: Path, *, max_bytes: int = MAX_BYTES, name: str | None = None) -> Article:
    label = name or str(path)
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise ArticleError(f"{label}: unsupported file type {path.suffix or '(none)'}")
    size = path.stat().st_size  # before reading: a file over the limit is never read whole
    if size > max_bytes:
        raise ArticleError(
            f"{label}: {_size(size)} is over the {_size(max_bytes)} limit for one article; split it"
        )
    text = decode(path.read_bytes(), label)
    if kind == "markdown":
        article = parse_markdown(text, path)
    elif kind == "html":
        article = parse_html(text, path, label)
    else:
        article = parse_text(text, path)
    return article


# --- Markdown -----------------------------------------------------------------------------------------------


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    return starts


def _inline_text(token: Any) -> tuple[str, int]:
    """Plain text of an inline token and how many of its characters are link text."""
    parts: list[str] = []
    linked = 0
    in_link = 0
    for child in token.children or []:
        if child.type == "link_open":
            in_link += 1
        elif child.type == "link_close":
            in_link -= 1
        elif child.type in ("text", "code_inline"):
            parts.append(child.content)
            if in_link:
                linked += len(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
    return _collapse("".join(parts)), linked


def parse_markdown(text: str, path: Path) -> Article:
    from markdown_it import MarkdownIt

    meta: dict[str, Any] = {}
    body_start = 0
    match = _FRONT_MATTER.match(text)
    if match is not None:
        try:
            loaded = yaml.safe_load(match.group(1))
        except yaml.YAMLError:
            loaded = None
        if isinstance(loaded, dict):
            meta = {str(k): v for k, v in loaded.items()}
            body_start = match.end()
    first_line = text.count("\n", 0, body_start)
    body = text[body_start:]
    starts = _line_starts(text)
    tokens = MarkdownIt("commonmark", {"html": True}).enable("table").parse(body)
    article = Article(path=path, kind="markdown", blocks=[], meta=meta)
    if isinstance(meta.get("title"), str):
        article.title = meta["title"].strip()
    headings: list[tuple[int, str]] = []
    skip_level: int | None = None  # inside a boilerplate section ("Related articles") down to this level
    tables = 0
    items = 0  # depth of list items around the token
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.type == "list_item_open":
            items += 1
        elif token.type == "list_item_close":
            items -= 1
        if token.type == "heading_open":
            level = int(token.tag[1])
            title, _ = _inline_text(tokens[i + 1])
            if skip_level is not None and level <= skip_level:
                skip_level = None
            if _BOILERPLATE_HEADING.match(title):
                skip_level = level
                article.dropped += 1
            headings = [(lv, t) for lv, t in headings if lv < level] + [(level, title)]
            if level == 1 and article.title is None:
                article.title = title
            i += 3
            continue
        if token.type == "table_open":
            tables += 1
        if token.type == "inline" and token.map is not None and tokens[i - 1].type == "paragraph_open":
            plain, linked = _inline_text(token)
            a, b = token.map[0] + first_line, token.map[1] + first_line
            if skip_level is not None:
                article.dropped += 1
            elif not plain:
                pass
            elif linked >= LINK_DENSITY * len(plain) or is_boilerplate(plain):
                article.dropped += 1
            else:
                raw = text[starts[a] : starts[min(b, len(starts) - 1)]]
                article.blocks.append(
                    Block(
                        text=plain,
                        headings=tuple(t for _, t in headings),
                        line_start=a + 1,
                        line_end=b,
                        start=starts[a],
                        raw=raw,
                        item=items > 0,
                    )
                )
        i += 1
    if tables:
        article.warnings.append(f"{tables} table(s) left out: write their rows as sentences to ingest them")
    return article


# --- plain text ---------------------------------------------------------------------------------------------

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")
_UNDERLINE = re.compile(r"^\s*(=+|-+)\s*$")


def parse_text(text: str, path: Path) -> Article:
    """Paragraphs are separated by blank lines; a short one-line paragraph without end punctuation that is
    followed by more text, or a line underlined with === or ---, is a heading."""
    article = Article(path=path, kind="text", blocks=[])
    pieces: list[tuple[int, str]] = []
    position = 0
    for match in _PARAGRAPH_BREAK.finditer(text):
        pieces.append((position, text[position : match.start()]))
        position = match.end()
    pieces.append((position, text[position:]))
    pieces = [(s, p) for s, p in pieces if p.strip()]
    headings: list[str] = []
    for index, (start, piece) in enumerate(pieces):
        lines = piece.strip("\n").splitlines()
        underlined = len(lines) == 2 and _UNDERLINE.match(lines[1]) is not None
        plain = _collapse(lines[0] if underlined else piece)
        single = len(lines) == 1 and words(plain) <= 10 and not plain.endswith((".", "!", "?", ":", ";", ","))
        if underlined or (single and index + 1 < len(pieces)):
            level = 1 if (underlined and lines[1].strip().startswith("=")) or index == 0 else 2
            headings = [*headings[: level - 1], plain]
            if level == 1 and article.title is None:
                article.title = plain
            continue
        if is_boilerplate(plain):
            article.dropped += 1
            continue
        line = text.count("\n", 0, start) + 1
        article.blocks.append(
            Block(
                text=plain,
                headings=tuple(headings),
                line_start=line,
                line_end=line + piece.rstrip("\n").count("\n"),
                start=start,
                raw=piece,
            )
        )
    return article


# --- HTML ---------------------------------------------------------------------------------------------------

_DROP_TAGS = (
    "script",
    "style",
    "noscript",
    "template",
    "svg",
    "canvas",
    "iframe",
    "object",
    "form",
    "button",
    "select",
    "input",
    "textarea",
    "code",
    "pre",
    "head",
)
_CHROME_TAGS = ("nav", "aside", "footer", "header", "dialog", "menu")
_CHROME_ROLES = frozenset(
    {"navigation", "banner", "contentinfo", "complementary", "search", "dialog", "menu"}
)
_CHROME_WORDS = frozenset(
    {
        "cookie",
        "cookies",
        "consent",
        "gdpr",
        "banner",
        "breadcrumb",
        "breadcrumbs",
        "navbar",
        "nav",
        "navigation",
        "menu",
        "sidebar",
        "footer",
        "toc",
        "share",
        "sharing",
        "social",
        "feedback",
        "helpful",
        "related",
        "newsletter",
        "skip",
        "subscribe",
        "promo",
        "advert",
        "ads",
        "masthead",
        "topbar",
        "popup",
        "modal",
    }
)
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_BLOCKS = frozenset(
    {
        "p",
        "div",
        "section",
        "article",
        "main",
        "li",
        "ul",
        "ol",
        "dl",
        "dt",
        "dd",
        "blockquote",
        "figure",
        "figcaption",
        "details",
        "summary",
        "body",
        "html",
        "address",
        "hr",
        "br",
        "table",
    }
)


def _is_chrome(tag: Any) -> bool:
    if tag.name in _CHROME_TAGS:
        # An article's own <header> holds its title: keep a header with a heading in it.
        return not (tag.name == "header" and tag.find(list(_HEADINGS)) is not None)
    if str(tag.get("role", "")).lower() in _CHROME_ROLES:
        return True
    if str(tag.get("aria-hidden", "")).lower() == "true" or tag.has_attr("hidden"):
        return True
    names = " ".join([str(tag.get("id", "")), *[str(c) for c in tag.get("class", []) or []]]).lower()
    return bool(set(re.split(r"[^a-z]+", names)) & _CHROME_WORDS)


def parse_html(text: str, path: Path, label: str) -> Article:
    from bs4 import BeautifulSoup, Comment, Tag
    from bs4.element import NavigableString

    soup = BeautifulSoup(text, "html.parser")
    article = Article(path=path, kind="html", blocks=[])
    title_tag = soup.find("title")
    if isinstance(title_tag, Tag) and title_tag.get_text(strip=True):
        article.title = _collapse(title_tag.get_text())
    for tag in soup.find_all(_DROP_TAGS):
        if isinstance(tag, Tag):
            tag.decompose()
    page_words = words(soup.get_text(" "))
    main = soup.find("main") or soup.find("article") or soup.find(True, attrs={"role": "main"})
    root: Any = main or soup.body or soup
    for tag in list(root.find_all(True)):
        if isinstance(tag, Tag) and not tag.decomposed and _is_chrome(tag):
            article.dropped += 1
            tag.decompose()
    headings: list[tuple[int, str]] = []
    skip_level: list[int | None] = [None]
    tables = 0

    def emit(pieces: list[tuple[str, bool]], line: int, item: bool = False) -> None:
        raw = "".join(p for p, _ in pieces)
        plain = _collapse(raw)
        if not plain:
            return
        linked = sum(len(_collapse(p)) for p, in_link in pieces if in_link)
        if skip_level[0] is not None or linked >= LINK_DENSITY * len(plain) or is_boilerplate(plain):
            article.dropped += 1
            return
        article.blocks.append(
            Block(
                text=plain,
                headings=tuple(t for _, t in headings),
                line_start=line,
                line_end=line + raw.strip().count("\n"),
                raw=raw.strip(),
                item=item,
            )
        )

    def walk(element: Any) -> None:
        nonlocal headings, tables
        run: list[tuple[str, bool]] = []
        line = element.sourceline or 1
        for child in element.children:
            if isinstance(child, Comment):
                continue
            if isinstance(child, NavigableString):
                if not run and not str(child).strip():
                    continue
                if not run:
                    line = (element.sourceline or 1) if not child.strip() else _string_line(child, element)
                run.append((str(child), False))
                continue
            if not isinstance(child, Tag):
                continue
            if child.name in _HEADINGS:
                emit(run, line, element.name == "li")
                run = []
                level = int(child.name[1])
                title = _collapse(child.get_text(" "))
                if skip_level[0] is not None and level <= skip_level[0]:
                    skip_level[0] = None
                if _BOILERPLATE_HEADING.match(title):
                    skip_level[0] = level
                    article.dropped += 1
                if title:
                    headings = [(lv, t) for lv, t in headings if lv < level] + [(level, title)]
                continue
            if child.name == "table":
                emit(run, line, element.name == "li")
                run = []
                tables += 1
                continue
            if child.name in _BLOCKS:
                emit(run, line, element.name == "li")
                run = []
                walk(child)
                continue
            if not run:
                line = child.sourceline or line
            run.append((child.get_text(), child.name == "a" or child.find("a") is not None))
        emit(run, line, element.name == "li")

    walk(root)
    if tables:
        article.warnings.append(f"{tables} table(s) left out: write their rows as sentences to ingest them")
    kept = sum(words(b.text) for b in article.blocks)
    if kept == 0:
        raise ArticleError(f"{label}: no article text found (only navigation, links or boilerplate)")
    # A page that marks its main content (<main>, <article>) says where the article is; otherwise a page
    # whose words are mostly menus and links is a navigation page, not an article.
    if main is None and kept < (1 - NAV_SHARE) * page_words and kept < NAV_MIN_WORDS:
        raise ArticleError(
            f"{label}: mostly navigation: only {kept} of its {page_words} words are article text; "
            "ingest the article's own page, or save its main text"
        )
    return article


def _string_line(string: Any, parent: Any) -> int:
    """The line a text node starts on: its parent's line plus the newlines of what precedes it there."""
    line = int(parent.sourceline or 1)
    for sibling in parent.children:
        if sibling is string:
            break
        line += str(sibling).count("\n")
    text = str(string)
    return line + text[: len(text) - len(text.lstrip())].count("\n")
