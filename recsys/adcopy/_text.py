"""Text helpers shared by the ad-copy checks: folding, tokens, singular forms and numbers.

Why one module: grounding compares the words and numbers of generated copy with those of a catalogue record,
so both sides must be tokenised by exactly the same code, or a verbatim quote could look invented.
Pure stdlib (``re``, ``unicodedata``, ``fractions``) so the online service can use it without torch.
"""

from __future__ import annotations

import re
import unicodedata
from fractions import Fraction
from functools import lru_cache

# invisible characters dropped, typographic punctuation mapped to ASCII (NFKC leaves these alone)
_INVISIBLE = "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180e\u200b\u200c\u200d\u200e\u200f"
_INVISIBLE += "\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\u206a\u206b"
_INVISIBLE += "\u206c\u206d\u206e\u206f\u3164\ufeff\uffa0" + "".join(chr(c) for c in range(0xFE00, 0xFE10))
_PUNCT = str.maketrans(
    {
        **dict.fromkeys(map(ord, _INVISIBLE), None),
        **dict.fromkeys(map(ord, "\u2018\u2019\u201a\u201b\u2032\u02bc"), "'"),
        **dict.fromkeys(map(ord, "\u201c\u201d\u201e\u201f\u2033"), '"'),
        **dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63"), "-"),
        ord("\u2044"): "/",  # fraction slash: NFKC turns "½" into "1⁄2"
        ord("\u00d7"): " x ",
        ord("\u2026"): "...",
    }
)
_WORD = re.compile(r"[^\W_]+")
_LETTERS = re.compile(r"[^\W\d_]+")
_SPACES = re.compile(r"\s+")


# vulgar fractions get a leading space first: NFKC alone turns "4½" into "41⁄2"
_VULGAR = str.maketrans({c: " " + unicodedata.normalize("NFKC", c) for c in "¼½¾⅐⅑⅒⅓⅔⅕⅖⅗⅘⅙⅚⅛⅜⅝⅞"})


def fold(text: str) -> str:
    """NFKC, invisible characters removed, typographic punctuation made ASCII, casefolded."""
    return unicodedata.normalize("NFKC", text.translate(_VULGAR)).translate(_PUNCT).casefold()


def words(text: str) -> list[str]:
    """Letter/digit runs of the folded text: hyphens, '&' and punctuation separate words ("PORTER-CABLE")."""
    return _WORD.findall(fold(text))


def letter_words(folded: str) -> list[str]:
    """Runs of letters only (digits split them) of already folded text."""
    return _LETTERS.findall(folded)


def squash(text: str) -> str:
    """Whitespace collapsed and stripped (keeps case): for display strings built from catalogue fields."""
    return _SPACES.sub(" ", text).strip()


_IRREGULAR = {
    "knives": "knife", "leaves": "leaf", "shelves": "shelf", "halves": "half", "wolves": "wolf", "feet": "foot",
    "teeth": "tooth", "men": "man", "women": "woman", "children": "child", "mice": "mouse", "geese": "goose",
    "indices": "index", "matrices": "matrix", "vertices": "vertex", "analyses": "analysis", "axes": "axis",
    "lenses": "lens", "gases": "gas", "buses": "bus", "dice": "die", "people": "person",
}  # fmt: skip


def wordset(text: str) -> frozenset[str]:
    """The words of a whitespace-separated literal (keeps long vocabularies readable)."""
    return frozenset(text.split())


_KEEP = wordset(
    "gas lens bus plus bias canvas chassis atlas series species scissors pliers tongs tweezers forceps news "
    "clothes goggles glasses sunglasses shorts pants jeans trousers"
)


@lru_cache(maxsize=65536)
def singular(word: str) -> str:
    """A consistent singular key ("gloves" -> "glove", "boxes" -> "box"): both sides of a comparison use it,
    so consistency matters more than perfect English."""
    if len(word) <= 3 or word in _KEEP:
        return word
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith(("ss", "us", "is", "ous")):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "ches", "shes", "xes", "zes")):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word


# ------------------------------------------------------------------------------------------------ numbers

_NUMBER = re.compile(
    r"(?<![\d.])(?:"
    r"(?P<whole>\d+)[ -](?P<num>\d+)/(?P<den>\d+)"  # mixed: 4 1/2, 4-1/2
    r"|(?P<fnum>\d+)/(?P<fden>\d+)"  # fraction: 7/64, 24/7
    r"|(?P<dec>\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\d)|\d+(?:\.\d+)?|\.\d+)"  # 1,000 / 24.99 / 30 / .5
    r")"
)
# patterns that start with a character class let the regex engine skip ahead fast on long text
_DIGITS = re.compile(r"[0-9.][0-9.,/ -]*[0-9]|[0-9]")
_UNITS = {
    "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17,
    "eighteen": 18, "nineteen": 19, "dozen": 12, "hundred": 100, "thousand": 1000, "million": 1000000,
}  # fmt: skip
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_ONES = {"one": 1, **{k: v for k, v in _UNITS.items() if v < 10}}
_NUMBER_WORD = re.compile(
    r"\b(?:(?P<tens>" + "|".join(_TENS) + r")(?:[ -](?P<ones>" + "|".join(_ONES) + r"))?"
    r"|(?P<unit>" + "|".join(_UNITS) + r"|half))\b"
)  # "one" alone is left out on purpose: as a pronoun ("the one you need") it states no quantity


Value = Fraction | int  # exact; an int equals (and hashes like) the same Fraction, and is cheaper
Number = tuple[str, Value, tuple[Value, ...]]  # as written, value, parts


@lru_cache(maxsize=65536)
def _value(text: str) -> Value:
    text = text.replace(",", "")
    return int(text) if text.isdigit() else Fraction(text)


def numbers(folded: str) -> list[Number]:
    """Every number of folded text as (as written, value, parts): "4 1/2" is 9/2 with parts 4, 1/2, 1 and 2;
    "30ml" and "30 ml" are both 30; "twenty-five" is 25. Parts let a quote of part of a number stay grounded."""
    found: list[Number] = []
    for span in _DIGITS.findall(folded):  # the full pattern only runs on digit spans: much faster on long text
        for m in _NUMBER.finditer(span):
            if m["whole"] is not None:
                whole, num, den = int(m["whole"]), int(m["num"]), int(m["den"])
                if num < den:
                    frac = Fraction(num, den)
                    found.append((m[0], whole + frac, (whole, frac, num, den)))
                else:  # "20-45/..." is a range then a fraction, not a mixed number
                    found += [(m["whole"], whole, ()), _fraction(f"{num}/{den}", num, den)]
            elif m["fnum"] is not None:
                found.append(_fraction(m[0], int(m["fnum"]), int(m["fden"])))
            else:
                found.append((m[0], _value(m[0]), ()))
    for m in _NUMBER_WORD.finditer(folded):
        if m["tens"] is not None:
            found.append((m[0], _TENS[m["tens"]] + (_ONES[m["ones"]] if m["ones"] else 0), ()))
        else:
            found.append((m[0], Fraction(1, 2) if m["unit"] == "half" else _UNITS[m["unit"]], ()))
    return found


def _fraction(text: str, num: int, den: int) -> Number:
    return (text, Fraction(num, den) if den else num, (num, den))


# ------------------------------------------------------------------------------------------------ vocabularies

STOPWORDS = wordset(
    """a an the and or of for with without to in on at by from into onto over under up down out off as is are be
    it its this that these those your you our we my me he she his her their they them not no nor so than then too
    very can will just all any each per via vs x w new more most less plus only also about after before between
    get gets use used uses using make makes made fits fit compatible other others etc inc ltd co llc"""
)
# words that say where or how a product is used, or are umbrella terms, not what the product is
GENERIC = wordset(
    """product item supply accessory equipment part material tool instrument device unit system component kit set
    pack pc pcs piece count ct pk lot bundle pair assortment box case bag combo refill replacement variety
    industrial scientific professional commercial medical electrical electronic mechanical manual digital analog
    general standard universal home household personal office school lab laboratory science research education
    educational health safety quality protection handling storage maintenance repair hardware power transmission
    manufacturing hydraulic hydraulics pneumatic pneumatics plumbing instrumentation measurement inspection test
    testing measure inspect fastening finishing cutting wiring connecting packaging shipping lighting cleaning
    care beauty makeup fragrance body face eye lip skin hair hand head foot water air heavy duty light high low
    mini small large big extra super ultra pro premium basic classic original natural organic fresh soft hard
    round square flat long short wide thin thick clear black white red blue green yellow orange purple pink brown
    grey gray silver gold golden bronze beige ivory navy multi assorted mixed various
    type style size model series version edition line range option design grade class brand solution essential
    picked pick interest because like chosen price recommended listed from"""
)
UNIT_WORDS = wordset(
    """ml l ltr liter litre liters litres oz ounce ounces fl g gram grams gr kg lb lbs pound pounds mg mm cm m
    meter meters metre metres in inch inches ft foot feet yd yds yard yards mil gal gallon gallons qt quart pt pint
    v volt volts w watt watts a amp amps mah hz khz mhz ohm ohms psi bar rpm pcs pc pk ct count pack packs
    sheet sheets roll rolls"""
)
