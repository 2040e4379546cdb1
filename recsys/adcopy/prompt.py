"""The text format the copy model reads and writes, shared by training (targets) and serving (prompts, parsing).

One example is one string, ``<copy><interest>..<name>..<brand>..<cat>..<price>..<desc>..<headline>..<body>..<eos>``,
where the interest is a phrase of the item's record that the user's history shares (or nothing). The model
learns the text after ``<headline>``; everything before it is the prompt.
"""

from __future__ import annotations

import re

from recsys.adcopy.checks import Copy
from recsys.adcopy.claims import claim_violations
from recsys.adcopy.quality import catalogue_furniture
from recsys.adcopy.records import ItemRecord

PAD, EOS = "<pad>", "<eos>"
TASK, INTEREST, NAME, BRAND, CATEGORY, PRICE, DESCRIPTION, HEADLINE, BODY = (
    "<copy>",
    "<interest>",
    "<name>",
    "<brand>",
    "<cat>",
    "<price>",
    "<desc>",
    "<headline>",
    "<body>",
)
SPECIAL_TOKENS = [PAD, EOS, TASK, INTEREST, NAME, BRAND, CATEGORY, PRICE, DESCRIPTION, HEADLINE, BODY]
MAX_FIELD_CHARS = 160  # a field longer than this is cut: the prompt must fit the model's block
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_BOILERPLATE = re.compile(r"amazon\.com|click|http|www\.|\bwe\b|\bour\b|\bus\b|\?", re.IGNORECASE)
MAX_DESCRIPTION_CHARS = 300  # the description's opening: what the copy's body may draw its sentences from

# Openings that tie the body to the user's interest; the model learns to write one when it is given an interest.
HOOKS = (
    "Picked for your interest in {interest}.",
    "Because you like {interest}:",
    "More for your {interest} list.",
    "A fit with your {interest} picks.",
    "Chosen with your {interest} in mind.",
)


def _field(text: str | None, limit: int = MAX_FIELD_CHARS) -> str:
    text = re.sub(r"\s+", " ", text or "").strip()
    for token in SPECIAL_TOKENS:
        text = text.replace(token, " ")
    return shorten(text, limit)


def shorten(text: str, limit: int) -> str:
    """Cut at the last word boundary that fits (never mid-word) and drop dangling punctuation."""
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text[: limit + 1].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return cut.rstrip(" ,;:-–(/&").strip()


def whole_description(record: ItemRecord) -> str:
    """The record's description, whitespace collapsed ("" without one)."""
    return re.sub(r"\s+", " ", record.description or "")


def prompt_description(record: ItemRecord) -> str:
    """The part of the record's description the model reads (its opening, whitespace collapsed)."""
    return shorten(whole_description(record), MAX_DESCRIPTION_CHARS)


def clean_sentences(description: str | None) -> list[str]:
    """The description's sentences a copy may reuse: no claims, no seller boilerplate, no catalogue field labels
    or category paths ("Category: Beauty > Hair Care." is the catalogue talking, not the product), no questions."""
    if not description:
        return []
    sentences = [s.strip() for s in _SENTENCE_END.split(description) if len(s.strip()) >= 20]
    return [
        s for s in sentences if not _BOILERPLATE.search(s) and not catalogue_furniture(s) and not claim_violations(s)
    ]


def build_prompt(record: ItemRecord, interest: str | None) -> str:
    parts = [TASK, INTEREST, _field(interest), NAME, _field(record.name)]
    if record.brand:
        parts += [BRAND, _field(record.brand)]
    if record.categories:
        parts += [CATEGORY, _field(record.categories[-1])]
    if record.price_text is not None:
        parts += [PRICE, record.price_text]
    description = prompt_description(record)
    if description:
        parts += [DESCRIPTION, _field(description, MAX_DESCRIPTION_CHARS)]
    return "".join(parts) + HEADLINE


def build_target(copy: Copy) -> str:
    return f"{copy.headline}{BODY}{copy.body}{EOS}"


def parse_copy(generated: str) -> Copy | None:
    """The copy from the text generated after the prompt; None when the model did not write both parts."""
    text = generated.split(EOS, 1)[0]
    if BODY not in text:
        return None
    headline, body = (re.sub(r"\s+", " ", part).strip() for part in text.split(BODY, 1))
    if not headline or not body or any(token in headline + body for token in SPECIAL_TOKENS):
        return None
    return Copy(headline, body)
