"""Writes the ABCD benchmark workspace (benchmarks/data/abcd/) from the human agents' written procedure.

    python -m benchmarks._abcd_workspace [--out DIR] [--check]

Inputs: ../shared/data/abcd/guidelines.json (per flow and subflow, the buttons a human agent clicks, in order,
with what each needs) and ontology.json (the subflow keys and the action names). Never kb.json: that file is
the answer key `benchmarks.agent_actions_abcd` scores against, so it must not shape the agents.

What it writes, one micro-agent per subflow (55):
  intents.yaml   one intent per subflow, mechanism `agent`; descriptions and examples are written here by hand
                 (EXAMPLES below), as a CX team would write them; the benchmark's customers speak otherwise
  actions.yaml   one HTTP action per (subflow, button): POST /actions/<ontology action name> on the local back
                 office (benchmarks/_abcd_backoffice.py). Its slots are what that step of the guideline asks
                 the customer for (SLOT_RULES: keywords of the step's text), its defaults what it tells the
                 agent to type in ('troubleshoot', 'website team', ...)
  agents/abcd.yaml  per subflow, its buttons in the guideline's order. Steps that are no button ("N/A":
                 talk to the customer) and [End Conversation] are not actions and are left out. A guideline
                 whose buttons are options "in any order" (Troubleshoot Site) is followed in its listed order.
  cxstack.yaml, strategy.yaml

`--check` exits 1 when the committed workspace differs from what the guidelines give now.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = Path(__file__).with_name("data") / "abcd"


def abcd_data_dir() -> Path:
    """Where the ABCD files are read from: $CXSTACK_ABCD_DATA, else ../shared/data/abcd beside the repo."""
    configured = os.environ.get("CXSTACK_ABCD_DATA")
    return Path(configured) if configured else ROOT.parent / "shared" / "data" / "abcd"


# The guideline's button labels and the ontology's action names (ontology.json `actions`).
BUTTONS = {
    "Pull up Account": "pull-up-account",
    "Validate Purchase": "validate-purchase",
    "Verify Identity": "verify-identity",
    "Record Reason": "record-reason",
    "Enter Details": "enter-details",
    "Enter Detail": "enter-details",
    "Offer Refund": "offer-refund",
    "Update Order": "update-order",
    "Update Account": "update-account",
    "Membership Privileges": "membership",
    "Ask the Oracle": "ask-the-oracle",
    "Shipping Status": "shipping-status",
    "Make Purchase": "make-purchase",
    "Promo Code": "promo-code",
    "Notify Internal Team": "notify-team",
    "Send Link": "send-link",
    "Make Password": "make-password",
    "Subscription Status": "subscription-status",
    "Search FAQ": "search-faq",
    "Select Answer": "select-faq",
    "Try Again": "try-again",
    "Log Out/In": "log-out-in",
    "Instructions": "instructions",
}
# FAQ toggles are named after the article ("Boots", "Pricing"): the ontology calls them search-<article>.
NOT_ACTIONS = {"N/A", "End Conversation"}

# ---- slots -------------------------------------------------------------------------------------------------

_BRANDS = r"(?:calvin klein|guess|michael kors|tommy hilfiger)"
_TYPES = r"(?:boots|jacket|jeans|shirt)"

# Every kind of value a step may need. `ask`: the question put to the customer. Values that name the account
# come from the verified profile only (cxstack's rule), never from what the customer types.
SLOTS: dict[str, dict[str, Any]] = {
    "account_id": {"from_customer": "id", "description": "Account ID."},
    "customer_name": {"from_customer": "name", "description": "Full name on the account."},
    "username": {
        "pattern": r"(?i)\b([a-z]{2,}\d{2,4})\b(?!@)",
        "prompt": "What's the username on your account?",
    },
    "email": {
        "pattern": r"([\w.+-]+@[\w-]+\.[\w.]+\w)",
        "prompt": "What's the email address on the account?",
    },
    "order_id": {
        "pattern": r"\b(\d{10})\b",
        "prompt": "What's the order ID? It has 10 digits and is in your confirmation email.",
    },
    "zip_code": {"pattern": r"\b(\d{5})\b", "prompt": "What's the zip code on the account?"},
    "phone": {
        "pattern": r"(\(?\d{3}\)?[\s.-]+\d{3}[\s.-]+\d{4})",
        "prompt": "What's the phone number on the account?",
    },
    "refund_method": {
        "pattern": r"(?i)\b(gift card|paper check|check|credit card|add value|account credit|store credit)\b",
        "prompt": "How would you like to get the refund: a gift card, added value on your account, a paper "
        "check, or back to your credit card?",
    },
    "refund_details": {
        "prompt": "Where should the refund go? For a gift card or a paper check, your full mailing address; "
        "for added value or your credit card, your account ID.",
    },
    "product": {
        "pattern": rf"(?i)\b({_BRANDS}\s+{_TYPES})\b",
        "prompt": "Which item is it? Brand and type, please (for example Guess jeans).",
    },
    "current_street": {"prompt": "What's the current street address on the account?"},
    "new_street": {"prompt": "What's the new street address you'd like on the account?"},
    "current_name": {"prompt": "What's the current full name on the account?"},
    "new_name": {"prompt": "What's the new full name you'd like on the account?"},
    "current_phone": {
        "pattern": r"(\(?\d{3}\)?[\s.-]+\d{3}[\s.-]+\d{4})",
        "prompt": "What's the current phone number on the account?",
    },
    "new_phone": {"prompt": "What's the new phone number you'd like on the account?"},
    "current_payment": {
        "pattern": r"(?i)\b(credit card|debit card|paypal)\b",
        "prompt": "Which payment method is on the account now: credit card, debit card or PayPal?",
    },
    "new_payment": {"prompt": "Which payment method would you like to use instead?"},
    "heard_from": {
        "pattern": r"(?i)\b(e-?mail|spouse|wife|husband|partner|news|newspaper)\b",
        "prompt": "How did you hear about it: an email, your spouse, or the news?",
    },
    "credit_source": {
        "prompt": "Where did the credit come from: a subscription refund, a previous purchase, or "
        "a promotional package?"
    },
    "price_reason": {"prompt": "Why do you think the price is wrong?"},
    "days_waiting": {
        "pattern": r"(?i)\b(\d{1,3}\s*(?:days?|weeks?))\b",
        "prompt": "How many days have you been waiting?",
    },
    "full_address": {"prompt": "What's your full address (street, city, state and zip code)?"},
    "amount": {"type": "money", "prompt": "How much is it, in dollars?"},
    "return_method": {
        "pattern": r"(?i)\b(by mail|mail|in store|in-store|drop[- ]off(?: center)?)\b",
        "prompt": "How would you like to return it: by mail, in store, or at a drop-off center?",
    },
    "membership_level": {
        "pattern": r"(?i)\b(gold|silver|bronze|guest)\b",
        "prompt": "What's your membership level: gold, silver, bronze or guest?",
    },
    "shipping_status": {
        "pattern": r"(?i)\b(order received|in transit|out for delivery|delivered)\b",
        "prompt": "What's the shipping status on the order: order received, in transit, out for delivery, or "
        "delivered?",
    },
    "card_number": {
        "pattern": r"\b(\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{4})\b",
        "prompt": "What's the credit card number?",
    },
    "expiry": {"pattern": r"\b(\d{1,2}/\d{2,4})\b", "prompt": "And the card's expiration date (MM/YY)?"},
    "pin_or_answer": {
        "prompt": "What's your PIN number, or the answer to your security question (your mother's maiden "
        "name)?",
    },
}

# (ontology action, regular expression over the step's text, slot kinds), first match wins; None: any text.
SLOT_RULES: list[tuple[str, str | None, list[str]]] = [
    ("pull-up-account", None, ["account_id", "customer_name"]),
    ("validate-purchase", None, ["username", "email", "order_id"]),
    ("verify-identity", r"3 out of", ["zip_code", "phone"]),
    ("verify-identity", None, ["order_id"]),
    ("record-reason", r"(?i)refund method", ["refund_method"]),
    ("record-reason", r"(?i)brand and type", ["product"]),
    ("record-reason", r"(?i)street address", ["current_street"]),
    ("record-reason", r"(?i)full name", ["current_name"]),
    ("record-reason", r"(?i)current number", ["current_phone"]),
    ("record-reason", r"(?i)payment method", ["current_payment"]),
    ("record-reason", r"'spouse'", ["heard_from"]),
    ("record-reason", r"(?i)subscription refund", ["credit_source"]),
    ("record-reason", r"(?i)\bin days\b|number of days", ["days_waiting"]),
    ("record-reason", r"'competitor'", ["price_reason"]),
    ("enter-details", r"'troubleshoot'", []),
    ("enter-details", r"(?i)account ID", ["refund_details"]),
    ("enter-details", r"(?i)full address", ["full_address"]),
    ("enter-details", r"(?i)email address", ["email"]),
    ("enter-details", r"(?i)username", ["username"]),
    ("enter-details", r"(?i)phone number", ["phone"]),
    ("enter-details", r"(?i)amount", ["amount"]),
    ("offer-refund", None, ["amount"]),
    ("update-order", r"'By Mail'", ["return_method"]),
    ("update-order", r"(?i)payment method", ["new_payment"]),
    ("update-order", r"(?i)full address", ["full_address"]),
    ("update-order", r"(?i)overcharged", ["amount"]),
    ("update-account", r"'(?:remove service|add service|renew subscription|extend subscription)'", []),
    ("update-account", r"(?i)street address", ["new_street"]),
    ("update-account", r"XXX", ["new_phone"]),
    ("update-account", r"'credit card'", ["new_payment"]),
    ("update-account", r"(?i)new, desired value", ["new_name"]),
    ("membership", None, ["membership_level"]),
    ("shipping-status", None, ["shipping_status"]),
    ("make-purchase", r"(?i)credit card number", ["card_number", "expiry", "product"]),
    ("make-purchase", None, ["product"]),
    ("promo-code", r"(?i)how much credit", ["amount"]),
    ("make-password", None, ["pin_or_answer"]),
]

# What each action tells the customer once it ran.
SAID = {
    "pull-up-account": "I've pulled up your account.",
    "validate-purchase": "Thanks, your purchase checks out.",
    "verify-identity": "Thanks, I've verified your identity.",
    "record-reason": "Got it, I've noted that.",
    "enter-details": "Thanks, I've entered those details.",
    "offer-refund": "Your refund of {amount} is on its way.",
    "update-order": "I've updated the order.",
    "update-account": "I've updated your account.",
    "membership": "Thanks, I've checked what your membership level allows.",
    "ask-the-oracle": "I've checked our system on this.",
    "shipping-status": "Thanks, I've noted the shipping status.",
    "make-purchase": "I've placed that order for you.",
    "promo-code": "Here is a promo code for you: {code}.",
    "notify-team": "I've let the team know.",
    "send-link": "I've sent you a link.",
    "make-password": "I've generated a new password for you: {password}.",
    "subscription-status": "Your subscription is {status}: {amount_due} due on {due_date}.",
    "search-faq": "Let me look that up.",
    "select-faq": "Here's the answer from our FAQ.",
    "try-again": "Please try that once more.",
    "log-out-in": "Please log out and log back in.",
    "instructions": "Here's what to try.",
}

# ---- intents: written by hand ------------------------------------------------------------------------------

# subflow: (description for the clarifying question, examples for the router)
EXAMPLES: dict[str, tuple[str, list[str]]] = {
    "recover_username": (
        "recover a forgotten username",
        [
            "I forgot my username",
            "can't remember what my user name is",
            "what is my username",
            "I need to recover my username to log in",
            "lost my login name, can you look it up",
        ],
    ),
    "recover_password": (
        "get a new password",
        [
            "I forgot my password",
            "reset my password please",
            "I can't log in, don't remember the password",
            "need a new password for my account",
            "password not working, how do I get a new one",
        ],
    ),
    "reset_2fa": (
        "reset two-factor authentication",
        [
            "my two factor authentication code isn't working",
            "I need to reset 2FA",
            "not getting the verification code to sign in",
            "lost my phone and can't do two-step verification",
            "the security code for login never arrives",
        ],
    ),
    "status_service_added": (
        "remove a service that was added to your account without asking",
        [
            "there's a service on my account I never signed up for",
            "someone added an extra service to my plan",
            "I'm being charged for a service I didn't add",
            "an unknown subscription service appeared on my account",
            "why was a new service added to my account",
        ],
    ),
    "status_service_removed": (
        "get back a service that was removed from your account",
        [
            "a service was removed from my account by mistake",
            "my plan lost one of its services",
            "you took a service off my account, I want it back",
            "an important service disappeared from my subscription",
            "why was my service removed",
        ],
    ),
    "status_shipping_question": (
        "find out whether your account gets free international shipping",
        [
            "does my account include free international shipping",
            "can I get free shipping to another country",
            "do you ship free overseas with my membership",
            "is shipping abroad free on my account",
            "international shipping question about my account",
        ],
    ),
    "status_credit_missing": (
        "find credit that is missing from your account",
        [
            "my account credit is missing",
            "I had credit on my account and now it's gone",
            "the store credit disappeared from my account",
            "where did my credits go",
            "credit I was given doesn't show up",
        ],
    ),
    "manage_change_address": (
        "change the address on your account",
        [
            "I need to update the address on my account",
            "I moved, please change my address",
            "change my home address in my profile",
            "my account has my old address",
            "update my street address",
        ],
    ),
    "manage_change_name": (
        "change the name on your account",
        [
            "I want to change the name on my account",
            "my name is spelled wrong on my profile",
            "I got married and need to update my name",
            "update my account name please",
            "change the full name on the account",
        ],
    ),
    "manage_change_phone": (
        "change the phone number on your account",
        [
            "I need to change my phone number",
            "update the phone number on my account",
            "I have a new cell number",
            "my phone number on file is outdated",
            "change contact number on my profile",
        ],
    ),
    "manage_payment_method": (
        "change the payment method on your account",
        [
            "I want to change my payment method on file",
            "switch my account to paypal",
            "update the card saved on my account",
            "use a debit card instead of my credit card from now on",
            "change the default payment method",
        ],
    ),
    "status_mystery_fee": (
        "question an extra fee on your order",
        [
            "there's an extra charge on my order I don't understand",
            "why was I charged a fee on this order",
            "mystery fee on my bill",
            "my order cost more than it should have",
            "unexpected charge added to my purchase",
        ],
    ),
    "status_delivery_time": (
        "change the delivery time of your order",
        [
            "the delivery time on my order is wrong",
            "can my package come in the evening instead of the morning",
            "I need to change when my order is delivered",
            "delivery is scheduled at a bad time",
            "reschedule the delivery time slot",
        ],
    ),
    "status_payment_method": (
        "fix the payment method used for your order",
        [
            "the wrong payment method was used for my order",
            "I paid with the wrong card on my order",
            "change how I paid for this order",
            "my order was charged to the wrong account",
            "I want to pay for my order another way",
        ],
    ),
    "status_quantity": (
        "fix the quantity on your order",
        [
            "my confirmation email shows two items but I ordered one",
            "the quantity on my order is wrong",
            "I only wanted one but the order says two",
            "order quantity doesn't match what I bought",
            "email says I ordered more than I did",
        ],
    ),
    "manage_upgrade": (
        "upgrade your order to faster shipping",
        [
            "can I upgrade to overnight shipping",
            "I need my order faster",
            "switch my order to express delivery",
            "I want to pay for quicker shipping",
            "upgrade shipping speed on my order",
        ],
    ),
    "manage_downgrade": (
        "switch your order to slower, cheaper shipping",
        [
            "I don't need fast shipping, can I downgrade",
            "switch my order to standard delivery to save money",
            "slow down the shipping, next week is fine",
            "can I get cheaper shipping on my order",
            "downgrade the delivery speed",
        ],
    ),
    "manage_create": (
        "add an item to an existing order",
        [
            "I want to add something to my order",
            "can you add another item to my existing order",
            "I forgot to put something in my order",
            "add one more product to the order I placed",
            "include an extra item in my purchase",
        ],
    ),
    "manage_cancel": (
        "cancel an item you ordered twice by mistake",
        [
            "I accidentally ordered two of the same thing",
            "I ordered twice by mistake, cancel one",
            "remove the duplicate item from my order",
            "I only meant to buy one, please cancel the other",
            "duplicate order, need to cancel part of it",
        ],
    ),
    "refund_initiate": (
        "get a refund for an item",
        [
            "I want a refund",
            "I'd like my money back for an item",
            "how do I get refunded for my purchase",
            "please refund this product",
            "start a refund for something I bought",
        ],
    ),
    "refund_update": (
        "add another item to an existing refund",
        [
            "I want to add another item to my refund",
            "can you include one more product in my refund",
            "I already have a refund going, add this item too",
            "update my refund with another purchase",
            "add a second item to the refund request",
        ],
    ),
    "refund_status": (
        "check the status of your refund",
        [
            "what's the status of my refund",
            "has my refund been processed",
            "I'm still waiting on my refund",
            "where is my refund",
            "check on my refund please",
        ],
    ),
    "return_stain": (
        "return an item because of a stain",
        [
            "the item I got has a stain, I want to return it",
            "there's a mark on my new clothes",
            "return a stained product",
            "it arrived dirty with a spot on it",
            "my order came with a stain",
        ],
    ),
    "return_color": (
        "return an item because of its color",
        [
            "the color is not what I expected, I want to return it",
            "wrong colour, I need to send it back",
            "return an item that came in the wrong color",
            "I don't like the color of what I bought",
            "the shade looks different from the picture",
        ],
    ),
    "return_size": (
        "return an item because of its size",
        [
            "it doesn't fit, I need to return it",
            "wrong size, I want to send it back",
            "the item is too small",
            "return something that is too big",
            "size doesn't fit me, return please",
        ],
    ),
    "bad_price_competitor": (
        "dispute a price that a competitor beats",
        [
            "another store sells this cheaper",
            "your competitor has a better price",
            "I found the same item for less somewhere else",
            "why is your price higher than other shops",
            "price match with a competitor",
        ],
    ),
    "bad_price_yesterday": (
        "dispute a price that dropped after you bought",
        [
            "the price went down the day after I bought it",
            "I paid more yesterday than it costs today",
            "price dropped right after my purchase",
            "it's cheaper now than when I ordered",
            "the item went on sale just after I bought it",
        ],
    ),
    "out_of_stock_general": (
        "complain that items are out of stock",
        [
            "everything I want is out of stock",
            "why are so many items sold out",
            "nothing is ever in stock on your site",
            "all the products I look at are unavailable",
            "your stock is always empty",
        ],
    ),
    "out_of_stock_one_item": (
        "get an item that is out of stock",
        [
            "the item I want is out of stock",
            "one product I need is sold out",
            "when will this item be back in stock",
            "can I still get something that's out of stock",
            "a particular product is unavailable",
        ],
    ),
    "promo_code_invalid": (
        "use a promo code that is rejected",
        [
            "my promo code isn't working",
            "the discount code says invalid",
            "coupon code was rejected at checkout",
            "promotion code won't apply",
            "the voucher code doesn't work",
        ],
    ),
    "promo_code_out_of_date": (
        "use a promo code that has expired",
        [
            "my promo code expired",
            "the discount code is out of date",
            "coupon says it has expired, can I still use it",
            "old promo code no longer valid",
            "expired voucher, can you extend it",
        ],
    ),
    "mistimed_billing_already_returned": (
        "get credit for an item you already returned",
        [
            "I returned the item but I was still billed",
            "I sent it back and haven't got my money",
            "charged for something I already returned",
            "return was received but no credit on my bill",
            "still paying for an item I returned",
        ],
    ),
    "mistimed_billing_never_bought": (
        "dispute a charge for something you never bought",
        [
            "I was charged for something I never bought",
            "there's a purchase on my bill that isn't mine",
            "billed for an order I didn't place",
            "I never ordered this but got charged",
            "unknown purchase on my statement",
        ],
    ),
    "status": (
        "check on your shipment after a worrying email",
        [
            "I got an email about my shipment that looks wrong",
            "the shipping notification says something strange",
            "is my package really going to the right place",
            "email says my order was shipped to the wrong city",
            "shipping email doesn't look right, can you check",
        ],
    ),
    "manage": (
        "change something about a shipment",
        [
            "I need to change my shipment",
            "update the shipping address of my package",
            "I ordered the wrong item and want to change the shipment",
            "change the delivery address for my order",
            "modify my shipment details",
        ],
    ),
    "missing": (
        "report an item that never arrived",
        [
            "my package never arrived",
            "I didn't receive my item",
            "tracking says delivered but I got nothing",
            "my order is missing",
            "still haven't gotten what I ordered",
        ],
    ),
    "cost": (
        "get the shipping fee waived or refunded",
        [
            "shipping costs too much",
            "can you waive the shipping fee",
            "I want a refund of the shipping charge",
            "the delivery fee is too expensive",
            "why is shipping so pricey",
        ],
    ),
    "boots": (
        "ask about our boots",
        [
            "are your boots waterproof",
            "how do I break in the boots",
            "what color are the laces on the boots",
            "how wide are the boots",
            "do the boots come with a warranty",
        ],
    ),
    "shirt": (
        "ask about our shirts",
        [
            "will the shirt shrink in the wash",
            "what material is the shirt",
            "how should I iron this shirt",
            "does the shirt run small",
            "can I tumble dry the shirt",
        ],
    ),
    "jeans": (
        "ask about our jeans",
        [
            "do the jeans stretch",
            "what's the inseam on the jeans",
            "will the jeans fade when washed",
            "how do I wash my jeans",
            "are the jeans slim fit",
        ],
    ),
    "jacket": (
        "ask about our jackets",
        [
            "is the jacket warm enough for winter",
            "can I machine wash the jacket",
            "is the jacket waterproof",
            "does the jacket have inside pockets",
            "what is the jacket lining made of",
        ],
    ),
    "pricing": (
        "ask how our prices work",
        [
            "how do your prices work",
            "do you price match",
            "why do prices change so often",
            "are there discounts for buying in bulk",
            "when do you have sales",
        ],
    ),
    "membership": (
        "ask what membership levels give you",
        [
            "what are the benefits of gold membership",
            "how do membership levels work",
            "what do I get as a silver member",
            "how do I become a gold member",
            "explain the membership tiers",
        ],
    ),
    "timing": (
        "ask how long things take",
        [
            "how long does shipping usually take",
            "when will my order arrive typically",
            "how many days for delivery",
            "how long does a refund take",
            "what are your delivery times",
        ],
    ),
    "policy": (
        "ask about our store policies",
        [
            "what is your return policy",
            "what is your privacy policy",
            "can I exchange an item",
            "what are the store rules for returns",
            "do you have a policy on damaged goods",
        ],
    ),
    "status_active": (
        "check whether your subscription is active",
        [
            "is my subscription still active",
            "did my subscription payment go through",
            "is my premium membership working",
            "check if my subscription renewed",
            "am I still subscribed",
        ],
    ),
    "status_due_amount": (
        "find out how much you owe on your subscription",
        [
            "how much do I owe for my subscription",
            "what's the amount due on my subscription",
            "how much is my subscription bill",
            "what is my current balance for premium",
            "how much do I need to pay for the subscription",
        ],
    ),
    "status_due_date": (
        "find out when your subscription payment is due",
        [
            "when is my subscription payment due",
            "what's the due date for my subscription",
            "when does my subscription renew",
            "when do I have to pay my premium bill",
            "what day is the subscription fee charged",
        ],
    ),
    "manage_pay_bill": (
        "pay your subscription bill",
        [
            "I want to pay my subscription bill",
            "can I pay for my premium subscription now",
            "renew my subscription please",
            "pay the balance on my subscription",
            "I'd like to make a subscription payment",
        ],
    ),
    "manage_extension": (
        "get more time to pay your subscription",
        [
            "can I get an extension on my subscription payment",
            "I can't pay my subscription yet, need more time",
            "please give me extra time to pay the premium fee",
            "delay my subscription payment",
            "I need a few more days to pay my subscription",
        ],
    ),
    "manage_dispute_bill": (
        "dispute a subscription charge",
        [
            "I was billed twice for my subscription",
            "my subscription bill is wrong",
            "dispute a charge on my premium membership",
            "the subscription fee charged is too high",
            "double charged for subscription",
        ],
    ),
    "credit_card": (
        "get help with a credit card that is rejected",
        [
            "my credit card keeps getting declined",
            "the site says my card is invalid",
            "card rejected at checkout",
            "payment fails with my credit card",
            "why won't my card work on your website",
        ],
    ),
    "shopping_cart": (
        "get help with a shopping cart that does not update",
        [
            "my shopping cart isn't updating",
            "items won't add to my cart",
            "the cart stays empty when I add things",
            "can't put anything in the basket",
            "cart doesn't show what I added",
        ],
    ),
    "search_results": (
        "get help with a search that finds nothing",
        [
            "search isn't working on your site",
            "the search bar shows no results",
            "every search says nothing found",
            "I can't find anything with search",
            "searching for products doesn't work",
        ],
    ),
    "slow_speed": (
        "get help with a slow website",
        [
            "your website is so slow",
            "the site takes forever to load",
            "pages are loading really slowly",
            "website keeps lagging",
            "it's too slow to shop on your site",
        ],
    ),
}


# ---- reading the guidelines --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    action: str  # the ontology's name: pull-up-account
    text: str  # what the guideline says about this step (text and subtext)


@dataclass(frozen=True)
class Subflow:
    key: str  # the ontology's subflow key: refund_initiate
    flow: str  # the guideline's flow: Product Defect
    title: str  # the guideline's subflow: Initiate Refund
    flow_description: str
    instructions: tuple[str, ...]
    steps: tuple[Step, ...]


def _flow_key(flow: str) -> str:
    return re.sub(r"[^a-z]+", "_", flow.lower()).strip("_")


def read_subflows(data: Path | None = None) -> list[Subflow]:
    """Every subflow of guidelines.json, with its key from ontology.json (same flows, same order)."""
    data = data or abcd_data_dir()
    guidelines = json.loads((data / "guidelines.json").read_text(encoding="utf-8"))
    ontology = json.loads((data / "ontology.json").read_text(encoding="utf-8"))
    keys: dict[str, list[str]] = ontology["intents"]["subflows"]
    known = {name for group in ontology["actions"].values() for name in group}
    subflows: list[Subflow] = []
    for flow, content in guidelines.items():
        names = keys[_flow_key(flow)]
        titles = list(content["subflows"])
        if len(names) != len(titles):
            raise ValueError(
                f"{flow}: {len(titles)} subflows in the guidelines, {len(names)} in the ontology"
            )
        for key, title in zip(names, titles, strict=True):
            raw = content["subflows"][title]
            steps: list[Step] = []
            for entry in raw["actions"]:
                button = entry["button"].strip()
                if button in NOT_ACTIONS:
                    continue
                action = BUTTONS.get(button) or f"search-{button.lower()}"
                if action not in known:
                    raise ValueError(f"{flow} / {title}: button {button!r} is no action of the ontology")
                text = " ".join([entry["text"], *entry["subtext"]])
                steps.append(Step(action, text))
            subflows.append(
                Subflow(
                    key=key,
                    flow=flow,
                    title=title,
                    flow_description=content.get("description", ""),
                    instructions=tuple(raw.get("instructions") or ()),
                    steps=tuple(steps),
                )
            )
    return subflows


def slots_for(step: Step) -> list[str]:
    for action, pattern, kinds in SLOT_RULES:
        if action == step.action and (pattern is None or re.search(pattern, step.text)):
            return kinds
    return []


def typed_value(step: Step) -> str | None:
    """What the guideline tells the agent to type into the form itself ('troubleshoot', 'website team')."""
    found = re.search(
        r"(?:Enter|Type in|Enter in|put)\s+(?:the value of\s+)?[“'‘]([^'’”]{2,40})[’'”]", step.text
    )
    return found.group(1).lower() if found else None


# ---- writing the workspace ---------------------------------------------------------------------------------


def action_name(subflow: str, action: str) -> str:
    return f"{subflow}__{action.replace('-', '_')}"


def _slot(kind: str) -> dict[str, Any]:
    spec = SLOTS[kind]
    slot: dict[str, Any] = {"name": kind}
    for key in ("description", "from_customer", "type", "pattern", "prompt"):
        if key in spec:
            slot[key] = spec[key]
    return slot


def action_config(subflow: Subflow, step: Step) -> dict[str, Any]:
    kinds = slots_for(step)
    slots = [_slot(kind) for kind in kinds]
    typed = typed_value(step)
    if typed is not None:
        slots.append({"name": "value", "required": False, "default": typed})
    config: dict[str, Any] = {
        "name": action_name(subflow.key, step.action),
        "description": f"[{step.action}] {step.text[:300]}",
        "method": "POST",
        "path": f"/actions/{step.action}",
        "scope": f"abcd:{step.action}",
        "slots": slots,
    }
    if any(SLOTS[kind].get("type") == "money" for kind in kinds):
        config["amount_slot"] = "amount"
        config["max_amount"] = 1000
    if step.action == "offer-refund":
        config["requires_confirmation"] = True
        config["confirmation_prompt"] = (
            "Just to confirm: I'll refund {amount} to you. Shall I go ahead? (yes/no)"
        )
    config["success_reply"] = SAID.get(step.action, "Done.")
    config["failure_reply"] = "That didn't go through, so I'm passing you to a colleague."
    return config


def agent_config(subflow: Subflow) -> dict[str, Any]:
    procedure = " ".join(subflow.instructions)
    steps = " ".join(f"({n}) [{s.action}] {s.text}" for n, s in enumerate(subflow.steps, start=1))
    return {
        "name": subflow.key,
        "description": f"{subflow.flow} / {subflow.title}: {EXAMPLES[subflow.key][0]}.",
        "instructions": f"{procedure} Steps: {steps}".strip(),
        "actions": [action_name(subflow.key, s.action) for s in subflow.steps],
        "max_turns": 16,
    }


def intent_config(subflow: Subflow, mechanism: str = "agent") -> dict[str, Any]:
    description, examples = EXAMPLES[subflow.key]
    config: dict[str, Any] = {
        "name": subflow.key,
        "description": description,
        "mechanism": mechanism,
    }
    if mechanism == "agent":
        config["agent"] = subflow.key
    else:
        config["action"] = action_name(subflow.key, subflow.steps[-1].action)
    config.update(owner="abcd-benchmark@example.org", queue="general", examples=examples)
    return config


SETTINGS = {
    "version": 1,
    "name": "AcmeCorp (ABCD benchmark)",
    "language": "en",
    "description": "The online clothing store of the Action-Based Conversations Dataset (Chen et al., NAACL "
    "2021): one micro-agent per subflow, each following the human agents' written procedure.",
    "scope": "your account, orders, refunds and returns, shipping, promo codes, your subscription and our "
    "products",
    "channels": ["api"],
    "currency": "USD",
    "locale": "en_US",
    "embedder": "minilm",
    "thresholds": {
        "route_min_confidence": 0.30,
        "clarify_margin": 0.05,
        "max_clarifications": 1,
    },
    "escalation": {"default_queue": "general", "queues": [{"name": "general"}]},
    "connectors": {
        "backoffice": {
            "type": "http",
            "base_url": "http://127.0.0.1:9",
            "timeout_s": 3,
            "retries": 1,
            "backoff_s": 0.1,
            "identity_header": "X-Customer-Id",
        }
    },
}
STRATEGY = {
    "version": 1,
    "tiers": [{"name": "standard", "min_arr": 0}],
    "default_tier": "standard",
    "rules": [],
}


def _dump(header: str, content: dict[str, Any]) -> str:
    body = yaml.safe_dump(content, sort_keys=False, allow_unicode=True, width=110)
    note = "# Written by `python -m benchmarks._abcd_workspace` from guidelines.json: edit that module."
    return f"# {header}\n{note}\n{body}"


def workspace_files(subflows: list[Subflow]) -> dict[str, str]:
    missing = [s.key for s in subflows if s.key not in EXAMPLES]
    if missing:
        raise ValueError(f"no intent examples for {', '.join(missing)}")
    return {
        "cxstack.yaml": _dump("ABCD benchmark workspace: settings", SETTINGS),
        "strategy.yaml": _dump("ABCD benchmark workspace: one tier, no rules", STRATEGY),
        "intents.yaml": _dump(
            "ABCD benchmark workspace: one intent per subflow, each served by its micro-agent",
            {"version": 1, "intents": [intent_config(s) for s in subflows]},
        ),
        "actions.yaml": _dump(
            "ABCD benchmark workspace: one action per (subflow, button) against the local back office",
            {"version": 1, "actions": [action_config(s, step) for s in subflows for step in s.steps]},
        ),
        "agents/abcd.yaml": _dump(
            "ABCD benchmark workspace: one micro-agent per subflow, its buttons in the guideline's order",
            {"version": 1, "agents": [agent_config(s) for s in subflows]},
        ),
    }


def write(out: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def differences(out: Path, files: dict[str, str]) -> Iterator[str]:
    for name, text in files.items():
        path = out / name
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            yield from difflib.unified_diff(
                current.splitlines(),
                text.splitlines(),
                f"{name} (committed)",
                f"{name} (guidelines)",
                lineterm="",
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=WORKSPACE)
    parser.add_argument(
        "--check", action="store_true", help="compare with the committed workspace; write nothing"
    )
    args = parser.parse_args(argv)
    files = workspace_files(read_subflows())
    if args.check:
        diff = list(differences(args.out, files))
        print("\n".join(diff[:200]) if diff else f"{args.out} is up to date")
        return 1 if diff else 0
    write(args.out, files)
    print(f"wrote {len(files)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
