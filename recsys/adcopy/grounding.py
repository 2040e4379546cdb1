"""Grounding: which facts a copy states that its item's catalogue record does not support.

Checked are the facts a text model invents most and a reader relies on most: numbers (by value: "30ml" =
"30 ml", "1/2" = "0.5", "twenty" = 20), catalogue brands and product-type nouns (plural-insensitive), each
looked up in the record's ``facts_text``. Style and claims are left to the claims filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from recsys.adcopy._text import Value, fold, letter_words, numbers, singular, words
from recsys.adcopy.facts import CatalogueFacts
from recsys.adcopy.records import ItemRecord

__all__ = ["Fact", "unsupported_facts"]


@dataclass(frozen=True)
class Fact:
    """A fact stated by a copy: its kind and its text (a number or word as written, a brand's folded words)."""

    kind: str  # "number" | "brand" | "product_type"
    value: str


@dataclass(frozen=True)
class _Known:
    """The numbers, singular words and word sequence of one text."""

    numbers: frozenset[Value]
    singulars: frozenset[str]
    token_text: str  # " w1 w2 ... ", to find brand word sequences

    @classmethod
    def of(cls, text: str) -> _Known:
        folded = fold(text)
        values: set[Value] = set()
        for _, value, parts in numbers(folded):
            values.add(value)
            values.update(parts)
        singulars = frozenset(map(singular, set(letter_words(folded))))
        return cls(frozenset(values), singulars, f" {' '.join(words(folded))} ")


class _Support:
    """What one record supports: the short fields first, the long description only when they do not
    suffice (most copies quote the name, so most checks never read the description)."""

    __slots__ = ("_full", "core", "record")

    def __init__(self, record: ItemRecord) -> None:
        self.record = record
        short = [record.name, record.brand, " > ".join(record.categories), record.price_text]
        self.core = _Known.of("\n".join(p for p in short if p))
        self._full: _Known | None = None

    def full(self) -> _Known:
        if self._full is None:
            self._full = _Known.of(self.record.facts_text()) if self.record.description else self.core
        return self._full

    def number(self, value: Value) -> bool:
        return value in self.core.numbers or value in self.full().numbers

    def noun(self, key: str) -> bool:
        return key in self.core.singulars or key in self.full().singulars

    def brand(self, tokens: tuple[str, ...]) -> bool:
        needle = f" {' '.join(tokens)} "
        return needle in self.core.token_text or needle in self.full().token_text


@lru_cache(maxsize=65536)
def _support(record: ItemRecord) -> _Support:
    return _Support(record)


def unsupported_facts(text: str, record: ItemRecord, facts: CatalogueFacts) -> list[Fact]:
    """Facts in ``text`` (numbers, catalogue brands, product-type nouns) that ``record`` does not support, in
    order of kind then appearance, each once."""
    support = _support(record)
    folded = fold(text)
    found: dict[Fact, None] = {}
    for written, value, _ in numbers(folded):
        if not support.number(value):
            found.setdefault(Fact("number", written.strip()), None)

    tokens = words(folded)
    in_brand = [False] * len(tokens)  # words of a brand are not also product types ("Porter Cable")
    index = facts.brand_index()
    i = 0
    while i < len(tokens):
        for brand in index.get(tokens[i], ()):
            if tuple(tokens[i : i + len(brand)]) == brand:
                if not support.brand(brand):
                    found.setdefault(Fact("brand", " ".join(brand)), None)
                in_brand[i : i + len(brand)] = [True] * len(brand)
                i += len(brand) - 1
                break
        i += 1

    for token, branded in zip(tokens, in_brand, strict=True):
        if branded:
            continue
        for word in letter_words(token):
            key = singular(word)
            if key in facts.product_nouns and not support.noun(key):
                found.setdefault(Fact("product_type", word), None)
    return list(found)
