"""Interests: what an item shares with a user's history, for personalised but grounded copy.

Why these rules: "picked for your interest in X" must be true twice over — X must be a fact of the item (so
the copy stays grounded) and X must really occur in the user's history (so the personalisation is honest).
Category parts held by more than 30% of the catalogue (the root, "Beauty") say nothing about a person and
are skipped; so are category "parts" that are really sentences the source split into the path.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

from recsys.adcopy._text import fold, singular, words
from recsys.adcopy.facts import CatalogueFacts, category_key, is_clean_category
from recsys.adcopy.records import ItemRecord

__all__ = ["MAX_INTEREST_SHARE", "history_interests", "names_interest", "shared_interest"]

MAX_INTEREST_SHARE = 0.3


def _terms(record: ItemRecord, facts: CatalogueFacts) -> Iterator[tuple[str, str, int]]:
    """(key, phrase as written, specificity) of a record's interest terms: category parts deeper = more
    specific (1, 2, ...), the brand 0 (a category says more about a taste than a maker)."""
    for depth, part in enumerate(record.categories, start=1):
        key = category_key(part)
        if facts.category_share.get(key, 0.0) <= MAX_INTEREST_SHARE and is_clean_category(part):
            yield key, part, depth
    if record.brand:
        yield category_key(record.brand), record.brand, 0


def history_interests(history: Sequence[ItemRecord], facts: CatalogueFacts) -> set[str]:
    """Casefolded category parts (share <= 0.3) and brands of the history: the interests a copy may name."""
    return {key for record in history for key, _, _ in _terms(record, facts)}


def shared_interest(item: ItemRecord, history: Sequence[ItemRecord], facts: CatalogueFacts) -> str | None:
    """The item's category part or brand that the history shares, as the item's record writes it; the one
    most history items share wins, ties go to the more specific. None without history or overlap."""
    counts: Counter[str] = Counter()
    for record in history:
        counts.update({key for key, _, _ in _terms(record, facts)})
    best: tuple[int, int] | None = None
    phrase: str | None = None
    for key, written, specificity in _terms(item, facts):
        score = (counts[key], specificity)
        if counts[key] and (best is None or score > best):
            best, phrase = score, written
    return phrase


def _key_words(text: str) -> str:
    """ " w1 w2 " of singular words, connectors dropped: "Adhesives & Sealants" ~ "adhesives and sealant"."""
    kept = [singular(w) for w in words(text) if w not in {"and", "the", "of"}]
    return f" {' '.join(kept)} "


def names_interest(text: str, interests: set[str]) -> bool:
    """Whether ``text`` names one of ``interests`` (whole words; case, plural, '&'/'and' insensitive)."""
    haystack = _key_words(fold(text))
    return any(needle.strip() and needle in haystack for needle in map(_key_words, interests))
