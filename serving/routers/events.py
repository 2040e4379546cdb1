"""Event intake: a batch is acknowledged only once it is durable in the event store and visible to live histories."""

from __future__ import annotations

from fastapi import APIRouter, Request

from serving.dependencies import ServicesDep
from serving.errors import ApiError, responses
from serving.journal import EventRecord, JournalError
from serving.schemas import EventBatch, EventsAccepted

router = APIRouter(prefix="/v1", tags=["events"])


@router.post(
    "/events",
    response_model=EventsAccepted,
    responses=responses(400, 409, 413, 415, 422, 503),
    summary="Record a batch of events (durable before the response)",
)
async def post_events(batch: EventBatch, services: ServicesDep, request: Request) -> EventsAccepted:
    """The response comes after the batch is committed and fsync'd (all of it or none). Every event carries an
    `event_id` idempotency key: resending a batch after a timeout stores nothing twice (`duplicates`); a key
    reused with a different payload is a 409 and nothing of the batch is stored. The user's next
    recommendations already include these events."""
    records = [EventRecord(e.event_id, e.user_id, e.item_id, e.timestamp, e.event_type, e.value) for e in batch.events]
    try:
        result = await services.store.append(records, batch_id=request.state.request_id)
    except JournalError as exc:
        raise ApiError(503, str(exc), "event_store_unavailable", {"Retry-After": "1"}) from None
    if result.conflicts:
        shown = ", ".join(result.conflicts[:10]) + (" ..." if len(result.conflicts) > 10 else "")
        message = (
            f"{len(result.conflicts)} event_id(s) were already recorded with a different payload ({shown}): "
            "nothing of this batch was stored; give new events new event_ids"
        )
        raise ApiError(409, message, "event_id_conflict")
    engine = services.holder.engine
    if engine is not None:
        request.state.bundle_version = engine.version
    return EventsAccepted(
        accepted=result.accepted, duplicates=result.duplicates, bundle_version=engine.version if engine else None
    )
