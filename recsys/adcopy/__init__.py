"""Ad-copy safety core: grounding, claims filter, fallback template and interests (torch-free).

Why here in ``recsys``: the batch side (scoring generated copy) and the online service (choosing between a
generated copy and the fallback) must apply identical rules with nothing heavier than polars and the
standard library. ``records_from_catalogue`` turns a catalogue into :class:`ItemRecord` s,
:class:`CatalogueFacts` holds the catalogue-wide vocabularies (shipped in the bundle as JSON),
:func:`check_copy` gives the verdict on a copy and :func:`template_copy` the always-safe fallback.
"""

from recsys.adcopy.checks import CheckResult, Copy, check_copy
from recsys.adcopy.claims import Violation, claim_violations
from recsys.adcopy.facts import CatalogueFacts
from recsys.adcopy.grounding import Fact, unsupported_facts
from recsys.adcopy.interests import history_interests, names_interest, shared_interest
from recsys.adcopy.records import ItemRecord, records_from_catalogue
from recsys.adcopy.template import template_copy

__all__ = [
    "CatalogueFacts",
    "CheckResult",
    "Copy",
    "Fact",
    "ItemRecord",
    "Violation",
    "check_copy",
    "claim_violations",
    "history_interests",
    "names_interest",
    "records_from_catalogue",
    "shared_interest",
    "template_copy",
    "unsupported_facts",
]
