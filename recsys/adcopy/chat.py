"""The chat format a pretrained instruct model (SmolLM2) reads and writes for ad copy; torch-free.

The record's fields go into one user turn as `Label: value` lines, in the copy model's prompt order with the
shopper's interest last; the assistant turn is `Headline: ...` then `Body: ...`, closed by `<|im_end|>`.
SmolLM2's chat template is written out by hand so that fine-tuning, the batch writer and the service tokenise
alike; the loss is on the assistant's text only.
"""

from __future__ import annotations

import re

from recsys.adcopy.checks import Copy
from recsys.adcopy.prompt import (
    BODY,
    BRAND,
    CATEGORY,
    DESCRIPTION,
    EOS,
    HEADLINE,
    INTEREST,
    NAME,
    PRICE,
    SPECIAL_TOKENS,
    TASK,
    build_prompt,
)
from recsys.adcopy.records import ItemRecord

__all__ = ["IM_END", "IM_START", "SYSTEM", "chat_prompt", "chat_target", "parse_generated", "record_prompt"]

SYSTEM = (
    "Write an ad for this product: a headline (at most 60 characters) and a body (at most 160 characters). "
    "Use only facts from the record."
)
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
LABELS = {
    NAME: "Product",
    BRAND: "Brand",
    CATEGORY: "Category",
    PRICE: "Price",
    DESCRIPTION: "Description",
    INTEREST: "Shopper's interest",
}
_SPECIAL = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")


def prompt_fields(copy_prompt: str) -> dict[str, str]:
    """The copy model's prompt (`<copy><interest>...<name>...`) back into its fields."""
    parts = _SPECIAL.split(copy_prompt)
    return {token: value.strip() for token, value in zip(parts[1::2], parts[2::2], strict=True) if value.strip()}


def chat_prompt(copy_prompt: str) -> str:
    """The copy model's prompt as a chat turn, up to and including the assistant's `Headline:` (a field the
    copy format adds later gets a label from its token's name)."""
    fields = prompt_fields(copy_prompt)
    order = [t for t in fields if t not in (TASK, INTEREST, HEADLINE)] + ([INTEREST] if INTEREST in fields else [])
    user = "\n".join(f"{LABELS.get(t, t.strip('<>').capitalize())}: {fields[t]}" for t in order)
    return f"{IM_START}system\n{SYSTEM}{IM_END}\n{IM_START}user\n{user}{IM_END}\n{IM_START}assistant\nHeadline:"


def record_prompt(record: ItemRecord, interest: str | None) -> str:
    """The chat prompt for one item and the interest its user's history shares (or None)."""
    return chat_prompt(build_prompt(record, interest))


def chat_target(copy_target: str) -> str:
    """The copy model's target (`headline<body>body<eos>`) as the assistant's text after `Headline:`."""
    headline, body = copy_target.removesuffix(EOS).split(BODY, 1)
    return f" {headline.strip()}\nBody: {body.strip()}{IM_END}"


def copy_target(copy: Copy) -> str:
    """A copy as the assistant's text after `Headline:` (what fine-tuning learns)."""
    return f" {copy.headline.strip()}\nBody: {copy.body.strip()}{IM_END}"


def parse_generated(text: str) -> tuple[Copy | None, str]:
    """(the copy, or None when there is no `Body:`; the raw text up to the end of the turn).

    The headline is the last line before `Body:`, the body the line after it: what a model writes past that
    line (another `Body:`, a `Brand:` field of its own) is not copy."""
    raw = text.split(IM_END, 1)[0]
    flat = re.sub(r"\s+", " ", raw).strip()
    if "Body:" not in raw:
        return None, flat
    before, after = raw.split("Body:", 1)
    headline = before.strip().splitlines()[-1].strip() if before.strip() else ""
    body = re.split(r"\n|Body:|Headline:", after.strip(), maxsplit=1)[0]
    headline = re.sub(r"\s+", " ", headline.removeprefix("Headline:")).strip()
    body = re.sub(r"\s+", " ", body).strip()
    return (Copy(headline, body) if headline and body else None), flat
