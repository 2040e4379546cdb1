"""The fallback ad copy: grounded by construction, so it can always be sent when generated copy fails.

The service must answer for every recommended item even when the text model is off, slow or wrong, so this
copy states only the record's own fields, drops words that trip the claims filter, is verified with
:func:`check_copy`, and falls back to simpler copies down to a generic one that always passes.
"""

from __future__ import annotations

import re
import unicodedata
import zlib

from recsys.adcopy._text import squash, wordset
from recsys.adcopy.checks import MAX_BODY, MAX_HEADLINE, Copy, check_copy
from recsys.adcopy.claims import claim_violations
from recsys.adcopy.facts import CatalogueFacts, category_key, is_clean_category
from recsys.adcopy.records import ItemRecord

__all__ = ["template_copy"]

# no brands or product nouns: the template's own record is checked for numbers, claims and lengths only
_NO_FACTS = CatalogueFacts(brands=frozenset(), product_nouns=frozenset(), category_share={})
_BRACKETS = str.maketrans("[]{}", "()()")
_JUNK = re.compile(r"&amp;|&quot;|&#\d+;|[<>\"*~^_=\\`]|\.{2,}|…")
# clause boundaries a long name may be cut at ("Gorilla Glue, Waterproof ..." -> "Gorilla Glue")
_BREAK = re.compile(r"[,;:]\s|\s[-|/+]\s|\s\(|\s(?:with|for|w/|in|includes|including|fits)\s", re.IGNORECASE)
_TRAILING = " ,;:-|/&+.(!?'"
_DANGLING = wordset(
    "for with and or of in by x the a an to on w w/ from at per plus includes including fits dr mr ms your our its"
)
_GENERIC_HEADLINE = "Recommended for you"
_GENERIC_BODY = "Picked for you."
# (brand and category, brand only, category only) phrasings; one set per variant, chosen by item_id hash
_ORIGIN = (
    ("From {brand}, in {leaf}.", "From {brand}.", "In {leaf}."),
    ("{leaf} from {brand}.", "By {brand}.", "Part of {leaf}."),
    ("Listed in {leaf}, by {brand}.", "By {brand}.", "Listed in {leaf}."),
)
_INTEREST = (
    "Picked for your interest in {interest}.",
    "Because you like {interest}.",
    "Chosen for your interest in {interest}.",
)
_PRICE = "Price: {price}."


def _balance(text: str, cut_open: bool) -> str:
    """Unmatched ")" dropped; an unclosed "(" cut off with what follows (``cut_open``: we cut inside it) or
    dropped alone (the source never closed it)."""
    kept: list[str] = []
    opened: list[int] = []
    for ch in text:
        if ch == ")" and not opened:
            continue
        if ch == "(":
            opened.append(len(kept))
        elif ch == ")":
            opened.pop()
        kept.append(ch)
    if opened and cut_open:
        return "".join(kept[: opened[0]])
    for i in reversed(opened):
        del kept[i]
    return "".join(kept)


def _tidy(text: str, cut_open: bool = True) -> str:
    """Unbalanced brackets, trailing punctuation and dangling connectors ("... Roll with") removed."""
    while True:
        before = text
        if "(" in text or ")" in text:
            text = _balance(text, cut_open)
        text = text.strip().strip(_TRAILING).strip()
        words = text.split(" ")
        while words and (words[-1].casefold() in _DANGLING or words[0].casefold() in {"-", "|", "/", "&"}):
            words = words[:-1] if words[-1].casefold() in _DANGLING else words[1:]
        text = " ".join(words)
        if text == before:
            return text


def _shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters at the last clause boundary that keeps a useful part (20+
    characters), else at a word boundary; never mid-word (a first word longer than the limit gives "")."""
    text = _tidy(text)
    if len(text) <= limit:
        return text
    clauses = [_tidy(text[: m.start()]) for m in _BREAK.finditer(text)]
    fitting = [c for c in clauses if len(c) <= limit]
    if fitting and len(max(fitting, key=len)) >= min(20, limit // 2):
        return max(fitting, key=len)
    out = ""
    for word in text.split(" "):
        candidate = f"{out} {word}" if out else word
        if len(candidate) > limit:
            break
        out = candidate
    return _tidy(out)


def _claim_free(text: str) -> str:
    """``text`` without the words that make a claim: cut off with what follows when 20+ characters precede
    it ("Dap 18275 DYNAFLEX 230, White 100% Waterproof ..." -> "Dap 18275 DYNAFLEX 230, White"), else removed
    alone ("Best Choice Glue" -> "Choice Glue")."""
    words = text.split(" ")
    for _ in range(len(words)):
        if not claim_violations(" ".join(words)):
            break
        end = next(j for j in range(1, len(words) + 1) if claim_violations(" ".join(words[:j])))
        start = max(i for i in range(end) if claim_violations(" ".join(words[i:end])))
        kept = _tidy(" ".join(words[:start]))
        words = words[:start] if len(kept) >= 20 else words[:start] + words[end:]
    return _tidy(" ".join(words)) if not claim_violations(" ".join(words)) else ""


def _clean_name(record: ItemRecord) -> str:
    """The name without markup debris ("/>", "&amp;", "…"), with ( ) for [ ] { }; "" when all that is left
    is a category name (some Amazon titles are just "Industrial & Scientific />") or no word."""
    text = unicodedata.normalize("NFKC", record.name).translate(_BRACKETS)
    name = _tidy(squash(_JUNK.sub(" ", text)), cut_open=False)
    if category_key(name) in {category_key(c) for c in record.categories} or not any(c.isalpha() for c in name):
        return ""
    return name


def _safe(phrase: str | None) -> str | None:
    """A brand or category phrase as written, or None when it is blank or makes a claim."""
    if not phrase or not phrase.strip() or claim_violations(phrase):
        return None
    return squash(phrase)


def _leaf(record: ItemRecord) -> str | None:
    """The most specific clean, claim-free category part ("Urethane Adhesives")."""
    for part in reversed(record.categories):
        if is_clean_category(part) and _safe(part):
            return squash(part)
    return None


def _interest(record: ItemRecord, interest: str | None) -> str | None:
    """The interest as the record writes it, if it is one of the record's categories or its brand."""
    if not interest:
        return None
    key = category_key(interest)
    for phrase in (*record.categories, record.brand):
        if phrase and category_key(phrase) == key:
            return _safe(phrase)
    return None


def _body(record: ItemRecord, variant: int, brand: str | None, leaf: str | None, interest: str | None,
          limit: int) -> str:  # fmt: skip
    """Origin, interest and price sentences, by priority interest > origin > price, each only if it fits."""
    if interest and leaf and category_key(interest) == category_key(leaf):
        leaf = None  # say it once
    if interest and brand and category_key(interest) == category_key(brand):
        brand = None
    both, brand_only, leaf_only = _ORIGIN[variant]
    origin = (
        both.format(brand=brand, leaf=leaf)
        if brand and leaf
        else brand_only.format(brand=brand)
        if brand
        else leaf_only.format(leaf=leaf)
        if leaf
        else None
    )
    sentences = [  # in priority order; written in the order origin, interest, price
        (1, _INTEREST[variant].format(interest=interest) if interest else None),
        (0, origin),
        (2, _PRICE.format(price=record.price_text) if record.price_text else None),
    ]
    chosen: list[tuple[int, str]] = []
    for order, sentence in sentences:
        if sentence and len(" ".join([*(s for _, s in chosen), sentence])) <= limit:
            chosen.append((order, sentence))
    return " ".join(sentence for _, sentence in sorted(chosen))


def template_copy(
    record: ItemRecord,
    interest: str | None = None,
    max_headline: int = MAX_HEADLINE,
    max_body: int = MAX_BODY,
) -> Copy:
    """A grounded, claim-free copy for ``record`` (phrasing chosen deterministically by item_id).

    ``interest`` should be a category part or the brand of the record (see ``shared_interest``); anything
    else is ignored, because the template may only state the record's own facts.
    """
    variant = zlib.crc32(record.item_id.encode()) % len(_ORIGIN)
    brand, leaf = _safe(record.brand), _leaf(record)
    interest_ = _interest(record, interest)
    fallback_headline = next(
        (
            h
            for h in (f"{leaf} from {brand}" if leaf and brand else None, leaf, brand)
            if h and _shorten(h, max_headline) == h
        ),
        _GENERIC_HEADLINE,
    )
    body = _body(record, variant, brand, leaf, interest_, max_body)
    headline = _shorten(_clean_name(record), max_headline)
    first = Copy(headline or fallback_headline, body or _GENERIC_BODY)
    if check_copy(first, record, _NO_FACTS, max_headline, max_body).ok:
        return first  # the common case: one check
    headline = _shorten(_claim_free(_clean_name(record)), max_headline)
    candidates = [
        Copy(headline or fallback_headline, body),
        Copy(headline or fallback_headline, _body(record, variant, brand, leaf, None, max_body)),
        Copy(fallback_headline, _body(record, variant, brand, leaf, None, max_body)),
        Copy(headline or fallback_headline, _GENERIC_BODY),
        Copy(fallback_headline, _GENERIC_BODY),
    ]
    for copy in candidates:
        if copy.body and check_copy(copy, record, _NO_FACTS, max_headline, max_body).ok:
            return copy
    return Copy(_shorten(_GENERIC_HEADLINE, max_headline), _shorten(_GENERIC_BODY, max_body))
