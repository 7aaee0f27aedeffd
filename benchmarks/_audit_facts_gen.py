"""Synthetic support knowledge for the audit benchmark: varied facts about products, stores, plans and
destinations, with planted near-duplicates (paraphrases) and planted contradictions.

Base facts never conflict with each other: each (subject, aspect) is stated once. Facts about a product,
a store or a plan name it as their `subject`; a tenth of the facts (shipping to a destination by a carrier)
carry no subject field, as imported facts often do, and name their destination and carrier in the text only.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from cxstack.workspace.models import FactConfig

BRANDS = [
    "Trailblazer",
    "Summit",
    "Ridge",
    "Canyon",
    "Harbor",
    "Alpine",
    "Cascade",
    "Timber",
    "Glacier",
    "Meadow",
    "Falcon",
    "Aurora",
    "Boulder",
    "Coastal",
    "Drift",
    "Ember",
    "Frontier",
    "Granite",
    "Horizon",
    "Juniper",
    "Kestrel",
    "Lakeside",
    "Maple",
    "Nomad",
    "Orchard",
    "Pioneer",
    "Quarry",
    "Redwood",
    "Sierra",
    "Tundra",
    "Voyager",
    "Willow",
    "Yukon",
    "Zephyr",
    "Birch",
    "Cedar",
    "Dune",
    "Everest",
    "Fjord",
    "Grove",
    "Hawthorn",
    "Islay",
    "Jasper",
    "Kodiak",
    "Larch",
    "Monarch",
    "Nimbus",
    "Osprey",
    "Pinecrest",
    "Rainier",
]
LINES = ["Trek", "Ultra", "Classic", "Storm", "Breeze"]
KINDS = [
    "boots",
    "jacket",
    "jeans",
    "shirt",
    "backpack",
    "tent",
    "sleeping bag",
    "hoodie",
    "gloves",
    "beanie",
    "rain shell",
    "sandals",
    "trail shoes",
    "fleece",
    "vest",
    "parka",
    "socks",
    "duffel",
    "sun hat",
    "belt",
]
CITIES = [
    "Seattle",
    "Portland",
    "Denver",
    "Austin",
    "Boston",
    "Chicago",
    "Atlanta",
    "Phoenix",
    "Dallas",
    "Miami",
    "Tampa",
    "Omaha",
    "Tucson",
    "Fresno",
    "Boise",
    "Reno",
    "Spokane",
    "Tacoma",
    "Eugene",
    "Salem",
    "Madison",
    "Dayton",
    "Akron",
    "Toledo",
    "Raleigh",
    "Durham",
    "Richmond",
    "Norfolk",
    "Mobile",
    "Jackson",
    "Memphis",
    "Nashville",
    "Louisville",
    "Lexington",
    "Columbus",
    "Cleveland",
    "Detroit",
    "Lansing",
    "Flint",
    "Duluth",
]
PLANS = [
    "Bronze membership",
    "Silver membership",
    "Gold membership",
    "Platinum membership",
    "Basic plan",
    "Plus plan",
    "Family plan",
    "Student plan",
    "Business plan",
    "Outdoor Club plan",
]
COUNTRIES = [
    "Germany",
    "France",
    "Spain",
    "Italy",
    "Portugal",
    "Ireland",
    "Norway",
    "Sweden",
    "Finland",
    "Denmark",
    "Poland",
    "Austria",
    "Belgium",
    "Greece",
    "Japan",
    "Mexico",
    "Brazil",
    "Chile",
    "Canada",
    "Iceland",
    "Estonia",
    "Latvia",
    "Croatia",
    "Hungary",
    "Romania",
    "Slovakia",
    "Slovenia",
    "Malta",
    "Cyprus",
    "Luxembourg",
    "Switzerland",
    "Australia",
    "Netherlands",
    "Czechia",
    "Lithuania",
    "Bulgaria",
    "Serbia",
    "Albania",
    "Montenegro",
    "Bosnia",
    "Moldova",
    "Ukraine",
    "Georgia",
    "Armenia",
    "Turkey",
    "Israel",
    "Jordan",
    "Morocco",
    "Tunisia",
    "Egypt",
    "Kenya",
    "Ghana",
    "Nigeria",
    "Senegal",
    "Namibia",
    "Botswana",
    "India",
    "Nepal",
    "Thailand",
    "Vietnam",
    "Malaysia",
    "Singapore",
    "Indonesia",
    "Philippines",
    "Korea",
    "Taiwan",
    "Mongolia",
    "Kazakhstan",
    "Argentina",
    "Uruguay",
    "Paraguay",
    "Peru",
    "Ecuador",
    "Colombia",
    "Panama",
    "Guatemala",
    "Jamaica",
    "Bahamas",
    "Fiji",
    "Zealand",
]
CARRIERS = ["DHL", "UPS", "FedEx", "DPD", "GLS", "the national postal service", "Royal Mail", "Purolator"]
SERVICES = ["Standard", "Express", "Economy", "Priority"]  # enough destinations for a tenth of 100k facts
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
TAILS = (
    "",
    "",
    "",
    " Ask a store associate if you need help.",
    " This applies to online and in-store orders.",
    " Details are on the receipt.",
    " Members see this in their account.",
)

# Each aspect: a function of (subject, rng) giving the fact's text. One subject states each aspect once.
Aspect = Callable[[str, random.Random], str]


def _date(rng: random.Random) -> str:
    return f"{rng.randint(1, 28)} {rng.choice(MONTHS)}"


PRODUCT_ASPECTS: tuple[Aspect, ...] = (
    lambda s, r: (
        f"The {s} can be returned within {r.choice([14, 30, 45, 60, 90])} days of delivery if unworn."
    ),
    lambda s, r: f"The {s} comes with a {r.randint(1, 5)}-year warranty against manufacturing defects.",
    lambda s, r: (
        f"Standard shipping for the {s} costs ${r.randint(3, 15)} and takes {r.randint(2, 7)} business days."
    ),
    lambda s, r: (
        f"The {s} is available in sizes {r.choice(['XS', 'S'])} to {r.choice(['XL', 'XXL', '3XL'])} "
        f"and in {r.randint(2, 9)} colours."
    ),
    lambda s, r: f"The {s} is machine washable at {r.choice([30, 40])} degrees; do not tumble dry it.",
    lambda s, r: f"Engraving a name on the {s} is free of charge in our stores.",
    lambda s, r: f"The {s} costs ${r.randint(20, 400)} at full price.",
    lambda s, r: f"The {s} will be back in stock on {_date(r)}.",
    lambda s, r: f"Repairs to the {s} take about {r.randint(5, 21)} business days at our workshop.",
    lambda s, r: f"Gift wrapping for the {s} is available for ${r.randint(2, 9)} at checkout.",
    lambda s, r: f"The {s} weighs {r.randint(150, 2500)} grams.",
    lambda s, r: f"Orders for the {s} placed before {r.randint(1, 5)} pm ship the same day.",
    lambda s, r: f"The {s} is made from {r.choice([30, 50, 70, 80, 100])}% recycled materials.",
    lambda s, r: f"You can exchange the {s} for another size once at no extra cost.",
    lambda s, r: f"Customers can combine discount codes with the sale price of the {s}.",
    lambda s, r: f"The launch offer on the {s} ends on {_date(r)}.",
    lambda s, r: f"Price matching is allowed for the {s} within {r.choice([7, 14, 30])} days of purchase.",
    lambda s, r: f"A replacement strap for the {s} costs ${r.randint(4, 25)} from our spare parts desk.",
    lambda s, r: f"The {s} is covered by our free lifetime repair programme for seams and zips.",
    lambda s, r: f"Pre-orders of the {s} are charged when the item ships, not when you order.",
)
STORE_ASPECTS: tuple[Aspect, ...] = (
    lambda s, r: f"The {s} is open {r.randint(7, 10)}am to {r.randint(6, 9)}pm Monday to Saturday.",
    lambda s, r: f"Parking at the {s} is free for the first {r.randint(1, 3)} hours.",
    lambda s, r: f"Click and collect orders are ready at the {s} within {r.choice([2, 4, 24])} hours.",
    lambda s, r: f"The {s} accepts returns of online orders with the packing slip.",
    lambda s, r: f"The {s} is closed on {_date(r)} for stocktaking.",
    lambda s, r: f"Bike repairs at the {s} cost ${r.randint(15, 60)} per hour of labour.",
    lambda s, r: f"Dogs on a lead are allowed inside the {s}.",
    lambda s, r: f"The {s} can hold an item for you for {r.randint(1, 7)} days.",
)
PLAN_ASPECTS: tuple[Aspect, ...] = (
    lambda s, r: f"The {s} costs ${r.randint(5, 40)} per month, billed monthly.",
    lambda s, r: f"{s} customers get free shipping on orders over ${r.choice([25, 50, 75, 100])}.",
    lambda s, r: f"With the {s} you can return items within {r.choice([30, 60, 90, 120])} days.",
    lambda s, r: f"The {s} includes {r.randint(1, 6)} free alterations per year.",
    lambda s, r: f"Cancelling the {s} is free within the first {r.choice([14, 30])} days.",
    lambda s, r: f"The {s} renews automatically on {_date(r)} each year.",
    lambda s, r: f"{s} customers earn {r.randint(1, 10)} points for every dollar spent.",
    lambda s, r: f"The {s} can be shared with up to {r.randint(2, 6)} people in the same household.",
)
DESTINATION_ASPECTS: tuple[Aspect, ...] = (
    lambda s, r: f"Orders shipped to {s} arrive within {r.randint(3, 14)} business days.",
    lambda s, r: f"Customs duties for orders to {s} are paid by the customer on delivery.",
    lambda s, r: f"Express delivery to {s} costs ${r.randint(15, 80)} per parcel.",
    lambda s, r: f"Returns from {s} can be sent back free of charge with the prepaid label.",
)

SYNONYMS = (
    ("within", "in under"),
    ("costs", "is priced at"),
    ("customers", "shoppers"),
    ("returned", "sent back"),
    ("take about", "need roughly"),
    ("available", "offered"),
    ("arrive", "are delivered"),
    ("business days", "working days"),
    ("orders", "purchases"),
    ("free of charge", "at no cost"),
    ("is open", "opens"),
    ("weighs", "has a weight of"),
    ("ends on", "finishes on"),
    ("placed before", "made before"),
)
ADDED = ("Please note: ", "Good to know: ", "As a rule, ", "For your information, ", "Remember that ")
POLICY_FLIPS = (
    (" can be ", " cannot be "),
    (" can ", " cannot "),
    (" is allowed ", " is not allowed "),
    (" are allowed ", " are not allowed "),
    ("free of charge", "charged at the standard rate"),
    (" is free ", " is charged "),
    (" free ", " paid "),
    (" includes ", " excludes "),
    (" accepts ", " refuses "),
    (" is covered ", " is not covered "),
    (" are paid ", " are not paid "),
)


@dataclass(frozen=True, slots=True)
class Planted:
    kind: str  # near_duplicate | contradiction
    how: str  # paraphrase | number | amount | date | negation | policy
    pair: tuple[str, str]


def _paraphrase(text: str, rng: random.Random) -> str | None:
    """Synonyms, an added opening, and (for sentences with a clause) reordering; the same claims."""
    changed = text
    swaps = [pair for pair in SYNONYMS if pair[0] in changed]
    rng.shuffle(swaps)
    for old, new in swaps[:2]:
        changed = changed.replace(old, new, 1)
    body, dot, tail = changed.partition(". ")
    if "; " in body:  # reorder the clauses
        left, right = body.split("; ", 1)
        body = f"{right[0].upper()}{right[1:]}; {left[0].lower()}{left[1:]}"
    elif " if " in body:
        main, condition = body.split(" if ", 1)
        body = f"If {condition.rstrip('.')}, {main[0].lower()}{main[1:]}"
    changed = f"{body}{dot}{tail}" if dot else body
    if rng.random() < 0.6 or changed == text:
        opening = rng.choice(ADDED)
        changed = opening + changed[0].lower() + changed[1:]
    if not changed.endswith("."):
        changed += "."
    return changed if changed != text else None


def _contradict(text: str, rng: random.Random) -> tuple[str, str] | None:
    """Change one number, amount or date; or negate; or flip a policy verb. Returns (how, text)."""
    import re

    options: list[tuple[str, str]] = []
    amount = re.search(r"\$(\d+)", text)
    if amount:
        value = int(amount.group(1))
        options.append(("amount", text.replace(amount.group(0), f"${value + rng.randint(1, 9) * 5}", 1)))
    date_match = re.search(r"\b(\d{1,2}) (" + "|".join(MONTHS) + r")\b", text)
    if date_match:
        day = int(date_match.group(1))
        options.append(
            ("date", text.replace(date_match.group(0), f"{day % 28 + 1} {date_match.group(2)}", 1))
        )
    number = re.search(
        r"(?<![$\d])(\d+)(?=[ %-](?:days|hours|year|business|grams|colours|free|points|"
        r"people|%|am|pm))",
        text,
    )
    if number:
        value = int(number.group(1))
        options.append(("number", text[: number.start()] + str(value * 2 + 1) + text[number.end() :]))
    for old, new in POLICY_FLIPS:
        if old in text:
            options.append(("policy", text.replace(old, new, 1)))
            break
    if " is " in text and "not" not in text:
        options.append(("negation", text.replace(" is ", " is not ", 1)))
    elif " are " in text and "not" not in text:
        options.append(("negation", text.replace(" are ", " are not ", 1)))
    if not options:
        return None
    return rng.choice(options)


def _owner(kind: str) -> str:
    return f"{kind}-team@example.com"


def generate(n: int, seed: int, *, planted_share: float = 0.05) -> tuple[list[FactConfig], list[Planted]]:
    """About `n` facts: base facts plus `planted_share` of n planted pairs' second facts, half paraphrases and
    half contradictions, each made from a different base fact."""
    rng = random.Random(seed)
    products = [f"{b} {line} {k}" for b in BRANDS for line in LINES for k in KINDS]
    stores = [f"{c} store" for c in CITIES]
    destinations = [
        f"{c} by {carrier} {service}" for c in COUNTRIES for carrier in CARRIERS for service in SERVICES
    ]
    planted_n = int(n * planted_share)
    base_n = n - planted_n
    slots: list[tuple[str, str | None, Aspect]] = []
    for subject in stores:
        slots.extend((f"store-{subject}", subject, a) for a in STORE_ASPECTS)
    for subject in PLANS:
        slots.extend((f"plan-{subject}", subject, a) for a in PLAN_ASPECTS)
    destination_slots = [("shipping", None, a) for a in DESTINATION_ASPECTS]
    rng.shuffle(products)
    product_slots = [(f"product-{s}", s, a) for s in products for a in PRODUCT_ASPECTS]
    # A tenth without a subject field (destinations: the text names them), the rest about products.
    unlabelled = [(d, a) for d in destinations for _, _, a in destination_slots]
    rng.shuffle(unlabelled)
    take_unlabelled = base_n // 10
    if take_unlabelled > len(unlabelled):
        raise ValueError(f"the generator makes at most {len(unlabelled)} facts without a subject")
    chosen: list[tuple[str, str | None, str]] = []
    for destination, aspect in unlabelled[:take_unlabelled]:
        chosen.append(("shipping", None, aspect(destination, rng)))
    fixed = slots[: max(0, min(len(slots), base_n // 10))]
    for team, subject, aspect in fixed:
        chosen.append((team.split("-")[0], subject, aspect(subject or "", rng)))
    for team, subject, aspect in product_slots[: base_n - len(chosen)]:
        chosen.append((team.split("-")[0], subject, aspect(subject or "", rng)))
    if len(chosen) < base_n:
        raise ValueError(f"the generator makes at most {len(chosen)} base facts")
    facts: list[FactConfig] = []
    for i, (team, subject, text) in enumerate(chosen):
        tail = rng.choice(TAILS)
        facts.append(
            FactConfig(id=f"f{i}", text=text + tail, owner=_owner(team), subject=subject)  # type: ignore[call-arg]
        )
    planted: list[Planted] = []
    sources = rng.sample(range(len(facts)), k=len(facts))
    position = 0
    while len(planted) < planted_n and position < len(sources):
        base = facts[sources[position]]
        position += 1
        made: tuple[str, str, str] | None = None
        if len(planted) % 2 == 0:
            text = _paraphrase(base.text, rng)
            if text:
                made = ("near_duplicate", "paraphrase", text)
        else:
            changed = _contradict(base.text, rng)
            if changed:
                how, text = changed
                if rng.random() < 0.3:  # a contradiction that also reads differently
                    text = rng.choice(ADDED) + text[0].lower() + text[1:]
                made = ("contradiction", how, text)
        if made is None:
            continue
        kind, how, text = made
        new_id = f"p{len(planted)}"
        facts.append(base.model_copy(update={"id": new_id, "text": text, "owner": base.owner}))
        planted.append(Planted(kind, how, (base.id, new_id)))
    rng.shuffle(facts)
    return facts, planted
