"""How a copy reads: repeated phrases, catalogue boilerplate, and whether it says anything concrete.

Why beside the checks: the checks make copy safe (no unsupported fact, no claim, within length); these say
whether it is worth reading. A copy can pass every check by reciting the catalogue ("Category: Beauty > Hair
Care > Hair Masks") or by repeating itself, and it is then safe and useless. The ad-copy benchmark scores every
system with both, and the same functions can refuse boilerplate before it ships.

- :func:`repeated_ngram_rate`: the share of a copy's word n-grams that repeat an earlier one in the same copy.
- :func:`boilerplate`: catalogue furniture in a copy: field labels ("Category:", "SKU:"), category paths
  ("Hair Care > Hair Masks", or two adjacent parts of the record's path in a row) and product codes that are
  not part of the product's name (the item ID, "B00X4WHP5E").
- :func:`concrete_facts`: what the copy states about the item beyond its name, brand and category: numbers
  (a size, a count, the price) and content words of the record's description (a material, a use). A copy is
  *informative* when it states at least one number or two such words and has no boilerplate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from recsys.adcopy._text import GENERIC, STOPWORDS, UNIT_WORDS, fold, numbers, singular, words
from recsys.adcopy.checks import Copy, as_text
from recsys.adcopy.records import ItemRecord

__all__ = ["CopyQuality", "boilerplate", "catalogue_furniture", "concrete_facts", "copy_quality", "repeated_ngram_rate"]

# "Category:", "Price:", "SKU #", "Item ID:" ... a catalogue field label, not something a person would write
_FIELD_LABEL = re.compile(
    r"\b(?:categor(?:y|ies)|department|brand|price|msrp|sku|asin|upc|ean|item\s*id|product\s*id|item\s*(?:no|number)|"
    r"model\s*(?:no|number)|part\s*(?:no|number))\s*[:#=|]",
    re.IGNORECASE,
)
_PATH_SEPARATOR = re.compile(r"\w\s*[>»›|]\s*\w")
# an upper-case token mixing letters and digits, 6+ characters: an ASIN, a SKU, a catalogue code; a quantity
# written in capitals ("1000ML") is not one
_CODE = re.compile(r"(?<![\w-])(?=[A-Z0-9]*\d)(?=[A-Z0-9]*[A-Z])[A-Z0-9]{6,}(?![\w-])")
_QUANTITY = re.compile(r"\d+[A-Z]{1,3}")
_MIN_CONTENT_CHARS = 4  # "use", "kit", "for" say nothing concrete
INFORMATIVE_WORDS = 2  # content words of the description a copy needs, when it states no number


def catalogue_furniture(text: str) -> bool:
    """A catalogue field label ("Category:", "Price:") or a category path separator ("Care > Masks") in the text:
    what a copy must not repeat from a record, whatever record it is."""
    return bool(_FIELD_LABEL.search(text) or _PATH_SEPARATOR.search(text))


def repeated_ngram_rate(text: str, n: int = 3) -> float:
    """Share of the text's word n-grams that already occurred earlier in it (0 for a text shorter than n)."""
    tokens = words(text)
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


def _contains_run(haystack: list[str], needle: list[str]) -> bool:
    width = len(needle)
    return width > 0 and any(haystack[i : i + width] == needle for i in range(len(haystack) - width + 1))


def boilerplate(text: str, record: ItemRecord) -> list[str]:
    """Catalogue furniture in the text, as readable reasons (empty when there is none)."""
    found = [f"field label '{m.group(0)}'" for m in _FIELD_LABEL.finditer(text)]
    found += [f"category path separator '{m.group(0)}'" for m in _PATH_SEPARATOR.finditer(text)]
    tokens = words(text)
    for upper, lower in zip(record.categories, record.categories[1:], strict=False):
        if _contains_run(tokens, words(upper) + words(lower)):
            found.append(f"category path '{upper} {lower}'")
    name_tokens = set(re.findall(r"[\w-]+", record.name))
    codes = [code for code in _CODE.findall(text) if code not in name_tokens and not _QUANTITY.fullmatch(code)]
    found += [f"product code '{code}'" for code in codes]
    if record.item_id not in name_tokens and re.search(rf"(?<![\w-]){re.escape(record.item_id)}(?![\w-])", text):
        found.append(f"item ID '{record.item_id}'")
    return list(dict.fromkeys(found))


def concrete_facts(text: str, record: ItemRecord) -> list[str]:
    """Numbers and description words the text states beyond the item's name, brand and category path."""
    known = {singular(w) for part in (record.name, record.brand or "", *record.categories) for w in words(part)}
    name_numbers = {value for _, value, _ in numbers(fold(record.name))}
    stated = [written for written, value, _ in numbers(fold(text)) if value not in name_numbers]
    described = {singular(w) for w in words(record.description or "")}
    content = [
        word
        for word in dict.fromkeys(singular(w) for w in words(text))
        if word in described
        and word not in known
        and len(word) >= _MIN_CONTENT_CHARS
        and word.isalpha()
        and not ({word} & (STOPWORDS | GENERIC | UNIT_WORDS))
    ]
    return list(dict.fromkeys(stated)) + content


@dataclass(frozen=True)
class CopyQuality:
    """The reading side of one copy: repeats, boilerplate, concrete facts, and the informative verdict."""

    repeated_ngram_rate: float
    boilerplate: tuple[str, ...]
    facts: tuple[str, ...]

    @property
    def informative(self) -> bool:
        """At least one number or `INFORMATIVE_WORDS` description words, and no boilerplate."""
        has_number = any(not fact.isalpha() for fact in self.facts)
        return not self.boilerplate and (has_number or len(self.facts) >= INFORMATIVE_WORDS)


def copy_quality(copy: Copy, record: ItemRecord) -> CopyQuality:
    """Score headline and body together, as a reader sees them."""
    text = as_text(copy)
    return CopyQuality(repeated_ngram_rate(text), tuple(boilerplate(text, record)), tuple(concrete_facts(text, record)))
