"""Ad copy for (user or history, item): the nightly batch's copy when it exists, else written live."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from recsys.bundle.adcopy import AdCopyAnswer
from serving import metrics
from serving.dependencies import Engine, ServicesDep
from serving.errors import ApiError, responses
from serving.schemas import AdCopy, AdCopyChecks, AdCopyRequest

router = APIRouter(prefix="/v1", tags=["ad copy"])


def to_response(answer: AdCopyAnswer, version: str, user_id: str | None, unknown: list[str]) -> AdCopy:
    metrics.ADCOPY.labels(answer.source).inc()
    return AdCopy(
        bundle_version=version,
        item_id=answer.item_id,
        user_id=user_id,
        headline=answer.copy.headline,
        body=answer.copy.body,
        source=answer.source,  # type: ignore[arg-type]
        generated=answer.source != "fallback",
        reasons=answer.reasons,
        interest=answer.interest,
        personalised=answer.interest is not None,
        checks=AdCopyChecks(
            grounded=answer.grounded, claims_free=answer.claims_free, within_length=answer.within_length
        ),
        unknown_items=unknown,
        generation_ms=round(answer.generation_ms, 3),
        tokens=answer.tokens,
    )


@router.post(
    "/ad-copy",
    response_model=AdCopy,
    responses=responses(400, 404, 409, 413, 415, 422, 503),
    summary="A headline and body promoting an item to a user",
)
async def ad_copy(engine: Engine, services: ServicesDep, body: AdCopyRequest) -> AdCopy:
    """Copy that names the product, states only facts of its catalogue record, passes the claims filter and, when
    the history shares a category or brand with the item, connects to it. Precomputed copy (the nightly batch's,
    for the user's stored history) is served when it exists and `fresh` is false; otherwise the model writes it
    within the service's time budget, and the grounded template answers when it cannot (`source: fallback`)."""
    assets = engine.adcopy
    if assets is None:
        raise ApiError(
            409, f"bundle {engine.version} has no ad-copy assets (it was built without a catalogue)", "no_adcopy"
        )
    item_id = str(body.item_id)
    if item_id not in assets.records:
        raise ApiError(404, f"item {item_id!r} has no catalogue record in bundle {engine.version}", "unknown_item")
    max_body = body.max_body_chars
    if body.user_id is not None and not body.fresh and not body.history:
        answer = assets.precomputed(str(body.user_id), item_id, max_body)
        if answer is not None:
            return to_response(answer, engine.version, str(body.user_id), [])
    history = list(body.history)
    if body.user_id is not None:
        live = services.live.items(str(body.user_id), engine.created_ts)
        history = list(engine.user_query(str(body.user_id), live, history).history)
    unknown = [i for i in dict.fromkeys(history) if i not in engine.vocab and i not in assets.records]
    budget_s = services.settings.adcopy_budget_ms / 1000
    answer = await asyncio.to_thread(assets.write, item_id, history, max_body, budget_s)
    if not answer.finished:
        metrics.ADCOPY_TIMEOUTS.inc()
    return to_response(answer, engine.version, None if body.user_id is None else str(body.user_id), unknown)
