"""Extractive copy: the item's name, an interest hook, then whole clean sentences of its own description.

Two uses. It is the rule the small copy model's training targets follow (`training.adcopy.finetune`), and it is
the pretrained writer's fallback before the template: when no generated candidate both passes the checks and
states something concrete, the record's own sentences usually do (they are grounded by construction and still
go through the same checks), where the template only names the item and its category. A marketer would ship
the sentence that says "Fits the T25, T25x & T2025 staplers" over "A fit with your Staples picks".
"""

from __future__ import annotations

from collections.abc import Sequence

from recsys.adcopy.checks import MAX_BODY, MAX_HEADLINE, Copy, check_copy
from recsys.adcopy.facts import CatalogueFacts
from recsys.adcopy.prompt import HOOKS, clean_sentences, prompt_description, shorten
from recsys.adcopy.quality import copy_quality
from recsys.adcopy.records import ItemRecord

__all__ = ["EXTRACTIVE_FALLBACK", "body_from", "extractive_copy", "informative_extractive_copy"]

EXTRACTIVE_FALLBACK = "no informative candidate passed: the record's own sentences"


def body_from(hook: str, sentences: Sequence[str], limit: int = MAX_BODY) -> str:
    """The hook, then whole sentences while they fit; a first sentence too long for the space is cut."""
    body = hook
    for sentence in sentences:
        joined = f"{body} {sentence}".strip()
        if len(joined) <= limit:
            body = joined
        elif body == hook:
            body = shorten(joined, limit)
            break
        else:
            break
    return body


def extractive_copy(
    record: ItemRecord, interest: str | None, max_headline: int = MAX_HEADLINE, max_body: int = MAX_BODY
) -> Copy:
    """Headline: the name cut to fit. Body: the first hook for the interest, then the clean sentences of the
    description's opening (the part a model's prompt shows)."""
    hook = HOOKS[0].format(interest=interest) if interest else ""
    body = body_from(hook, clean_sentences(prompt_description(record)), max_body)
    return Copy(shorten(record.name, max_headline), body)


def informative_extractive_copy(
    record: ItemRecord,
    interest: str | None,
    facts: CatalogueFacts,
    max_headline: int = MAX_HEADLINE,
    max_body: int = MAX_BODY,
) -> Copy | None:
    """The extractive copy when it passes every check and is informative (a fact beyond the name, no catalogue
    boilerplate); None otherwise, and the template is then the fallback."""
    copy = extractive_copy(record, interest, max_headline, max_body)
    informative = copy_quality(copy, record).informative  # an empty body states nothing beyond the name
    return copy if informative and check_copy(copy, record, facts, max_headline, max_body).ok else None
