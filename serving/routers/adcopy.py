"""Ad copy for (user or history, item): the nightly batch's copy when it exists, else written live."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fastapi import APIRouter

from recsys.adcopy.checks import MAX_BODY
from recsys.bundle.adcopy import AdCopyAnswer
from recsys.bundle.reader import BundleRecommender
from serving import metrics
from serving.dependencies import Engine, Services, ServicesDep
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
        generated=answer.generated,
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
    user_id = None if body.user_id is None else str(body.user_id)
    answer, unknown = await write_copy(
        engine, services, str(body.item_id), user_id, list(body.history), body.max_body_chars, body.fresh
    )
    if not answer.finished:
        metrics.ADCOPY_TIMEOUTS.inc()
    return to_response(answer, engine.version, user_id, unknown)


async def write_copy(
    engine: BundleRecommender,
    services: Services,
    item_id: str,
    user_id: str | None = None,
    history: Sequence[str] = (),
    max_body: int = MAX_BODY,
    fresh: bool = False,
) -> tuple[AdCopyAnswer, list[str]]:
    """The copy POST /v1/ad-copy answers for (user or history, item), and the history items the bundle does not
    know. Precomputed copy when the user has some and nothing asks for fresh copy, else written now.

    ApiError 409 when the bundle has no ad-copy assets, 404 when the item has no catalogue record."""
    assets = engine.adcopy
    if assets is None:
        raise ApiError(
            409, f"bundle {engine.version} has no ad-copy assets (it was built without a catalogue)", "no_adcopy"
        )
    if item_id not in assets.records:
        raise ApiError(404, f"item {item_id!r} has no catalogue record in bundle {engine.version}", "unknown_item")
    if user_id is not None and not fresh and not history:
        answer = assets.precomputed(user_id, item_id, max_body)
        if answer is not None:
            return answer, []
    history = list(history)
    if user_id is not None:
        live = await services.store.live_items(user_id, engine) or []
        history = list(engine.user_query(user_id, live, history).history)
    unknown = [i for i in dict.fromkeys(history) if i not in engine.vocab and i not in assets.records]
    budget_s = services.settings.adcopy_budget_ms / 1000
    answer = await asyncio.to_thread(assets.write, item_id, history, max_body, budget_s)
    return answer, unknown
