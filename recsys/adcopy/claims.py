"""Claims filter: health claims, guarantees, absolute superlatives and targeting by protected attributes.

A lexicon, not a model: the rules are a policy that must hold for every copy and cost microseconds. Text is
normalised before matching (see ``_variants``) so that obvious evasions ("c u r e", "b3st") do not slip through.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from recsys.adcopy._text import fold

__all__ = ["Violation", "claim_violations"]


@dataclass(frozen=True)
class Violation:
    """One claim found in a copy: its kind and the normalised text that matched."""

    kind: str  # "health" | "guarantee" | "superlative" | "protected_attribute"
    match: str


# ------------------------------------------------------------------------------------------------ normalisation

_HOMOGLYPHS = str.maketrans(
    "аеёкмнорстухіїјѕԁԛԝһɡӏαβεηικνορτυχωıℓ",
    "aeekmhopctyxiijsdqwhglabeniknoptuxwil",
)
_COMBINING = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_SINGLE = r"(?:[^\W_]|[$@])"
# three or more single characters separated by spaces or punctuation: "c u r e", "b.e.s.t", "g-u-a-r-d"
_SPACED_LETTERS = re.compile(rf"(?<![^\W_]){_SINGLE}(?:[ \t.\-_*·•,'/|~+:]+{_SINGLE}){{2,}}(?![^\W_])")
_SPACED_SEP = re.compile(r"[ \t.\-_*·•,'/|~+:]+")
_INNER_MARK = re.compile(r"(?<=[^\W\d_])[-_.*·'~]+(?=[^\W\d_])")  # "guar-anteed", "wo_men"
_APOSTROPHE = re.compile(r"'")
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")
_OTHER = re.compile(r"[^\w#%$@!\u2024]+|_+")
# words holding both a letter and a leet character (the callback runs for these only)
_LEET_TOKEN = re.compile(r"(?<![a-z0-9$@!|])(?=[a-z0-9$@!|]*[a-z])(?=[a-z0-9$@!|]*[013457$@!|])[a-z0-9$@!|]+")
_LEET_CHARS = frozenset("013457$@!|")
_QUANTITY = re.compile(r"\d+(?:ml|oz|g|kg|mg|lbs?|in|ft|yds?|mm|cm|m|pcs|pc|pk|ct|mah|v|w|a|x|d|grit|mil|th|st|nd|rd)")
_LEET_RUN = re.compile(r"(?<=[a-z])[013457$@!|]+|[013457$@!|]+(?=[a-z])")
_LEET_I = str.maketrans("013457$@!|", "oieastsail")
_LEET_L = str.maketrans("013457$@!|", "oleastsail")
_REPEATS = re.compile(r"([a-z])\1+")


def _unleet(form: str, table: dict[int, str]) -> str:
    """Leetspeak undone inside words with at least two letters and fewer leet characters than letters
    ("b3st", "gu4r4nt33d"), so model numbers and quantities ("B357", "M3", "N95", "10yd", "3rd") keep their
    digits."""

    def word(m: re.Match[str]) -> str:
        token = m[0]
        leet = sum(c in _LEET_CHARS for c in token)
        letters = sum(c.isalpha() for c in token)
        if not leet or letters < 2 or leet >= letters or _QUANTITY.fullmatch(token):
            return token
        return _LEET_RUN.sub(lambda r: r[0].translate(table), token)

    return _LEET_TOKEN.sub(word, form)


def _words_only(text: str) -> str:
    """Punctuation to single spaces (apostrophes dropped, decimal points and # % $ @ ! kept)."""
    text = _DECIMAL_POINT.sub("\u2024", _APOSTROPHE.sub("", text))
    return _OTHER.sub(" ", text).replace("\u2024", ".").strip()


def _variants(text: str) -> list[str]:
    """The normalised forms a copy is matched in.

    Casefolded NFKC without invisible characters; diacritics and Cyrillic/Greek look-alikes mapped to ASCII;
    spaced or dotted letters ("c u r e", "b.e.s.t") joined; a variant with marks inside words removed
    ("guar-anteed"); leetspeak variants (1 read as i, then as l); every run of one repeated letter squeezed
    ("beeeest" -> "best"; the patterns are squeezed the same way, see ``_squeezed``).
    """
    t = fold(text)
    if not t.isascii():
        t = _COMBINING.sub("", unicodedata.normalize("NFKD", t)).translate(_HOMOGLYPHS)
    t = _SPACED_LETTERS.sub(lambda m: _SPACED_SEP.sub("", m[0]), t)
    forms = [_words_only(t)]
    if _INNER_MARK.search(t):
        forms.append(_words_only(_INNER_MARK.sub("", t)))
    for form in list(forms):
        if _LEET_RUN.search(form):
            for table in (_LEET_I, _LEET_L) if ("1" in form or "|" in form) else (_LEET_I,):
                unleet = _unleet(form, table)
                if unleet != form:
                    forms.append(unleet)
    return list(dict.fromkeys(_REPEATS.sub(r"\1", f) for f in forms))


# ------------------------------------------------------------------------------------------------ lexicon

_HEALTH_OBJECT = (
    r"(?:diseases?|illness(?:es)?|infections?|acne|eczema|psoriasis|rosacea|dermatitis|arthritis|rheumatism|"
    r"cancers?|tumou?rs?|diabetes|depression|anxiety|insomnia|migraines?|headaches?|pain|aches?|inflammation|"
    r"allerg(?:y|ies)|asthma|covid(?: ?19)?|coronavirus|flu|influenza|colds|virus(?:es)?|symptoms?|hair ?loss|"
    r"baldness|wrinkles?|fine lines|cellulite|obesity|high blood pressure|hypertension|cholesterol|adhd|autism|"
    r"dementia|alzheimers?|wounds?|scars?|scarring|sunburns?|blemishes|dandruff|hemorrhoids|constipation|"
    r"nausea|aging|ageing|dark spots|age spots|sun damage|hangovers?|germs|bacteria)"
)
_EXPERT = (
    r"(?:doctors?|dermatologists?|physicians?|dentists?|pediatricians?|paediatricians?|nurses?|pharmacists?|"
    r"experts?|veterinarians?|vets?|surgeons?|clinicians?)"
)
# demonyms ("polish" and "finnish" are left out: "use as a polish", and squeezed "finnish" reads "finish")
_DEMONYM = (
    r"(?:american|british|brit|english|scottish|irish|welsh|canadian|mexican|german|french|italian|spanish|"
    r"portuguese|dutch|swiss|swedish|norwegian|danish|russian|ukrainian|greek|turkish|arab|"
    r"israeli|iranian|indian|pakistani|bangladeshi|chinese|japanese|korean|vietnamese|thai|filipino|"
    r"indonesian|australian|brazilian|argentinian|colombian|african|nigerian|kenyan|egyptian|european|asian)"
)
_DEMONYM_PLURAL = (
    r"(?:americans|brits|canadians|mexicans|germans|italians|russians|ukrainians|greeks|arabs|israelis|"
    r"iranians|indians|pakistanis|koreans|filipinos|australians|brazilians|africans|nigerians|europeans|asians)"
)
_PEOPLE = r"(?:people|persons|women|men|folks|customers|shoppers|buyers|families|households|citizens|community)"
_CURE_CONTEXT = re.compile(
    r"adhesive|glue|epoxy|resin|sealant|caulk|cement|concrete|mortar|grout|paint|ink|coating|varnish|lacquer|"
    r"urethane|silicone|acrylic|\buv\b|filament|primer|harden|bond|dries|dry|set|cyanoacrylate|polyester|gel coat|"
    r"\bcure (?:time|speed|rate)|\bcures? (?:in|to|at|within|fully)\b|\buncured\b|"
    r"\b(?:to|full|fully|will|must|fast|quick|rapid|slow|air|heat|moisture|temperature) cur(?:e|es|ing)\b"
)
_TOOL_SIZE = re.compile(r" ?(?:phillips|philips|square|pozi\w*|torx|slotted|size|gauge|ga|screw\w*|bits?|drill|x\b)")

# (kind, pattern); patterns see the normalised text: lower case, single spaces, apostrophes dropped
_RULES: list[tuple[str, str]] = [
    # health claims need a claim shape, not a topic word: "treats acne" fails, "medical" and "heat-treated" pass
    ("health", r"\bcure ?alls?\b"),
    ("health", r"\bremed(?:y|ies)\b"),
    ("health", r"(?<!self )\bheal(?:s|ed|ing|er|ers)?\b"),
    ("health", rf"\btreat(?:s|ed|ing|ment|ments)? (?:for |of |against |your |the |all )*{_HEALTH_OBJECT}\b"),
    ("health", rf"\bprevent(?:s|ed|ing|ion|ive|ative)? (?:of |against |your |the |all )*{_HEALTH_OBJECT}\b"),
    (
        "health",
        r"\b(?:reliev(?:e|es|ed|ing)|relief|sooth(?:e|es|ing)|eas(?:e|es|ing)|reduc(?:e|es|ing)|fight(?:s|ing)?|"
        r"stop(?:s|ping)?|combat(?:s|ting)?|alleviat(?:e|es|ing)|eliminat(?:e|es|ing)|clears? up|gets? rid of) "
        rf"(?:of |from |your |the |all |up )*{_HEALTH_OBJECT}\b",
    ),
    ("health", rf"\b{_HEALTH_OBJECT} ?(?:relief|reliever|relieving|killer|killing|fighting|remedy|treatment)\b"),
    ("health", r"\bclinically\b"),
    ("health", r"\bclinical (?:stud(?:y|ies)|trials?|results|strength|proof|evidence)\b"),
    ("health", r"\b(?:scientifically|medically|dermatologically|laboratory|lab) (?:proven|tested|approved)\b"),
    ("health", r"\bproven to\b"),
    ("health", r"\bfda (?:approved|cleared|registered|certified)\b|\bapproved by (?:the )?fda\b"),
    ("health", rf"\b{_EXPERT} (?:recommended|approved|tested|trusted|endorsed|formulated|developed)\b"),
    ("health", rf"\b(?:recommended|approved|trusted|endorsed) by {_EXPERT}\b"),
    ("health", r"\b(?:boost|strengthen|support|improve|enhance)\w* (?:your |the )?(?:immun\w*|metabolism)\b"),
    ("health", r"\bimmun(?:ity|e ?boost\w*|e system)\b"),
    ("health", r"\bdetox\w*\b"),
    ("health", r"\banti ?(?:aging|ageing|wrinkles?|cancer|inflammatory|viral|virus|depressant|anxiety)\b"),
    ("health", r"\b(?:fights?|prevents?|against|combats?) (?:the )?(?:signs of )?(?:aging|ageing)\b"),
    ("health", r"\bantiviral\b|\bage ?(?:defying|reversing|proof)\b|\bageless\b"),
    ("health", r"\b(?:reverses?|reversing|turns? back|slows?|stops?) (?:the )?(?:signs of )?(?:aging|ageing)\b"),
    ("health", r"\byounger ?looking\b|\blooks? younger\b|\bturn back (?:the )?(?:clock|time)\b"),
    ("health", r"\bkill(?:s|ing)?\b(?: \S+){0,4} (?:germs|bacteria|viruses|virus|microbes|pathogens|covid)\b"),
    ("health", r"\b99\.9+ ?% (?:of )?(?:\S+ )?(?:germs|bacteria|viruses|microbes)\b"),
    ("health", r"\bgerm ?(?:killing|killer|free)\b"),
    (
        "health",
        r"\bprotects? (?:you |your family )?(?:against|from) (?:covid|coronavirus|viruses|virus|infections?|"
        r"diseases?|illness|flu|germs|bacteria)\b",
    ),  # fmt: skip
    ("health", r"\b(?:weight ?loss|lose weight|burns? fat|fat ?burn\w*|slimming|appetite suppress\w*)\b"),
    ("health", r"\b(?:therapeutic|medicinal|health benefits?|good for your health|improves? your health)\b"),
    # guarantees; "100%" counts even in "100% cotton": the policy is no absolutes
    ("guarantee", r"\bguarant(?:ee|ees|eed|eeing|y)\b"),
    ("guarantee", r"\bmoney ?back\b|\brisk ?free\b|\b(?:no|zero|without) risk\b|\brefund(?:s|ed|able)?\b"),
    ("guarantee", r"(?<![\d.])100 ?(?:%|percent|per cent)|\b(?:one )?hundred (?:percent|per cent)\b"),
    (
        "guarantee",
        r"\bnever (?:fails?|failing|breaks?|wears? out|lets? you down|goes wrong|disappoints?|leaks?|rusts?)\b",
    ),
    ("guarantee", r"\b(?:lasts?|works?|stays?) (?:forever|for ever|a lifetime|for life)\b"),
    ("guarantee", r"\blifetime (?:guarantee|warranty)\b|\bno questions asked\b|\bfool ?proof\b"),
    ("guarantee", r"\b(?:works|results) every time\b|\b(?:instant|guaranteed|proven) results\b|\bpromise[sd]?\b"),
    # absolute superlatives (comparatives such as "superior" or "better" pass)
    ("superlative", r"\bbest(?:s|selling|seller|sellers)?\b"),
    ("superlative", r"\bnumber (?:one|1)\b"),
    ("superlative", r"\bworlds\b|\bin the world\b|\bworld ?(?:class|leading|famous|renowned|leader)\b"),
    ("superlative", r"\bperfect(?:ly|ion)?\b|\bultimate\b|\bunbeatable\b|\bunmatched\b|\bunrivall?ed\b"),
    ("superlative", r"\bunparall?eled\b|\bunsurpassed\b|\bincomparable\b|\bpeerless\b|\bflawless\b"),
    ("superlative", r"\bsecond to none\b|\blike no other\b|\bnone better\b|\bcant be beat(?:en)?\b"),
    ("superlative", r"\bthe most\b(?! part\b)|\bmost (?:popular|trusted|advanced|effective|powerful|reliable|loved)\b"),
    ("superlative", r"\b(?:finest|greatest|strongest|toughest|fastest|safest|smartest|cheapest|highest quality)\b"),
    ("superlative", r"\blowest (?:price|prices|cost|costs)\b|\bof all time\b|\bever (?:made|created|built)\b"),
    ("superlative", r"\btop ?(?:rated|selling|seller|sellers|notch|ranked)\b|\b(?:industry|market) ?leading\b"),
    ("superlative", r"\bmiracle\w*\b|\brevolutionary\b|\bbeats? (?:all|every|the competition)\b"),
    # protected attributes of the reader, whole words only ("stage", "menu" pass); "male" and "female" alone
    # pass (pipe threads, connectors), as does "old" about things ("old paint")
    ("protected_attribute", r"\b(?:young|younger|youngest|youngsters?|elderly|seniors|senior citizens)\b"),
    ("protected_attribute", rf"\b(?:old|older|oldest) (?:{_PEOPLE}|adults|age|ladies|guys|person|generation|you)\b"),
    ("protected_attribute", r"\b(?:too|feel|feeling|getting|get|grow|growing) old(?:er)?\b|\byears? old\b"),
    ("protected_attribute", r"\b(?:youre|you are|if you are|for the|for) (?:old|older|senior)\b"),
    ("protected_attribute", r"\b(?:your|my|a certain|any|every) age\b|\bage (?:group|bracket)\b"),
    ("protected_attribute", r"\b(?:aging|ageing|older|mature) (?:skin|parents|adults|population|bodies|body|face)\b"),
    ("protected_attribute", r"\b(?:midlife|menopaus\w*|retirees?|retired)\b"),
    ("protected_attribute", r"\b(?:millennials?|boomers?|gen ?[xyz]|generation [xyz]|teenagers?|\d0 somethings?)\b"),
    ("protected_attribute", r"\b(?:in your|in their) \d0 ?s\b|\b(?:you are|youre|anyone|those) (?:over|under) \d+"),
    ("protected_attribute", r"\bgrand(?:parents?|mas?|pas?|mothers?|fathers?)\b"),
    ("protected_attribute", r"\b(?:women|womens|woman|womans|men|mens|ladies|lady|gentlemen|gents|guys|gals)\b"),
    ("protected_attribute", r"\b(?:girls?|boys?|moms?|mums?|mommy|mommies|mothers?|dads?|daddy|fathers?)\b"),
    ("protected_attribute", r"\b(?:wife|wives|husbands?|girlfriends?|boyfriends?|feminine|masculine|manly)\b"),
    ("protected_attribute", r"\b(?:for|every|any|a real) man\b|\bmans\b|\bfor (?:her|him)\b|\bhis (?:and )?hers\b"),
    ("protected_attribute", r"\bgender\w*\b|\b(?:males|females)\b|\b(?:male|female) (?:customers|shoppers)\b"),
    ("protected_attribute", r"\bpregnan\w*\b|\bexpecting (?:mothers|moms|mums|parents|women)\b|\bmoms? ?to ?be\b"),
    ("protected_attribute", r"\b(?:maternity|prenatal|postpartum|post ?natal|breast ?feeding|fertility)\b"),
    ("protected_attribute", r"\bnursing (?:mothers|moms|mums)\b|\btrying to conceive\b"),
    ("protected_attribute", r"\bracial\w*\b|\bethnic\w*\b|\byour (?:race|heritage|ancestry|skin colou?r)\b"),
    ("protected_attribute", r"\b(?:people|women|men) of colou?r\b|\bafrican ?americans?\b|\bcaucasians?\b"),
    ("protected_attribute", r"\bhispanics?\b|\blatin[oax]s?\b|\blatine\b|\bindigenous\b|\bnative americans?\b"),
    ("protected_attribute", r"\baboriginal\b|\basians?\b"),
    ("protected_attribute", rf"\b(?:black|white|brown) (?:{_PEOPLE}|girls|boys|guys)\b"),
    ("protected_attribute", r"\breligio\w*\b|\bchristian\w*\b|\bmuslims?\b|\bislam\w*\b|\bjews\b|\bjew\b"),
    ("protected_attribute", r"\bjewish\b|\bjudaism\b|\bhindu\w*\b|\bbuddhis\w*\b|\bsikhs?\b|\bcatholic\w*\b"),
    ("protected_attribute", r"\bprotestants?\b|\bmormons?\b|\batheis\w*\b|\bmosques?\b|\bsynagogues?\b"),
    ("protected_attribute", r"\byour (?:faith|church|god|beliefs?|religion)\b|\bchurchgoers?\b|\bbelievers\b"),
    ("protected_attribute", r"\bdisabilit(?:y|ies)\b|\bhandicap\w*\b|\bspecial needs\b"),
    ("protected_attribute", rf"\bdisabled (?:{_PEOPLE}|persons?|veterans|users|children|adults|drivers?|you)\b"),
    ("protected_attribute", r"\bwheelchair (?:users?|bound)\b|\bthe (?:blind|deaf|disabled|handicapped)\b"),
    ("protected_attribute", r"\bdeaf\b|\bhard of hearing\b|\b(?:visually|hearing|mobility|cognitively) impaired\b"),
    ("protected_attribute", r"\bautis\w*\b|\badhd\b|\bdyslexi\w*\b|\bmental(?:ly)? (?:illness|ill|health)\b"),
    ("protected_attribute", r"\bdiabet\w*\b|\bepilep\w*\b|\basthmatics?\b|\boverweight\b|\bobese\b"),
    ("protected_attribute", r"\bchronic (?:pain|illness|conditions?|diseases?)\b|\bsufferers?\b"),
    ("protected_attribute", r"\bsuffer(?:s|ing)? (?:from|with)\b"),
    ("protected_attribute", rf"\b(?:if|when|since|because) you (?:have|are|re|got) (?:a |an )?{_HEALTH_OBJECT}\b"),
    (
        "protected_attribute",
        r"\byour (?:condition|diagnosis|illness|disease|symptoms|medical (?:condition|history)|"
        r"health (?:condition|issues|problems)|disability|weight|sexuality|nationality|gender)\b",
    ),
    ("protected_attribute", r"\bgay\b|\blesbians?\b|\bbisexual\w*\b|\bhomosexual\w*\b|\bheterosexual\w*\b"),
    ("protected_attribute", r"\bqueer\b|\blgbt\w*\b|\btransgender\w*\b|\btranssexual\w*\b|\bnon ?binary\b"),
    ("protected_attribute", r"\btrans (?:women|men|people|folks)\b|\bsexual (?:orientation|preference)\b"),
    ("protected_attribute", r"\bsame ?sex\b|\bstraight (?:men|women|people|couples|guys)\b"),
    ("protected_attribute", r"\bnationality\b|\bimmigrants?\b|\bforeigners?\b|\bexpats?\b|\bcitizenship\b"),
    ("protected_attribute", r"\byour (?:country of origin|home country)\b"),
    ("protected_attribute", rf"\b(?:as an?|calling all|fellow|proud|true|real) {_DEMONYM}s?\b"),
    ("protected_attribute", rf"\b{_DEMONYM} (?:{_PEOPLE}|patriots|like you)\b|\b{_DEMONYM_PLURAL}\b"),
]
# rules with a context exemption, applied in _matches
_CURE = re.compile(r"\bcur(?:e|es|ed|ing|ative|atives)\b")
_HASH_ONE = re.compile(r"(?<![\w#])(?<!size )# ?1(?![\d.])")


def _squeezed(pattern: str) -> str:
    """Patterns see squeezed text ("guaranted"), so literal letter runs are squeezed too (never after a
    backslash: ``\\bb`` stays a word boundary followed by "b")."""
    return re.sub(r"(?<!\\)([a-z])\1+", r"\1", pattern)


_COMPILED: dict[str, re.Pattern[str]] = {}
for _kind in ("health", "guarantee", "superlative", "protected_attribute"):
    # every rule starts at a word start: checking that once up front keeps a pass to a few microseconds
    _COMPILED[_kind] = re.compile(
        r"(?<![a-z0-9])(?=[a-z0-9])(?:" + "|".join(f"(?:{_squeezed(p)})" for k, p in _RULES if k == _kind) + ")"
    )


def _matches(form: str) -> list[Violation]:
    found = [Violation(kind, m[0]) for kind, rx in _COMPILED.items() for m in rx.finditer(form)]
    for m in _CURE.finditer(form):  # glues, epoxies and paints cure: only a cure without such words is a claim
        if not _CURE_CONTEXT.search(form, max(0, m.start() - 60), m.end() + 60):
            found.append(Violation("health", m[0]))
    for m in _HASH_ONE.finditer(form):  # "#1 Phillips" is a screw-drive size, not a ranking
        if not _TOOL_SIZE.match(form, m.end()):
            found.append(Violation("superlative", m[0]))
    return found


@lru_cache(maxsize=16384)
def _violations(text: str) -> tuple[Violation, ...]:
    seen: dict[Violation, None] = {}
    for form in _variants(text):
        for violation in _matches(form):
            seen.setdefault(violation, None)
    return tuple(seen)


def claim_violations(text: str) -> list[Violation]:
    """Every claim the policy forbids in ``text`` (empty list: the text passes), deduplicated, in rule order.
    Results are cached: brands, categories and template sentences recur across items."""
    return list(_violations(text))
