"""Extractive copy: the item's name, an interest hook, then whole clean sentences of its own description.

Two uses. It is the rule the small copy model's training targets follow (`training.adcopy.finetune`), and the
record's own sentences are options beside the pretrained writer's candidates: when no candidate both passes the
checks and states something concrete, or when the record's sentences read better than those that do, they answer
(grounded by construction, and still through the same checks), where the template only names the item and its
category. A marketer would ship the sentence that says "Fits the T25, T25x & T2025 staplers" over "A fit with
your Staples picks".

The fallback reads the description's opening first (what the model's prompt shows); when that says nothing
concrete ("Anderson Metals brass fittings are made to last.") or says it twice, it takes the sentences further
down that state a fact (a size, a material, a use), as a copywriter skimming the whole description would.
"""

from __future__ import annotations

from collections.abc import Sequence

from recsys.adcopy.checks import MAX_BODY, MAX_HEADLINE, Copy, check_copy
from recsys.adcopy.facts import CatalogueFacts
from recsys.adcopy.prompt import HOOKS, clean_sentences, prompt_description, shorten, whole_description
from recsys.adcopy.quality import boilerplate, concrete_facts, copy_quality
from recsys.adcopy.records import ItemRecord

__all__ = ["EXTRACTIVE_FALLBACK", "body_from", "extractive_copy", "fact_sentences", "informative_extractive_copies"]

EXTRACTIVE_FALLBACK = "the record's own sentences: no informative candidate passed, or they read better"


def body_from(hook: str, sentences: Sequence[str], limit: int = MAX_BODY, *, skip_long: bool = False) -> str:
    """The hook, then whole sentences while they fit. With `skip_long` a sentence that does not fit is passed
    over so later, shorter ones still get their place; without, the body stops there. When no sentence fits
    beside the hook, the first is cut to fit."""
    body = hook
    for sentence in sentences:
        joined = f"{body} {sentence}".strip()
        if len(joined) <= limit:
            body = joined
        elif not skip_long:
            break
    if body == hook and sentences:
        body = shorten(f"{hook} {sentences[0]}".strip(), limit)
    return body


def hook_for(interest: str | None) -> str:
    """The extractive copy's opening words for a shopper's interest ("" without one)."""
    return HOOKS[0].format(interest=interest) if interest else ""


def fact_sentences(record: ItemRecord) -> list[str]:
    """The clean sentences of the whole description, in order and each once, that state a fact beyond the item's
    name and carry no catalogue boilerplate (a code, a label) of their own."""
    sentences = dict.fromkeys(clean_sentences(whole_description(record)))  # sellers paste a sentence twice
    return [s for s in sentences if concrete_facts(s, record) and not boilerplate(s, record)]


def extractive_copy(
    record: ItemRecord, interest: str | None, max_headline: int = MAX_HEADLINE, max_body: int = MAX_BODY
) -> Copy:
    """Headline: the name cut to fit. Body: the first hook for the interest, then the clean sentences of the
    description's opening (the part a model's prompt shows)."""
    body = body_from(hook_for(interest), clean_sentences(prompt_description(record)), max_body)
    return Copy(shorten(record.name, max_headline), body)


def informative_extractive_copies(
    record: ItemRecord,
    interest: str | None,
    facts: CatalogueFacts,
    max_headline: int = MAX_HEADLINE,
    max_body: int = MAX_BODY,
) -> list[Copy]:
    """The record's own sentences, as copies that pass every check and are informative (a fact beyond the name,
    no catalogue boilerplate): the extractive copy of the description's opening, then the hook and the sentences
    of the whole description that state a fact (when that is a different copy). Empty when neither is, and the
    template is then the fallback. Two, not one, so a writer can prefer the one that does not repeat itself."""

    def usable(copy: Copy) -> bool:  # an empty body states nothing beyond the name, so is never informative
        return copy_quality(copy, record).informative and check_copy(copy, record, facts, max_headline, max_body).ok

    opening = extractive_copy(record, interest, max_headline, max_body)
    further = Copy(opening.headline, body_from(hook_for(interest), fact_sentences(record), max_body, skip_long=True))
    return [copy for copy in dict.fromkeys((opening, further)) if usable(copy)]
