"""Simulated customers for the ABCD benchmark: a scenario per conversation, drawn from a seed, and a customer
who states the problem, then answers what the assistant asks, in words that vary.

A scenario (`Scenario`) holds what an ABCD customer knows (abcd_sample.json's `scenario`: name, account ID,
username, email, order ID, address, membership level, the product and its price) plus what a subflow needs
them to say (how they heard about a service, a new phone number...), values drawn from ontology.json's
enumerable values where it has them. The customer (`SimulatedCustomer`) reads the assistant's last question
the way a person would, by its words (ASKS), and answers from the scenario; it sometimes gives several details
at once, puts details in its first message, or writes a value another way ("$40", "40 dollars"); asked the
same thing again it answers with the bare value, a third time it gives up. A clarifying question ("do you
want to A, or B?") is answered by the option that describes its problem.

The opening lines (OPENERS) are written here, apart from the intents' examples
(benchmarks/_abcd_workspace.py), so the router is measured on words it was not trained on.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass, field
from typing import Any

FIRST = [
    "Alessandro", "Joyce", "Albert", "David", "Sanya", "Crystal", "Chloe", "Rodriguez", "Joseph", "Norman",
    "Maria", "Kenji", "Fatima", "Liam", "Priya", "Oscar", "Hannah", "Mateo", "Aisha", "Grace",
]  # fmt: skip
LAST = [
    "Phoenix", "Wu", "Sanders", "Williams", "Afzal", "Minh", "Zhang", "Domingo", "Banter", "Bouchard",
    "Okafor", "Larsen", "Novak", "Haddad", "Ferreira", "Kowalski", "Tanaka", "Brennan", "Ruiz", "Osei",
]  # fmt: skip
STREETS = ["Lincoln Ave", "Main St", "Brushy Creek Dr", "1st Ave", "Elm Street", "Oak Lane", "Kingston Rd"]
CITIES = [
    ("San Mateo", "CA"),
    ("Raleigh", "NC"),
    ("Austin", "TX"),
    ("Jacksonville", "FL"),
    ("Baltimore", "MD"),
]
BRANDS = ["calvin klein", "guess", "michael kors", "tommy hilfiger"]
TYPES = ["boots", "jacket", "jeans", "shirt"]
MEMBERSHIP = ["gold", "silver", "bronze", "guest"]
PAYMENT = ["credit card", "debit card", "paypal"]
REFUND_TARGET = ["gift card", "add value", "paper check", "credit card"]
HEARD = ["email", "spouse", "news"]
CREDIT_SOURCE = ["subscription refund", "previous purchase", "promotional package"]
SHIPPING = ["order received", "in transit", "out for delivery", "delivered"]
RETURN_METHOD = ["by mail", "in store", "drop off center"]
MAIDEN = ["Alexander", "Martinez", "Livingston", "Singh", "Ahmed"]
FIXED_AMOUNT = {"status_service_added": 40, "cost": 8, "status_credit_missing": 40, "manage_pay_bill": 99}


@dataclass
class Scenario:
    subflow: str
    values: dict[str, str]

    @property
    def account_id(self) -> str:
        return self.values["account_id"]


def make_scenario(subflow: str, rng: random.Random) -> Scenario:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    username = f"{first[0]}{last}".lower() + str(rng.randint(100, 999))
    number = rng.randint(100, 9999)
    street = f"{number} {rng.choice(STREETS)}"
    city, state = rng.choice(CITIES)
    zip_code = f"{rng.randint(10000, 99999)}"
    phone = f"({rng.randint(200, 989)}) {rng.randint(200, 989)}-{rng.randint(1000, 9999)}"
    brand, kind = rng.choice(BRANDS), rng.choice(TYPES)
    new_first, new_last = rng.choice(FIRST), rng.choice(LAST)
    values = {
        "account_id": "".join(rng.choices(string.ascii_uppercase + string.digits, k=10)),
        "customer_name": f"{first} {last}",
        "username": username,
        "email": f"{username}@email.com"
        if rng.random() < 0.6
        else f"{first}.{last}{rng.randint(1, 99)}@mail.com",
        "order_id": str(rng.randint(1_000_000_000, 9_999_999_999)),
        "zip_code": zip_code,
        "phone": phone,
        "street": street,
        "full_address": f"{street}, {city}, {state} {zip_code}",
        "membership_level": rng.choice(MEMBERSHIP),
        "product": f"{brand} {kind}",
        "amount": str(FIXED_AMOUNT.get(subflow, rng.randint(20, 180))),
        "payment": rng.choice(PAYMENT),
        "new_payment": rng.choice(PAYMENT),
        "new_street": f"{rng.randint(100, 9999)} {rng.choice(STREETS)}",
        "new_name": f"{new_first} {new_last}",
        "new_phone": f"({rng.randint(200, 989)}) {rng.randint(200, 989)}-{rng.randint(1000, 9999)}",
        "refund_method": rng.choice(REFUND_TARGET),
        "heard_from": rng.choice(HEARD),
        "credit_source": rng.choice(CREDIT_SOURCE),
        "price_reason": "the competitor sells it cheaper"
        if "competitor" in subflow
        else "it was cheaper yesterday",
        "days_waiting": str(rng.randint(8, 20)),
        "shipping_status": rng.choice(SHIPPING),
        "return_method": rng.choice(RETURN_METHOD),
        "card_number": " ".join(f"{rng.randint(1000, 9999)}" for _ in range(4)),
        "expiry": f"{rng.randint(1, 12):02d}/{rng.randint(27, 31)}",
        "pin": f"{rng.randint(1000, 9999)}",
        "maiden": rng.choice(MAIDEN),
    }
    return Scenario(subflow, values)


# ---- first messages ----------------------------------------------------------------------------------------

# Per subflow, how customers open; {product}, {amount}, {order_id} come from the scenario.
OPENERS: dict[str, list[str]] = {
    "recover_username": [
        "I can't log in because I don't remember my user name",
        "what's my user name again? I forgot it",
        "help, I lost my username",
    ],
    "recover_password": [
        "I can't remember my password and I'm locked out",
        "how can I get a new password? mine doesn't work",
        "my password is forgotten, can you help me sign in",
    ],
    "reset_2fa": [
        "the two-factor code for my account never shows up",
        "my 2-step authentication is broken and I can't get in",
        "I need to reset two factor authentication on my account",
    ],
    "status_service_added": [
        "I see a service on my account that I never asked for",
        "somebody added a service to my account and I'm paying for it",
        "why is there an extra service on my plan that I didn't order",
    ],
    "status_service_removed": [
        "one of the services on my plan is gone, I didn't remove it",
        "a service I pay for was taken off my account",
        "I think you removed a service from my account by mistake",
    ],
    "status_shipping_question": [
        "do I get free shipping to other countries with my account",
        "is international shipping free for me",
        "will you ship abroad for free on my account",
    ],
    "status_credit_missing": [
        "the credit on my account is gone",
        "I should have credit on my account but I can't see it",
        "my credits have disappeared from my account",
    ],
    "manage_change_address": [
        "I need the address on my account changed, I moved",
        "please update my address on file",
        "my account still shows my old home address",
    ],
    "manage_change_name": [
        "please change the name on my account",
        "I need to update my name on the account",
        "the name on my profile needs changing",
    ],
    "manage_change_phone": [
        "I got a new phone number, please update my account",
        "change the phone number on file please",
        "my account has my old phone number",
    ],
    "manage_payment_method": [
        "I'd like a different payment method on my account",
        "please change the payment method saved on my account",
        "can I switch the payment method on my account",
    ],
    "status_mystery_fee": [
        "there is a fee on my order that I don't recognise",
        "my order has a strange extra charge",
        "why did my order cost more than the items?",
    ],
    "status_delivery_time": [
        "my delivery is set for the morning but I need it in the evening",
        "can you change the time my order gets delivered",
        "the delivery time for my order doesn't work for me",
    ],
    "status_payment_method": [
        "my order was paid with the wrong payment method",
        "I used the wrong payment method on my order, can I change it",
        "the payment method on my order is not the one I wanted",
    ],
    "status_quantity": [
        "my order confirmation says 2 {product} but I only ordered one",
        "I got an email saying I bought two of them, I wanted just one",
        "the quantity in my order email is wrong",
    ],
    "manage_upgrade": [
        "can my order come overnight instead",
        "I'd like to upgrade my order to overnight delivery",
        "please make my order ship faster, overnight if possible",
    ],
    "manage_downgrade": [
        "I'd rather have slower shipping on my order to save the fee",
        "can you ship my order next week instead, cheaper",
        "I want to downgrade the shipping on my order",
    ],
    "manage_create": [
        "I want to add {product} to my existing order",
        "can I put one more item on my order",
        "please add another thing to the order I already placed",
    ],
    "manage_cancel": [
        "I ordered the {product} twice by accident",
        "oops, I bought two when I wanted one, can you cancel one",
        "I accidentally placed a duplicate, please cancel the extra item",
    ],
    "refund_initiate": [
        "I'd like a refund for my {product}",
        "can I get my money back for the {product}",
        "I want to be refunded for an item I bought",
    ],
    "refund_update": [
        "I already have a refund open and want to add the {product} to it",
        "please add one more item to my refund",
        "can my refund include another product too",
    ],
    "refund_status": ["any news on my refund?", "I'm wondering where my refund is", "is my refund done yet"],
    "return_stain": [
        "my {product} came with a stain and I want to send it back",
        "there's a stain on the {product} I got, I'd like to return it",
        "I need to return something because it's stained",
    ],
    "return_color": [
        "the {product} isn't the color I ordered, I want to return it",
        "I want to send back my {product}, the colour is off",
        "I need to return an item, the color is wrong",
    ],
    "return_size": [
        "the {product} doesn't fit, I'd like to return it",
        "I need to return my {product}, wrong size",
        "I want to send back something that's too small",
    ],
    "bad_price_competitor": [
        "I found the {product} cheaper at another store",
        "another shop has a lower price for the same item",
        "a competitor sells it for less than you",
    ],
    "bad_price_yesterday": [
        "the price dropped a day after I bought it",
        "I bought the {product} yesterday and now it's cheaper",
        "I paid more yesterday than the price today",
    ],
    "out_of_stock_general": [
        "so many things on your site are out of stock",
        "everything I look at is sold out",
        "why is nothing in stock",
    ],
    "out_of_stock_one_item": [
        "the {product} I want is out of stock",
        "I really want the {product} but it's sold out",
        "one item I need shows out of stock",
    ],
    "promo_code_invalid": [
        "the promo code I got is not accepted",
        "my discount code gets rejected",
        "my promo code doesn't work at checkout",
    ],
    "promo_code_out_of_date": [
        "my promo code says it is expired",
        "the coupon I have has expired, can I still use it",
        "my discount code is out of date",
    ],
    "mistimed_billing_already_returned": [
        "I sent the item back but I'm still being charged for it",
        "I returned my order and haven't got the credit yet",
        "my bill still shows an item I already returned",
    ],
    "mistimed_billing_never_bought": [
        "I'm being billed for something I never purchased",
        "there's a charge on my bill for an item I never ordered",
        "my bill has a purchase I didn't make",
    ],
    "status": [
        "I got an email about my shipment and something seems off",
        "the shipping email I received looks wrong to me",
        "the notification about my delivery worried me, is everything ok with it",
    ],
    "manage": [
        "I want to change where my shipment goes",
        "I need to change something on my shipment",
        "I ordered the wrong thing and need to change the shipment",
    ],
    "missing": [
        "my item never showed up",
        "I'm still waiting for my package, it never came",
        "I didn't get my order",
    ],
    "cost": [
        "the shipping fee is way too high",
        "could you waive the shipping cost on my order",
        "I'd like the shipping charge back, it's too much",
    ],
    "boots": [
        "are the boots good in the rain",
        "how long does it take to wear in the boots",
        "what colour laces do the boots have",
    ],
    "shirt": ["does the shirt shrink after washing", "is the shirt cotton", "can the shirt go in the dryer"],
    "jeans": [
        "will the jeans stretch out over time",
        "what's the leg length on the jeans",
        "do the jeans lose their color in the wash",
    ],
    "jacket": [
        "will the jacket keep me warm in winter",
        "can the jacket go in the washing machine",
        "does the jacket keep out rain",
    ],
    "pricing": ["how are your prices set", "do you match other stores' prices", "when is your next sale"],
    "membership": [
        "what do gold members get",
        "what are the membership levels",
        "what are the perks of being a silver member",
    ],
    "timing": [
        "how long will delivery take",
        "how many days does shipping take usually",
        "how long until a refund shows up",
    ],
    "policy": [
        "what's the policy for returns",
        "can I exchange something I bought",
        "what's your policy on damaged items",
    ],
    "status_active": [
        "is my subscription active still",
        "I want to know if my subscription payment went through",
        "is my premium subscription still on",
    ],
    "status_due_amount": [
        "how much is due on my subscription",
        "what do I owe for my subscription this month",
        "what is the amount I need to pay for premium",
    ],
    "status_due_date": [
        "when is the next subscription payment due",
        "when do I need to pay my subscription",
        "what's the renewal date of my subscription",
    ],
    "manage_pay_bill": [
        "I'd like to pay my subscription",
        "can I pay the subscription bill now",
        "I want to pay off my subscription balance",
    ],
    "manage_extension": [
        "I need more time to pay my subscription",
        "can you extend the due date of my subscription payment",
        "I can't pay the subscription on time, can I get an extension",
    ],
    "manage_dispute_bill": [
        "I got charged twice for my subscription",
        "my subscription bill is higher than it should be",
        "I think my subscription charge is a mistake",
    ],
    "credit_card": [
        "my credit card keeps being rejected on your site",
        "the website says my card is not valid",
        "I can't pay, my card gets declined every time",
    ],
    "shopping_cart": [
        "my cart doesn't update when I add items",
        "things I add never show up in my cart",
        "the shopping cart is stuck",
    ],
    "search_results": [
        "the search on your site never finds anything",
        "I search for products and get no results",
        "your search bar is broken",
    ],
    "slow_speed": [
        "the website is really slow for me",
        "your site takes ages to load",
        "pages load so slowly I can't shop",
    ],
}
GREETINGS = ["", "", "hi, ", "hello, ", "hey there. ", "Hi! "]
CLOSINGS = ["", "", "", " can you help?", " please help", "."]
# Details a customer may put in the first message, per slot kind.
VOLUNTEER = {"order_id": "my order ID is {order_id}.", "username": "my username is {username}."}

# ---- reading the assistant's question ----------------------------------------------------------------------

# The assistant's question, by its words, first match wins: the slot it asks for (or "confirm").
ASKS: list[tuple[str, str]] = [
    (r"\(yes/no\)|shall i go ahead|answer yes or no", "confirm"),
    (r"maiden name|pin number", "pin_or_answer"),
    (r"hear about", "heard_from"),
    (r"credit come from", "credit_source"),
    (r"price is wrong", "price_reason"),
    (r"days have you been waiting", "days_waiting"),
    (r"where should the refund go", "refund_details"),
    (r"how would you like to get the refund", "refund_method"),
    (r"how would you like to return", "return_method"),
    (r"card number", "card_number"),
    (r"expiration date", "expiry"),
    (r"membership level", "membership_level"),
    (r"shipping status", "shipping_status"),
    (r"which item|brand and type", "product"),
    (r"current street address", "current_street"),
    (r"new street address", "new_street"),
    (r"current full name", "current_name"),
    (r"new full name", "new_name"),
    (r"current phone number", "current_phone"),
    (r"new phone number", "new_phone"),
    (r"payment method is on the account", "current_payment"),
    (r"payment method would you like", "new_payment"),
    (r"full address", "full_address"),
    (r"username", "username"),
    (r"email address", "email"),
    (r"order id", "order_id"),
    (r"zip code", "zip_code"),
    (r"phone number", "phone"),
    (r"how much", "amount"),
]
CLARIFY = re.compile(r"do you want to (.+?), or (.+?)\?", re.IGNORECASE)


def asked(reply: str) -> str | None:
    """The slot the reply's last question asks for, "confirm" for a yes/no, or None."""
    questions = [s for s in re.split(r"(?<=[.!?])\s+", reply) if s.strip()]
    last = max((i for i, s in enumerate(questions) if "?" in s), default=None)
    if last is None:
        return None
    tail = " ".join(questions[max(0, last - 1) :]).lower()
    return next((kind for pattern, kind in ASKS if re.search(pattern, tail)), None)


# ---- answering ---------------------------------------------------------------------------------------------

# How a value is said: {v} is the value; the first form is the bare one, used when asked again.
SAY: dict[str, list[str]] = {
    "username": ["{v}", "my username is {v}", "it's {v}", "username: {v}", "I think it's {v}"],
    "email": ["{v}", "my email is {v}", "it's {v}", "{v} is the email on the account"],
    "order_id": ["{v}", "order ID {v}", "the order number is {v}", "sure, it's {v}"],
    "zip_code": ["{v}", "zip is {v}", "it's {v}", "my zip code is {v}"],
    "phone": ["{v}", "my number is {v}", "it's {v}", "phone: {v}"],
    "amount": ["{v}", "${v}", "{v} dollars", "it was ${v}", "${v}.00"],
    "membership_level": ["{v}", "I'm a {v} member", "{v} level", "I have {v} membership"],
    "shipping_status": ["{v}", "it says {v}", "the status is {v}", "tracking shows {v}"],
    "product": ["{v}", "the {v}", "it's the {v}", "{v} I think"],
    "refund_method": ["{v}", "{v} please", "I'd like it as {v}"],
    "return_method": ["{v}", "{v} please", "I'll do {v}"],
    "days_waiting": ["{v} days", "about {v} days", "it's been {v} days now"],
}
FREE = {
    "credit_source": "{credit_source}",
    "price_reason": "{price_reason}",
    "refund_details": "{refund_details}",
    "current_street": "{street}",
    "new_street": "{new_street}",
    "current_name": "{customer_name}",
    "new_name": "{new_name}",
    "current_phone": "{phone}",
    "new_phone": "{new_phone}",
    "current_payment": "{payment}",
    "new_payment": "{new_payment}",
    "full_address": "{full_address}",
    "card_number": "{card_number}",
    "expiry": "{expiry}",
}
YES = ["yes", "yes please", "go ahead", "sure, do it", "yep, that's right", "ok"]


def _phone(value: str, rng: random.Random) -> str:
    digits = re.sub(r"\D", "", value)
    forms = [value, f"{digits[:3]}-{digits[3:6]}-{digits[6:]}", f"{digits[:3]}.{digits[3:6]}.{digits[6:]}"]
    return rng.choice(forms)


@dataclass
class SimulatedCustomer:
    scenario: Scenario
    description: str  # what they want, as the workspace's clarifying question would describe it
    rng: random.Random
    times_asked: dict[str, int] = field(default_factory=dict)
    gave_up: bool = False
    said: list[str] = field(default_factory=list)

    def value(self, kind: str) -> str:
        v = self.scenario.values
        if kind == "heard_from":
            said = {
                "email": ["an email", "I got an email about it"],
                "spouse": ["my spouse", "my wife told me"],
            }
            return self.rng.choice(said.get(v["heard_from"], ["the news", "I saw it on the news"]))
        if kind == "refund_details":
            by_mail = v["refund_method"] in ("gift card", "paper check")
            return v["full_address"] if by_mail else f"my account ID is {v['account_id']}"
        if kind == "pin_or_answer":
            return f"my PIN is {v['pin']}" if self.rng.random() < 0.5 else f"her maiden name is {v['maiden']}"
        if kind in FREE:
            return FREE[kind].format(**v)
        return v[kind]

    def opening(self) -> str:
        values = self.scenario.values
        line = self.rng.choice(OPENERS[self.scenario.subflow]).format(**values)
        text = self.rng.choice(GREETINGS) + line + self.rng.choice(CLOSINGS)
        if self.rng.random() < 0.25 and self.scenario.subflow not in _NO_ORDER:
            text += " " + VOLUNTEER[self.rng.choice(list(VOLUNTEER))].format(**values)
        return self._say(text)

    def answer(self, reply: str) -> str | None:
        """The customer's next message, or None when they have nothing to say (or gave up)."""
        options = CLARIFY.search(reply)
        if options:
            mine = [self.description.lower().startswith(o.strip().lower()[:40]) for o in options.groups()]
            if mine[0] or mine[1]:
                return self._say(
                    self.rng.choice(["the first one", "the first"]) if mine[0] else "the second one"
                )
            return self._say(f"neither, I want to {self.description}")
        kind = asked(reply)
        if kind is None:
            return None
        count = self.times_asked[kind] = self.times_asked.get(kind, 0) + 1
        if count > 2:
            self.gave_up = True
            return None
        if kind == "confirm":
            return self._say(self.rng.choice(YES))
        value = self.value(kind)
        if kind in ("phone", "current_phone"):
            value = _phone(value, self.rng)
        if count > 1 or kind not in SAY:
            return self._say(value)
        if kind == "username" and self.rng.random() < 0.3:  # everything the purchase check needs, at once
            v = self.scenario.values
            return self._say(f"username {v['username']}, email {v['email']}, order ID {v['order_id']}")
        return self._say(self.rng.choice(SAY[kind]).format(v=value))

    def _say(self, text: str) -> str:
        self.said.append(text)
        return text


_NO_ORDER = {
    "boots", "shirt", "jeans", "jacket", "pricing", "membership", "timing", "policy", "credit_card",
    "shopping_cart", "search_results", "slow_speed",
}  # fmt: skip


def check_openers(subflows: list[str]) -> list[str]:
    """Problems with OPENERS for these subflows (a missing subflow, a placeholder no scenario has)."""
    sample = make_scenario("refund_initiate", random.Random(0)).values
    problems = [f"no openers for {s}" for s in subflows if not OPENERS.get(s)]
    for subflow, lines in OPENERS.items():
        for line in lines:
            try:
                line.format(**sample)
            except (KeyError, IndexError) as exc:
                problems.append(f"{subflow}: {line!r} names {exc}")
    return problems


def describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items()))
