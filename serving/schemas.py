"""The API contract: request and response models (they are the OpenAPI document at /openapi.json).

IDs are strings or integers, as the source data has them; the service treats both as strings,
so 42 and "42" name the same item. Limits live here so that the schema states them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
)

from recsys.adcopy.checks import MAX_BODY, MAX_HEADLINE
from recsys.models.base import MAX_K

MAX_ID_LENGTH = 256
MAX_HISTORY_ITEMS = 1000  # accepted per request; the model reads the last max_len of them (says so)
MAX_BATCH_QUERIES = 256
MAX_EVENTS_PER_BATCH = 1000

IdText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
# Integer IDs are 64-bit: an unbounded integer would slip past the string length limit (4,000 digits were stored).
IdInt = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]
ExternalId = Annotated[
    IdText | IdInt,
    AfterValidator(str),
    Field(description="an ID as the source has it: a string (1–256 characters) or an integer"),
]


def _integer(value: object) -> object:
    """JSON Schema's integer: 10 and 10.0, never true, "10" or 10.5 (pydantic's lax int takes "10")."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer")
    return value


K = Annotated[
    int,
    BeforeValidator(_integer),
    Field(ge=1, le=MAX_K, description=f"how many items, 1..{MAX_K} (capped at the catalogue size)"),
]
Flag = Annotated[bool, Field(strict=True)]  # true/false only: 0, "yes" and friends are type errors

# RFC 3339 with an explicit offset: a time without one is ambiguous, and the journal stores UTC instants.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


# Events happen between the Unix epoch and 2200: anything else is a unit mistake (milliseconds) or garbage.
MIN_TIMESTAMP, MAX_TIMESTAMP = 0.0, datetime(2200, 1, 1, tzinfo=UTC).timestamp()


def _unix_seconds(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("timestamp must be an RFC 3339 date-time or Unix seconds, not a boolean")
    if isinstance(value, int | float):
        # Compared as given, before float(): a 400-digit integer is refused, not an OverflowError; so are NaN, inf.
        if not MIN_TIMESTAMP <= value < MAX_TIMESTAMP:
            raise ValueError("timestamp must be Unix seconds between 1970 and 2200 (milliseconds? divide by 1000)")
        return float(value)
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        # Python keeps microseconds: cut longer fractions rather than refuse them.
        text = re.sub(r"(\.\d{1,6})\d*", r"\1", value.upper().replace("Z", "+00:00"))
        try:
            seconds = datetime.fromisoformat(text).timestamp()
        except ValueError as exc:
            raise ValueError(f"timestamp is not a valid date-time: {exc}") from None
        if not MIN_TIMESTAMP <= seconds < MAX_TIMESTAMP:
            raise ValueError("timestamp must be between 1970 and 2200")
        return seconds
    raise ValueError("timestamp must be an RFC 3339 date-time with offset (2026-01-31T12:00:00Z) or Unix seconds")


Timestamp = Annotated[
    float,
    PlainValidator(_unix_seconds),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
            "description": "when it happened: RFC 3339 with offset, or Unix seconds",
        }
    ),
]


class _Strict(BaseModel):
    # Unknown fields are refused: a typo ("hisotry") must not silently mean "no history".
    model_config = ConfigDict(extra="forbid")


# -- recommendations ---------------------------------------------------------------------------------------
class ScoredItem(BaseModel):
    item_id: str
    score: float = Field(description="model score (user vector · item embedding), or popularity count in a fallback")


class Recommendation(BaseModel):
    bundle_version: str = Field(description="the bundle that produced this answer")
    user_id: str | None = None
    items: list[ScoredItem]
    fallback: bool = Field(description="true: popular items, because no history item is known")
    fallback_reason: Literal["unknown_user", "no_known_items"] | None = None
    unknown_items: list[str] = Field(description="history items this bundle does not know; they were ignored")
    history_length: int = Field(description="known history items the model read")
    history_truncated: bool = Field(description="the known history was longer than the model's max length")
    live_events_unavailable: bool = Field(
        default=False,
        description="true: the event store could not be read, so this answer uses the bundle's history alone "
        "(events since the bundle are missing); it recovers by itself",
    )


class HistoryQuery(_Strict):
    history: list[ExternalId] = Field(
        default_factory=list,
        max_length=MAX_HISTORY_ITEMS,
        description="recent items, oldest first; only the last max_len known ones are read",
    )
    user_id: ExternalId | None = Field(
        default=None,
        description="optional: when the service knows this user (bundle or events), `history` is appended to theirs",
    )
    exclude: list[ExternalId] = Field(
        default_factory=list, max_length=MAX_HISTORY_ITEMS, description="items never to recommend"
    )


class RecommendRequest(HistoryQuery):
    k: K = 10
    exclude_seen: Flag = Field(default=True, description="leave out items already in the history")


class BatchRecommendRequest(_Strict):
    queries: list[HistoryQuery] = Field(
        min_length=1,
        max_length=MAX_BATCH_QUERIES,
        description=f"1..{MAX_BATCH_QUERIES} queries; the server also bounds len(queries) × k "
        "(RECSYS_MAX_BATCH_RESULTS, 10,000 by default: 422 beyond it, split the batch) and the batches it serves "
        "at once (429 with Retry-After)",
    )
    k: K = 10
    exclude_seen: Flag = True


class BatchRecommendation(BaseModel):
    bundle_version: str
    results: list[Recommendation] = Field(description="one per query, in order")


class SimilarItems(BaseModel):
    bundle_version: str
    item_id: str
    items: list[ScoredItem] = Field(description="most similar first (cosine of the item embeddings)")


# -- ad copy -----------------------------------------------------------------------------------------------
MIN_BODY_CHARS = 40


class AdCopyRequest(_Strict):
    item_id: ExternalId = Field(description="the item to promote (usually one of the user's recommendations)")
    user_id: ExternalId | None = Field(
        default=None, description="a user the service knows: their history personalises the copy"
    )
    history: list[ExternalId] = Field(
        default_factory=list,
        max_length=MAX_HISTORY_ITEMS,
        description="recent items, oldest first (appended to the user's history when user_id is given)",
    )
    max_body_chars: Annotated[int, BeforeValidator(_integer)] = Field(
        default=MAX_BODY,
        ge=MIN_BODY_CHARS,
        le=MAX_BODY,
        description=f"longest body, {MIN_BODY_CHARS}..{MAX_BODY} characters (headline: {MAX_HEADLINE})",
    )
    fresh: Flag = Field(default=False, description="true: generate now even when the nightly batch wrote copy")


class AdCopyChecks(BaseModel):
    grounded: bool = Field(description="every brand, number and product noun is in the item's record")
    claims_free: bool = Field(description="no health, guarantee, superlative or protected-attribute claim")
    within_length: bool = Field(description="headline and body fit their limits")


class AdCopy(BaseModel):
    bundle_version: str
    item_id: str
    user_id: str | None = None
    headline: str
    body: str
    source: Literal["precomputed", "generated", "fallback"] = Field(
        description="precomputed: written by the nightly batch; generated: written now by the model; "
        "fallback: the grounded template (see `reasons`)"
    )
    generated: bool = Field(
        description="true when a model wrote the text (precomputed or now); false for the template, and for "
        "precomputed copy where the batch fell back (to the template or the record's own sentences, see `reasons`)"
    )
    reasons: list[str] = Field(description="why this source: rejected candidates, time budget, no history ...")
    interest: str | None = Field(description="the interest from the user's history the copy connects to")
    personalised: bool
    checks: AdCopyChecks
    unknown_items: list[str] = Field(description="history items this bundle does not know; they were ignored")
    generation_ms: float = Field(description="time spent generating (0 for precomputed copy)")
    tokens: int = Field(description="decoding steps run")


# -- events ------------------------------------------------------------------------------------------------
class Event(_Strict):
    event_id: IdText = Field(description="idempotency key: a retried event with the same key is stored once")
    user_id: ExternalId
    item_id: ExternalId
    timestamp: Timestamp
    event_type: Annotated[str, StringConstraints(max_length=64)] | None = None
    value: Annotated[float, Field(strict=True, allow_inf_nan=False)] | None = None


class EventBatch(_Strict):
    events: list[Event] = Field(min_length=1, max_length=MAX_EVENTS_PER_BATCH)


class EventsAccepted(BaseModel):
    accepted: int = Field(description="new events, durable (fsync'd) before this response was sent")
    duplicates: int = Field(description="events whose key was already journalled (retries); not stored twice")
    bundle_version: str | None = Field(description="the bundle serving when the events were applied")


# -- operations --------------------------------------------------------------------------------------------
class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "degraded", "not_ready"] = Field(
        description="degraded: a bundle serves but the event store is unreachable (recommendations answer from the "
        "bundle alone, events get 503); a load balancer should keep routing reads to it"
    )
    event_store: str | None = Field(default=None, description="sqlite (this machine's journal) or redis (shared)")
    event_store_reachable: bool | None = None
    event_store_error: str | None = None
    bundle_version: str | None = None
    bundle_created_at: str | None = None
    items: int | None = None
    max_len: int | None = None
    last_error: str | None = Field(default=None, description="why the last bundle load was refused, if it was")


class ReloadResult(BaseModel):
    status: Literal["reloaded", "unchanged"]
    bundle_version: str
    previous_version: str | None = None


class ErrorDetail(BaseModel):
    field: str
    message: str
    type: str | None = None


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)
    request_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
