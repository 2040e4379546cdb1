"""Catalogue-wide vocabularies that grounding needs: which words name a brand or a product type at all.

Why: a copy may only state facts of its own item, but "does this word state a fact?" is a question about the
whole catalogue. A brand or a product-type noun ("glove", "serum") that the catalogue knows but this item's
record never mentions is an invented fact; ordinary words are not. Built once from the records (batch side)
and shipped in the serving bundle as JSON.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from recsys.adcopy._text import (
    GENERIC,
    STOPWORDS,
    UNIT_WORDS,
    fold,
    letter_words,
    singular,
    squash,
    words,
    wordset,
)
from recsys.adcopy.records import ItemRecord

__all__ = ["CatalogueFacts", "category_key", "is_clean_category"]

_JSON_VERSION = 1
# a name's core: the text before its first clause break (", " / " - " / "(" / " for " ...)
_CLAUSE = re.compile(
    r"[,;:(\[|]|\s[-/+]\s|\s(?:for|with|w/|in|fits|compatible|by|from|and|or|to|on|of|includes?)\s", re.IGNORECASE
)
_SEGMENT = re.compile(r",|&|/|\band\b")
_TOKEN = re.compile(r"[^\W_]+")
_ADJECTIVE_ENDINGS = ("al", "ic", "ive", "ous", "ful", "less", "able", "ible", "ary", "ed", "ish", "ant", "ent")
_ABSTRACT_ENDINGS = ("tion", "sion", "ment", "ness", "ity", "ance", "ence", "ure", "th", "ism", "ship", "ing")
# category and name words that say how, where or of what things are used rather than what they are
_NOT_PRODUCTS = frozenset(
    map(
        singular,
        wordset(
            """
            apparel consumables disposables diagnostics screening calibration filtration furniture environmental
            occupational emergency response additive agricultural automotive marine food service dental
            veterinary anatomy biology chemistry physics microscopy optics robotics electronics accessories
            supplies signage displayware labware glassware hardware tools parts controls male female straight free
            full cool warm clean total upright medium poly end gift group number print project proof purpose push
            ratio shop start step surface transport travel value pac action voltage volume weight work peak throat
            trauma odor glow tone kitchen color colour force motion network prep included connect building
            trespassing wall stock general special specialty multipurpose two three four five six seven eight nine
            ten eleven twelve hundred thousand dozen half 3d length width height depth thickness diameter
            temperature grit package packet analysis hygiene respiratory measuring fusing linear spectrometry
            conversion
            support guide cover stand stop seal base center counter hole link trim wrap drive shock strip punch
            insert register monitor handle block stick lap
            """  # the last two lines: nouns that are also everyday verbs in copy ("sticks to", "seals tight")
        ),
    )
)


@lru_cache(maxsize=65536)
def category_key(part: str) -> str:
    """How a category part or brand is compared: folded, whitespace collapsed."""
    return squash(fold(part))


def is_clean_category(part: str) -> bool:
    """A real category name ("Sanding Rolls"), not a sentence the source split into the path by mistake."""
    tokens = part.split()
    return (
        0 < len(tokens) <= 6
        and len(part) <= 48
        and "&amp" not in part
        and all(t[0].isupper() or t[0].isdigit() or t in {"&", "and", "of", "for", "de", "a", "the"} for t in tokens)
    )


def _brand_tokens(record: ItemRecord) -> set[str]:
    return set(words(record.brand)) if record.brand else set()


def _name_head(record: ItemRecord) -> str | None:
    """The head noun of a product name: the last real word of its core ("... Sanding Roll" -> "roll")."""
    core = _CLAUSE.split(record.name, maxsplit=1)[0]
    tokens = _TOKEN.findall(core)
    skip = _brand_tokens(record)
    for i in range(len(tokens) - 1, -1, -1):
        token = tokens[i]
        low = fold(token)
        after_number = i > 0 and any(c.isdigit() for c in tokens[i - 1])
        if (
            any(c.isdigit() for c in token)
            or low in STOPWORDS
            or low in skip
            or (low in UNIT_WORDS and (after_number or low in {"pcs", "pc", "pk", "ct", "count", "pack"}))
            or (token.isupper() and len(token) <= 4)  # codes and acronyms: "SPF", "LCD", "NPT"
        ):
            continue
        if low in GENERIC or not low.isalpha():
            continue
        return singular(low)
    return None


def _product_nouns(records: list[ItemRecord]) -> frozenset[str]:
    """Product-type nouns: heads of category-name segments and head nouns of names seen at least twice.

    Heuristics stand in for a part-of-speech tagger: a word the categories also write in the plural is a noun;
    an adjective-looking word ("abrasive", "industrial") needs that plural; an abstract-looking one
    ("pressure", "plumbing") needs the plural or three names ending in it; a word only names give must end 2
    names (3 if it is 3 letters or also a word of some brand, like "Briess"). Umbrella and usage words are
    excluded by list.
    """
    heads: set[str] = set()
    plurals: set[str] = set()  # nouns the categories write in the plural: nouns, not adjectives
    for part in {part for r in records for part in r.categories}:
        if not is_clean_category(part):
            continue
        for segment in _SEGMENT.split(fold(part)):
            tokens = letter_words(segment)
            if tokens:
                head = singular(tokens[-1])
                heads.add(head)
                if head != tokens[-1]:
                    plurals.add(head)
    brand_words = {w for r in records for w in _brand_tokens(r)}
    name_heads = Counter(h for h in map(_name_head, records) if h is not None)
    from_names = {h for h, n in name_heads.items() if n >= (3 if len(h) < 4 or h in brand_words else 2)}
    nouns = set()
    for word in heads | from_names:
        if len(word) < 3 or word in STOPWORDS or word in GENERIC or word in _NOT_PRODUCTS:
            continue
        if word.endswith(_ADJECTIVE_ENDINGS) and word not in plurals:
            continue
        if word.endswith(_ABSTRACT_ENDINGS) and word not in plurals and name_heads[word] < 3:
            continue
        nouns.add(word)
    return frozenset(nouns)


_LOWER_WORD = re.compile(r"(?<![\w-])[a-z]{2,}(?![\w-])")


def _everyday_words(records: list[ItemRecord], min_items: int = 3) -> set[str]:
    """Words the catalogue writes in lower case in the text of at least ``min_items`` items of other brands:
    ordinary words ("workshop"), even when some brand is called that."""
    counts: Counter[str] = Counter()
    for record in records:
        own = _brand_tokens(record)
        text = f"{record.name} {record.description or ''}"
        counts.update(w for w in set(_LOWER_WORD.findall(text)) if w not in own)
    return {w for w, n in counts.items() if n >= min_items}


def _generic_brand(brand: str, vocabulary: set[str]) -> bool:
    """A brand made only of everyday or catalogue words ("Small Parts", "Workshop", "Generic") cannot be told
    apart from ordinary copy, so it is not matched as a brand."""
    return all(t in vocabulary or singular(t) in vocabulary for t in words(brand))


@dataclass
class CatalogueFacts:
    """Brands, product-type nouns and category shares of a whole catalogue (see the module docstring)."""

    brands: frozenset[str]  # casefolded brand names (len >= 2), generic ones left out
    product_nouns: frozenset[str]  # casefolded singular product-type nouns
    category_share: dict[str, float]  # casefolded category part -> share of items having it
    _brand_index: dict[str, list[tuple[str, ...]]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _indexed: frozenset[str] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_records(cls, records: Iterable[ItemRecord]) -> CatalogueFacts:
        """Vocabularies of a catalogue's records (a dict's ``.values()`` is fine)."""
        records = list(records)
        nouns = _product_nouns(records)
        counts: Counter[str] = Counter()
        for record in records:
            counts.update({category_key(p) for p in record.categories})
        share = {k: n / len(records) for k, n in counts.items()} if records else {}
        vocabulary = set(STOPWORDS | GENERIC | nouns) | {"generic", "unbranded", "unknown", "none", "na", "oem"}
        vocabulary |= {singular(w) for part in counts for w in letter_words(part)} | _everyday_words(records)
        brands = {category_key(r.brand) for r in records if r.brand}
        brands = {b for b in brands if len(b) >= 2 and words(b) and not _generic_brand(b, vocabulary)}
        return cls(brands=frozenset(brands), product_nouns=nouns, category_share=share)

    def brand_index(self) -> dict[str, list[tuple[str, ...]]]:
        """Brand word sequences by first word, longest first (rebuilt if ``brands`` was replaced)."""
        if self._indexed is not self.brands:
            index: dict[str, list[tuple[str, ...]]] = {}
            for brand in self.brands:
                tokens = tuple(words(brand))
                if tokens:
                    index.setdefault(tokens[0], []).append(tokens)
            for sequences in index.values():
                sequences.sort(key=len, reverse=True)
            self._brand_index, self._indexed = index, self.brands
        return self._brand_index

    def to_json(self) -> dict:
        """A JSON-ready dict (sorted, so the bundle file is deterministic)."""
        return {
            "version": _JSON_VERSION,
            "brands": sorted(self.brands),
            "product_nouns": sorted(self.product_nouns),
            "category_share": dict(sorted(self.category_share.items())),
        }

    @classmethod
    def from_json(cls, d: dict) -> CatalogueFacts:
        """Inverse of :meth:`to_json`."""
        version = d.get("version", _JSON_VERSION)
        if version != _JSON_VERSION:
            raise ValueError(f"unsupported CatalogueFacts version {version!r} (expected {_JSON_VERSION})")
        return cls(
            brands=frozenset(d.get("brands", ())),
            product_nouns=frozenset(d.get("product_nouns", ())),
            category_share={str(k): float(v) for k, v in d.get("category_share", {}).items()},
        )
