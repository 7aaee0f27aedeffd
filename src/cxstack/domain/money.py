"""Money: an exact amount in one currency, and the one reader of the amounts customers write.

Pure and importable by every layer (Babel only reads its packaged locale data). Strategy, slots, actions and
customer imports all read numbers here, so a figure is never read two ways in two places.

What counts as money in free text (`find_money`): a number attached to a currency marker — a symbol (`$`,
`€`, `£`, `US$`, any symbol of the workspace locale, or any other currency sign), an ISO 4217 code (`USD`,
`eur`) or a currency word (dollars, bucks, euros, pounds, quid, yen, the workspace currency's name). An order
number, a phone number, a date or a ZIP code carries no marker and is never money. A bare number is money only
as the direct answer to the amount question (`parse_money_answer`), and then in the workspace currency.

Whatever could be read two ways is refused with a reason (`Refusal`), never guessed:

  "fifty dollars", "a few bucks"                      amount_in_words
  "2k", "$1,5k", "€2 million", "5 grand"              shorthand
  "$10-20", "10 to 20 dollars", "between $10 and $20" range
  "$1.500" in en_US, "1,500 €" in de_DE               ambiguous_separator
  "1,2,3", "$1.50.00"                                 malformed_number
  "$5.123" for USD, "¥100.5" for JPY                  too_many_decimals
  "-$5", "minus 5 euros"                              negative
  "€50" in a USD workspace, "₽500"                    other_currency
  "$50 EUR"                                           conflicting_currency
  "I paid $80, refund $20" for one amount slot        several_amounts
  a slot answer that is not one number                not_an_amount

How the digits are read (`read_number`, shared by money, counts and CSV figures): separators are `.`, `,`,
an apostrophe and spaces (including NBSP and narrow NBSP). When two different separators appear, the last one
is the decimal separator and the other one groups thousands ("1.500,00" and "1,500.50"). A separator that
appears more than once only groups ("1.500.000"). A single `.` or `,` followed by exactly three digits groups
only when it is the locale's grouping symbol ("1,500" in en_US); otherwise it is ambiguous and refused —
except for a currency with three decimals (KWD, BHD...), where the locale's decimal symbol is read as decimal
("KWD1.500" in en_US is 1.5), so that what `format_money` writes always reads back. Groups must be of three
digits (or follow the locale's grouping, e.g. "1,50,000" in en_IN). In free text, digits separated by a space
are one number only when the locale groups with spaces or the number ends in a decimal part ("1 500,00"),
since "$20 100 days" is not twenty thousand one hundred dollars.

Why not price-parser: it guesses separators for one price string scraped from a web page, and reads "$1.500"
in en_US as 1500, "$5.123" as 5123, "-$5" as 5, "1,5k" as 1.5 and "$10-20" as 10 — each a misreading this
module must refuse. The rules above run on Babel's CLDR data (symbols, grouping, currency precision) instead.

In conversation state a money value is JSON: `{"amount": "1500.00", "currency": "USD", "said": "$1,500"}` —
the amount as a decimal string at the currency's precision, the ISO code, and the customer's own words it was
read from (`money_to_json` / `money_from_json`).
"""

from __future__ import annotations

import enum
import re
import unicodedata
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.numbers import (
    format_currency,
    get_currency_name,
    get_currency_precision,
    get_currency_symbol,
    get_decimal_symbol,
    get_group_symbol,
    is_currency,
)

__all__ = [
    "Money",
    "MoneyMention",
    "NumberMention",
    "Refusal",
    "find_money",
    "find_numbers",
    "format_money",
    "invalid_currency",
    "invalid_locale",
    "money_from_json",
    "money_to_json",
    "parse_money_answer",
    "read_number",
]


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount in one currency (ISO 4217). Never a float."""

    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.amount, Decimal) or not self.amount.is_finite():
            raise ValueError(f"money needs a finite Decimal amount, got {self.amount!r}")
        if invalid_currency(self.currency):
            raise ValueError(f"unknown currency {self.currency!r}")


class Refusal(enum.StrEnum):
    """Why a mention of money was not read as an amount. The customer is asked again, with this reason."""

    WORDS = "amount_in_words"
    SHORTHAND = "shorthand"
    RANGE = "range"
    AMBIGUOUS_SEPARATOR = "ambiguous_separator"
    MALFORMED = "malformed_number"
    TOO_MANY_DECIMALS = "too_many_decimals"
    NEGATIVE = "negative"
    OTHER_CURRENCY = "other_currency"
    CONFLICTING_CURRENCY = "conflicting_currency"
    SEVERAL_AMOUNTS = "several_amounts"
    NOT_AN_AMOUNT = "not_an_amount"


@dataclass(frozen=True, slots=True)
class MoneyMention:
    """One place in a text that speaks of money: read exactly (`money`) or refused (`refusal`), never both."""

    text: str  # the customer's words, as written
    span: tuple[int, int]
    money: Money | None = None
    refusal: Refusal | None = None
    currency: str | None = None  # the currency the words named, when they named one (also when refused)

    def __post_init__(self) -> None:
        if (self.money is None) == (self.refusal is None):
            raise ValueError("a mention is either read (money) or refused (refusal)")

    @property
    def ok(self) -> bool:
        return self.money is not None


# --- validation of workspace settings -----------------------------------------------------------------------


def invalid_currency(code: str) -> str | None:
    """Why `code` is not a usable ISO 4217 currency, or None when it is."""
    if not isinstance(code, str) or not re.fullmatch(r"[A-Z]{3}", code):
        return f"`{code}` is not an ISO 4217 code (three capital letters, such as USD, EUR or GBP)"
    if not is_currency(code) or code == "XXX":
        return f"`{code}` is not a known ISO 4217 currency"
    return None


def invalid_locale(name: str) -> str | None:
    """Why `name` is not a locale Babel knows (written like en_US or de_DE), or None when it is."""
    try:
        Locale.parse(name)
    except (UnknownLocaleError, ValueError, TypeError) as exc:
        return f"`{name}` is not a known locale ({exc})"
    return None


# --- formatting ---------------------------------------------------------------------------------------------


def format_money(money: Money, locale: str, *, whole_units: bool = False) -> str:
    """`money` as a customer of `locale` writes it ("$1,500.00", "1.500,00 €", "£12,000" with `whole_units`).

    Never rounds silently: an amount with more decimals than its currency shows every one of them.
    """
    if whole_units:
        pattern = Locale.parse(locale).currency_formats["standard"].pattern
        return format_currency(
            money.amount.to_integral_value(),
            money.currency,
            format=re.sub(r"\.[0#]+", "", pattern),
            locale=locale,
            currency_digits=False,
            numbering_system="latn",
        )
    return format_currency(
        money.amount, money.currency, locale=locale, decimal_quantization=False, numbering_system="latn"
    )


# --- JSON form (conversation state, traces) -----------------------------------------------------------------


def money_to_json(money: Money, said: str | None = None) -> dict[str, str]:
    """`{"amount": "1500.00", "currency": "USD"[, "said": "$1,500"]}`: exact, JSON-safe, readable."""
    places = get_currency_precision(money.currency)
    amount = money.amount
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent < places:
        amount = amount.quantize(Decimal(1).scaleb(-places))
    data = {"amount": str(amount), "currency": money.currency}
    if said is not None:
        data["said"] = said
    return data


def money_from_json(value: Any) -> Money | None:
    """The `Money` in a JSON form made by `money_to_json`, or None for anything else."""
    if not isinstance(value, Mapping):
        return None
    amount, currency = value.get("amount"), value.get("currency")
    if not isinstance(amount, str) or not isinstance(currency, str):
        return None
    try:
        return Money(Decimal(amount), currency)
    except (InvalidOperation, ValueError):
        return None


# --- reading digits -----------------------------------------------------------------------------------------

# One character for one character, so spans found in the normalised text are spans of the original.
_NORMALISE = str.maketrans(
    {
        "\u00a0": " ",  # no-break space
        "\u202f": " ",  # narrow no-break space (fr_FR grouping)
        "\u2009": " ",  # thin space
        "\u2007": " ",  # figure space
        "\u200e": " ",  # left-to-right mark
        "\u200f": " ",  # right-to-left mark
        "\t": " ",
        "\n": " ",
        "\r": " ",
        "\u2019": "'",  # right single quotation mark (de_CH grouping)
        "\u02bc": "'",
        "\u2212": "-",  # minus sign
        "\u2013": "-",  # en dash
        "\u2014": "-",  # em dash
        "\u2010": "-",
        "\u2011": "-",
    }
)


def _normalise(text: str) -> str:
    return text.translate(_NORMALISE)


_SEPARATORS = ".,' "


@dataclass(frozen=True, slots=True)
class _NumberStyle:
    group: str  # the locale's grouping symbol, normalised ("," / "." / "'" / " ")
    decimal: str  # the locale's decimal symbol ("." / ",")
    grouping: tuple[int, int]  # primary and secondary group sizes: (3, 3), or (3, 2) for en_IN


@lru_cache(maxsize=64)
def _style(locale: str) -> _NumberStyle:
    parsed = Locale.parse(locale)
    group = _normalise(get_group_symbol(parsed, numbering_system="latn"))
    primary, secondary = parsed.decimal_formats[None].grouping
    decimal = _normalise(get_decimal_symbol(parsed, numbering_system="latn"))
    return _NumberStyle(group=group, decimal=decimal, grouping=(primary, secondary))


def _valid_groups(groups: list[str], grouping: tuple[int, int]) -> bool:
    head, *rest = groups
    if not rest:
        return True
    if not head or head.startswith("0"):
        return False
    if len(head) <= 3 and all(len(g) == 3 for g in rest):
        return True
    primary, secondary = grouping
    return (
        len(rest[-1]) == primary
        and all(len(g) == secondary for g in rest[:-1])
        and 1 <= len(head) <= secondary
    )


def read_number(
    text: str,
    *,
    locale: str = "en_US",
    max_decimals: int | None = None,
    spaces_group: bool = True,
) -> Decimal | Refusal:
    """One number written with digits and separators ("1,500.50", "1.500,00", "1 500", "1'500") — the rules
    are in the module docstring. `max_decimals` refuses more decimals than a currency has;
    `spaces_group=False` refuses digits grouped by spaces unless the number ends in a decimal part."""
    token = _normalise(text).strip()
    if not token or not token[0].isdigit() or not token[-1].isdigit():
        return Refusal.MALFORMED
    if any(not (c.isdigit() or c in _SEPARATORS) for c in token) or not token.isascii():
        return Refusal.MALFORMED
    style = _style(locale)
    parts = re.split(r"([.,' ])", token)
    groups, separators = parts[0::2], parts[1::2]
    decimal_separator: str | None = None
    if separators:
        distinct = set(separators)
        last = separators[-1]
        if len(distinct) == 1:
            if last in ".," and len(separators) == 1:
                tail, head = groups[-1], groups[0]
                three_decimals = last == style.decimal and max_decimals is not None and max_decimals >= 3
                if len(tail) != 3 or head == "0" or three_decimals:
                    decimal_separator = last  # "1.500 KWD" in en_US: the currency has three decimals
                elif last != style.group:
                    return Refusal.AMBIGUOUS_SEPARATOR
        elif len(distinct) == 2 and last in ".," and separators.count(last) == 1:
            decimal_separator = last
        else:
            return Refusal.MALFORMED
    integer_groups = groups[:-1] if decimal_separator else groups
    fraction = groups[-1] if decimal_separator else ""
    if not all(g.isdigit() for g in integer_groups) or not _valid_groups(integer_groups, style.grouping):
        return Refusal.MALFORMED
    grouped_by_space = " " in separators
    if grouped_by_space and not spaces_group and decimal_separator is None and style.group != " ":
        return Refusal.AMBIGUOUS_SEPARATOR
    if max_decimals is not None and len(fraction) > max_decimals:
        return Refusal.TOO_MANY_DECIMALS
    digits = "".join(integer_groups) + (f".{fraction}" if fraction else "")
    return Decimal(digits)


# --- currency markers ---------------------------------------------------------------------------------------

# Words for currencies. A family word ("dollars") means the workspace currency when that currency belongs to
# the family (an AUD shop's "50 dollars" are Australian dollars), else the family's usual currency.
_WORD_FAMILIES: dict[str, tuple[str, str]] = {
    "dollars": ("Dollar", "USD"),
    "dollar": ("Dollar", "USD"),
    "bucks": ("Dollar", "USD"),
    "buck": ("Dollar", "USD"),
    "euros": ("Euro", "EUR"),
    "euro": ("Euro", "EUR"),
    "pounds": ("Pound", "GBP"),
    "pound": ("Pound", "GBP"),
    "quid": ("Pound", "GBP"),
    "sterling": ("Pound", "GBP"),
    "yen": ("Yen", "JPY"),
    "francs": ("Franc", "CHF"),
    "franc": ("Franc", "CHF"),
    "rupees": ("Rupee", "INR"),
    "rupee": ("Rupee", "INR"),
}
# "$" and "£" alone name a family, like the words above.
_SYMBOL_FAMILIES = {"$": "Dollar", "£": "Pound"}
# Written by customers everywhere, whatever the locale data says.
_EXTRA_SYMBOLS = {"US$": "USD", "U$S": "USD", "USD$": "USD"}
# Lower-case codes are read only for major currencies: "all 3", "try 5", "top 10" are not Albanian lek,
# Turkish lira or Tongan paʻanga.
_LOWERCASE_CODES = frozenset(
    {"usd", "eur", "gbp", "cad", "aud", "chf", "jpy", "inr", "nzd", "sek", "nok", "dkk"}
)
_MULTIPLIERS = "thousand|million|billion|trillion|grand|k|bn|mn|mil"
_NUMBER_WORDS = (
    "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|"
    "seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand|"
    "million|billion|dozen|couple|few|several|half"
)


@lru_cache(maxsize=1)
def _currency_signs() -> str:
    """Every currency sign in the Basic Multilingual Plane ($, €, ₽, ₺, ...): Unicode category Sc."""
    return "".join(chr(c) for c in range(0x10000) if unicodedata.category(chr(c)) == "Sc")


@dataclass(frozen=True, slots=True)
class _Terms:
    """How one workspace (currency + locale) writes money; built once per pair."""

    currency: str
    locale: str
    precision: int
    symbol_first: bool  # "$5" rather than "5 $" in this locale
    symbols: dict[str, str | None]  # normalised symbol -> ISO code (None: a currency we cannot name)
    names: dict[str, str]  # lower-case currency name -> ISO code (the workspace currency's names)
    markers: re.Pattern[str]


def _family_currency(family: str, default: str, currency: str) -> str:
    return currency if family in get_currency_name(currency, locale="en") else default


@lru_cache(maxsize=64)
def _locale_symbols(locale: str) -> dict[str, str | None]:
    """Symbol -> currency for the symbols `locale` writes. A symbol made of letters only ("kr", "Ft") reads as
    a word too often; only the workspace currency's own is kept (in `_terms`)."""
    table: dict[str, str | None] = {}
    for code, raw in sorted(Locale.parse(locale).currency_symbols.items()):
        symbol = _normalise(raw).strip()
        if symbol and symbol != code and not symbol.isalpha() and code != "XXX" and is_currency(code):
            table[symbol] = code
    return table


@lru_cache(maxsize=64)
def _terms(currency: str, locale: str) -> _Terms:
    problem = invalid_currency(currency) or invalid_locale(locale)
    if problem:
        raise ValueError(problem)
    parsed = Locale.parse(locale)
    # English symbols first, then the workspace locale's, then the workspace currency's own: later wins.
    symbols: dict[str, str | None] = {**_EXTRA_SYMBOLS, **_locale_symbols("en"), **_locale_symbols(locale)}
    for symbol, family in _SYMBOL_FAMILIES.items():
        if family in get_currency_name(currency, locale="en"):
            symbols[symbol] = currency
    for where in ("en", locale):
        own = _normalise(get_currency_symbol(currency, where)).strip()
        if own and own != currency:
            symbols[own] = currency
    names: dict[str, str] = {}
    for where in ("en", locale):
        for count in (1, 2):
            name = _normalise(get_currency_name(currency, count=count, locale=where)).strip().lower()
            if name and name != currency.lower():
                names[name] = currency
    symbol_alternatives = []
    for symbol in sorted(symbols, key=len, reverse=True):
        piece = re.escape(symbol)
        if symbol[0].isalpha():
            piece = r"(?<![^\W\d_])" + piece
        if symbol[-1].isalpha():
            piece += r"(?![^\W\d_])"
        symbol_alternatives.append(piece)
    words = sorted({*names, *_WORD_FAMILIES}, key=len, reverse=True)
    signs = re.escape(_currency_signs())
    markers = re.compile(
        rf"(?P<symbol>{'|'.join(symbol_alternatives)})"
        rf"|(?P<word>(?i:(?<![^\W\d_])(?:{'|'.join(re.escape(w) for w in words)})(?![^\W\d_])))"
        r"|(?P<code>(?<![^\W\d_])[A-Za-z]{3}(?![^\W\d_]))"
        rf"|(?P<sign>[{signs}]+)"
    )
    pattern = parsed.currency_formats["standard"].pattern
    return _Terms(
        currency=currency,
        locale=locale,
        precision=get_currency_precision(currency),
        symbol_first=pattern.lstrip().startswith("¤"),
        symbols=symbols,
        names=names,
        markers=markers,
    )


@dataclass(slots=True)
class _Marker:
    start: int
    end: int
    kind: str  # symbol | word | code | sign
    currency: str | None
    taken: bool = False


def _markers(norm: str, terms: _Terms) -> list[_Marker]:
    found = []
    for match in terms.markers.finditer(norm):
        kind = match.lastgroup or ""
        text = match.group()
        currency: str | None
        if kind == "symbol":
            currency = terms.symbols[text]
        elif kind == "word":
            lowered = text.lower()
            if lowered in terms.names:
                currency = terms.names[lowered]
            else:
                family, default = _WORD_FAMILIES[lowered]
                currency = _family_currency(family, default, terms.currency)
        elif kind == "code":
            upper = text.upper()
            known = upper != "XXX" and is_currency(upper)
            if not known or (
                text != upper and text.lower() not in _LOWERCASE_CODES and upper != terms.currency
            ):
                continue
            currency = upper
        else:
            currency = None  # a currency sign we cannot name for this workspace
        found.append(_Marker(match.start(), match.end(), kind, currency))
    return found


# --- numbers in text ----------------------------------------------------------------------------------------

# Digits with separators, not inside an identifier ("ORD-10001"). Letters glued to either side are allowed
# here and checked in `_numbers`: only a currency marker may touch a number ("1500CHF", not "3rd" or "5kg").
# Nor a part of a fraction, a date or a time ("1/2 dollar", "12/05", "10:30").
_NUMBER = re.compile(
    r"(?<![\d.,'_])(?<![^\W\d_]-)(?<!\d[/:])"
    r"(?P<num>(?>\d+(?:(?:[.,']|[ ](?=\d{3}(?!\d)))\d+)*))"
    r"(?P<suffix>(?:bn|mn|[kKmM])(?![^\W\d_]))?"
    r"(?![\d_]|[/:]\d)"
)
_MULTIPLIER_AFTER = re.compile(rf" {{0,2}}(?i:{_MULTIPLIERS})(?![^\W\d_])")
_RANGE_GAP = re.compile(r" *(?i:-|~|to|or|and|till|until|through|thru) *")
_BETWEEN_BEFORE = re.compile(r"(?i:between) *$")
_NEGATIVE_BEFORE = re.compile(r"(?:(?<![\w.,])- ?|(?i:\bminus|\bnegative) +)$")
_WORDS_BEFORE = re.compile(
    rf"(?i:(?<![^\W\d_])((?:(?:{_NUMBER_WORDS}|a|an|and)[ -]+)*(?:{_NUMBER_WORDS})(?:[ -]+of)?) +)$"
)
_WORDS_AFTER = re.compile(rf"^ ?(?i:(?:{_NUMBER_WORDS})(?![^\W\d_]))")
_ANY_NUMBER_WORD = re.compile(rf"(?i:(?<![^\W\d_])(?:{_NUMBER_WORDS})(?![^\W\d_]))")


@dataclass(slots=True)
class _Number:
    start: int
    end: int  # after the digits and any suffix ("2k")
    outer_end: int  # after a multiplier word too ("2 thousand")
    digits: str
    shorthand: bool
    before: _Marker | None = None
    after: _Marker | None = None

    @property
    def marked(self) -> bool:
        return self.before is not None or self.after is not None


def _is_letter(norm: str, index: int) -> bool:
    return 0 <= index < len(norm) and norm[index].isalpha()


def _numbers(norm: str, markers: Sequence[_Marker] = ()) -> list[_Number]:
    marker_starts = {m.start for m in markers}
    marker_ends = {m.end for m in markers}
    numbers = []
    for match in _NUMBER.finditer(norm):
        end = match.end()
        if _is_letter(norm, match.start() - 1) and match.start() not in marker_ends:
            continue
        if _is_letter(norm, end) and end not in marker_starts:
            continue
        multiplier = _MULTIPLIER_AFTER.match(norm, end)
        outer_end = multiplier.end() if multiplier else end
        numbers.append(
            _Number(
                start=match.start(),
                end=end,
                outer_end=outer_end,
                digits=match.group("num"),
                shorthand=bool(match.group("suffix") or multiplier),
            )
        )
    return numbers


def _attach(norm: str, numbers: list[_Number], markers: list[_Marker], symbol_first: bool) -> None:
    """Give each currency marker to the number it belongs to: a word follows its number; a symbol or a code
    with a number on each side goes to the one it touches, else to the side the locale writes it on."""
    ends = {n.outer_end: n for n in numbers}
    starts = [n.start for n in numbers]
    for marker in markers:
        previous = next(
            (ends[end] for end in range(marker.start, max(marker.start - 3, -1), -1) if end in ends), None
        )
        if previous is not None and norm[previous.outer_end : marker.start].strip(" "):
            previous = None
        index = bisect_left(starts, marker.end)
        following = numbers[index] if index < len(numbers) else None
        if following is not None and not re.fullmatch(r" {0,2}(?:- ?)?", norm[marker.end : following.start]):
            following = None
        if marker.kind == "word":
            following = None
        if previous is not None and previous.after is not None:
            previous = None
        if following is not None and following.before is not None:
            following = None
        chosen = previous if following is None else following
        if previous is not None and following is not None:
            # The number the marker touches wins ("order 10001 $20"); on a tie, the locale's habit decides.
            gap_before = marker.start - previous.outer_end
            gap_after = following.start - marker.end
            if gap_before != gap_after:
                chosen = previous if gap_before < gap_after else following
            else:
                chosen = following if symbol_first else previous
        if chosen is None:
            continue
        if chosen is following:
            chosen.before = marker
        else:
            chosen.after = marker
        marker.taken = True


def _edges(number: _Number) -> tuple[int, int]:
    start = number.before.start if number.before else number.start
    end = number.after.end if number.after else number.outer_end
    return start, end


def _is_range(norm: str, first: _Number, second: _Number) -> bool:
    left = first.after.end if first.after else first.outer_end
    right = second.before.start if second.before else second.start
    gap = _RANGE_GAP.fullmatch(norm, left, right)
    if gap is None:
        return False
    if gap.group().strip().lower() == "and":
        return bool(_BETWEEN_BEFORE.search(norm, 0, _edges(first)[0]))
    return True


def _currency_of(number: _Number) -> tuple[str | None, Refusal | None]:
    named = [m for m in (number.before, number.after) if m is not None]
    if any(m.currency is None for m in named):
        return None, Refusal.OTHER_CURRENCY
    codes = {m.currency for m in named}
    if len(codes) > 1:
        return None, Refusal.CONFLICTING_CURRENCY
    return codes.pop(), None


def _mention(
    text: str, span: tuple[int, int], result: Decimal | Refusal, currency: str | None, terms: _Terms
) -> MoneyMention:
    said = text[span[0] : span[1]]
    if isinstance(result, Refusal):
        return MoneyMention(said, span, refusal=result, currency=currency)
    if currency != terms.currency:
        return MoneyMention(said, span, refusal=Refusal.OTHER_CURRENCY, currency=currency)
    return MoneyMention(said, span, money=Money(result, terms.currency), currency=currency)


def _read(number: _Number, norm: str, terms: _Terms) -> Decimal | Refusal:
    """The amount of a marked number in the workspace currency, or why it cannot be read."""
    if _NEGATIVE_BEFORE.search(norm, 0, _edges(number)[0]) or (
        number.before is not None and "-" in norm[number.before.end : number.start]
    ):
        return Refusal.NEGATIVE
    if number.shorthand:
        return Refusal.SHORTHAND
    return read_number(number.digits, locale=terms.locale, max_decimals=terms.precision, spaces_group=False)


def find_money(text: str, *, currency: str, locale: str) -> list[MoneyMention]:
    """Every mention of money in free customer text, in order: each read exactly in `currency`, or refused.

    Only numbers with a currency marker are money (see the module docstring); a mention in another currency
    than the workspace's is refused as `other_currency`, with the currency it named."""
    terms = _terms(currency, locale)
    norm = _normalise(text)
    markers = _markers(norm, terms)
    numbers = _numbers(norm, markers)
    _attach(norm, numbers, markers, terms.symbol_first)
    mentions: list[MoneyMention] = []
    index = 0
    while index < len(numbers):
        number = numbers[index]
        if index + 1 < len(numbers) and _is_range(norm, number, numbers[index + 1]):
            second = numbers[index + 1]
            if number.marked or second.marked:
                span = (_edges(number)[0], _edges(second)[1])
                named = {m.currency for m in (number.before, number.after, second.before, second.after) if m}
                named.discard(None)
                only = named.pop() if len(named) == 1 else None
                mentions.append(
                    MoneyMention(text[span[0] : span[1]], span, refusal=Refusal.RANGE, currency=only)
                )
            index += 2
            continue
        index += 1
        if not number.marked:
            continue
        start, end = _edges(number)
        negative = _NEGATIVE_BEFORE.search(norm, 0, start)
        if negative:
            start = negative.start()
        named_currency, refusal = _currency_of(number)
        if refusal is None and named_currency != terms.currency:
            refusal = Refusal.OTHER_CURRENCY  # said first: however the digits read, they are not ours
        result = refusal or _read(number, norm, terms)
        mentions.append(_mention(text, (start, end), result, named_currency, terms))
    mentions.extend(_amounts_in_words(text, norm, markers))
    return sorted(mentions, key=lambda m: m.span)


def _amounts_in_words(text: str, norm: str, markers: list[_Marker]) -> list[MoneyMention]:
    """ "fifty dollars", "a hundred euros", "$twenty": refused, never read."""
    found = []
    for marker in markers:
        if marker.taken:
            continue
        span: tuple[int, int] | None = None
        if marker.kind in ("word", "code"):
            words = _WORDS_BEFORE.search(norm, 0, marker.start)
            if words:
                span = (words.start(1), marker.end)
        if span is None and marker.kind in ("symbol", "code", "sign"):
            after = _WORDS_AFTER.match(norm[marker.end :])
            if after:
                span = (marker.start, marker.end + after.end())
        if span is not None:
            found.append(
                MoneyMention(text[span[0] : span[1]], span, refusal=Refusal.WORDS, currency=marker.currency)
            )
    return found


# --- one slot answer ----------------------------------------------------------------------------------------

# Words that may surround a bare number answering "how much?" ("it was 35 please"). Anything else ("2 shirts",
# "50 cents", "3 months") means the number is not obviously the amount.
_ANSWER_TEXT = (
    "it its it's is was be would will the amount total about around roughly approximately approx "
    "exactly just only refund refunded me my of please pls thanks thank you ok okay sure yes yeah "
    "yep um uh so make that i i'd im i'm paid pay want need like to for a an full whole let's lets "
    "say oh hi hello well hmm charge charged back money"
)
_ANSWER_WORDS = frozenset(_ANSWER_TEXT.split())


def parse_money_answer(text: str, *, currency: str, locale: str) -> MoneyMention | None:
    """The amount in a customer's direct answer to the amount question, in `currency`.

    A marked amount is read as in `find_money` (the first one read, else the first refusal). Otherwise one
    bare number, with at most a few everyday words around it ("35", "it was 35 please"), is an amount in the
    workspace currency; several numbers, a range, words or shorthand are refused. None: no amount at all."""
    mentions = find_money(text, currency=currency, locale=locale)
    read = next((m for m in mentions if m.ok), None)
    if read is not None or mentions:
        return read or mentions[0]
    terms = _terms(currency, locale)
    norm = _normalise(text)
    numbers = _numbers(norm, _markers(norm, terms))
    if not numbers:
        spoken = _ANY_NUMBER_WORD.search(norm)
        if spoken is None:
            return None
        return MoneyMention(text[spoken.start() : spoken.end()], spoken.span(), refusal=Refusal.WORDS)
    if len(numbers) > 1:
        span = (numbers[0].start, numbers[-1].outer_end)
        refusal = Refusal.RANGE if _is_range(norm, numbers[0], numbers[1]) else Refusal.NOT_AN_AMOUNT
        return MoneyMention(text[span[0] : span[1]], span, refusal=refusal)
    number = numbers[0]
    start = number.start
    negative = _NEGATIVE_BEFORE.search(norm, 0, start)
    if negative:
        start = negative.start()
    span = (start, number.outer_end)
    result: Decimal | Refusal
    if negative:
        result = Refusal.NEGATIVE
    elif number.shorthand:
        result = Refusal.SHORTHAND
    else:
        rest = norm[: number.start] + " " + norm[number.outer_end :]
        # Identifiers ("ORD-10001") may share the answer; other words must be everyday ones.
        chunks = [w for w in rest.lower().split() if not any(c.isdigit() for c in w)]
        bare = [re.sub(r"^[^\w']+|[^\w']+$", "", w) for w in chunks]
        if any(w and w not in _ANSWER_WORDS for w in bare) or any(
            unicodedata.category(c) == "Sc" for c in rest
        ):
            result = Refusal.NOT_AN_AMOUNT
        else:
            result = read_number(
                number.digits, locale=locale, max_decimals=terms.precision, spaces_group=False
            )
    return _mention(text, span, result, terms.currency, terms)


# --- plain numbers (counts, CSV figures) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NumberMention:
    text: str
    span: tuple[int, int]
    value: Decimal | Refusal


def find_numbers(text: str, *, locale: str = "en_US") -> list[NumberMention]:
    """Every number written in digits in `text` that is not part of an identifier ("3 months" -> 3, not the
    10002 of "ORD-10002"), read with the same rules as money; shorthand ("2k") is refused."""
    norm = _normalise(text)
    found = []
    for number in _numbers(norm):
        span = (number.start, number.outer_end)
        value: Decimal | Refusal = (
            Refusal.SHORTHAND
            if number.shorthand
            else read_number(number.digits, locale=locale, spaces_group=False)
        )
        found.append(NumberMention(text[span[0] : span[1]], span, value))
    return found
