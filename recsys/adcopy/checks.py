"""One verdict for a candidate ad copy: grounded, free of forbidden claims, within the length limits.

Why one function: the batch side (filtering and scoring generated copy) and the online service (deciding
between a generated copy and the template fallback) must apply exactly the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from recsys.adcopy.claims import Violation, claim_violations
from recsys.adcopy.facts import CatalogueFacts
from recsys.adcopy.grounding import Fact, unsupported_facts
from recsys.adcopy.records import ItemRecord

__all__ = ["MAX_BODY", "MAX_HEADLINE", "CheckResult", "Copy", "as_text", "check_copy"]

MAX_HEADLINE = 60
MAX_BODY = 160
_FACT_LABEL = {"number": "number", "brand": "brand", "product_type": "product type"}


@dataclass(frozen=True)
class Copy:
    """An ad copy: a headline and a body."""

    headline: str
    body: str


def as_text(copy: Copy) -> str:
    """Headline and body as one text, the way a reader takes a copy in (and the metrics and checks read it)."""
    return f"{copy.headline}. {copy.body}"


@dataclass(frozen=True)
class CheckResult:
    """The verdict on one copy; ``reasons()`` says in words why it failed."""

    ok: bool
    unsupported: tuple[Fact, ...]
    claims: tuple[Violation, ...]
    too_long: bool
    empty: bool = False  # a blank headline or body
    length_problems: tuple[str, ...] = ()  # e.g. "body longer than 160 characters (171)"

    def reasons(self) -> list[str]:
        """Human-readable reasons, e.g. "unsupported number '50'", "claim (superlative): 'best'"."""
        out = [f"unsupported {_FACT_LABEL.get(f.kind, f.kind)} '{f.value}'" for f in self.unsupported]
        out += [f"claim ({v.kind.replace('_', ' ')}): '{v.match}'" for v in self.claims]
        if self.too_long:
            out += list(self.length_problems) or ["copy too long"]
        if self.empty:
            out.append("empty headline or body")
        return out


def check_copy(
    copy: Copy,
    record: ItemRecord,
    facts: CatalogueFacts,
    max_headline: int = MAX_HEADLINE,
    max_body: int = MAX_BODY,
) -> CheckResult:
    """Check headline and body together: unsupported facts, claims, lengths (in characters) and blanks."""
    text = f"{copy.headline}\n{copy.body}"
    unsupported = tuple(unsupported_facts(text, record, facts))
    claims = tuple(claim_violations(text))
    problems = []
    if len(copy.headline) > max_headline:
        problems.append(f"headline longer than {max_headline} characters ({len(copy.headline)})")
    if len(copy.body) > max_body:
        problems.append(f"body longer than {max_body} characters ({len(copy.body)})")
    empty = not copy.headline.strip() or not copy.body.strip()
    ok = not (unsupported or claims or problems or empty)
    return CheckResult(ok, unsupported, claims, bool(problems), empty, tuple(problems))
