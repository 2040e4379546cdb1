"""Recommendations for a known user (bundle history + live events) and for a history sent in the body."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic_core import to_json

from recsys.bundle import reader as engine_mod
from recsys.bundle.reader import Recommendations
from recsys.models.base import MAX_K
from serving import metrics
from serving.admission import BatchSlotsDep
from serving.dependencies import Engine, ServicesDep
from serving.errors import ApiError, responses
from serving.schemas import (
    MAX_ID_LENGTH,
    BatchRecommendation,
    BatchRecommendRequest,
    HistoryQuery,
    Recommendation,
    RecommendRequest,
    ScoredItem,
)

router = APIRouter(prefix="/v1", tags=["recommendations"])


def to_response(result: Recommendations, live_unavailable: bool = False) -> Recommendation:
    if result.fallback:
        metrics.FALLBACKS.labels(result.fallback_reason or "unknown_user").inc()
    if result.unknown_items:
        metrics.UNKNOWN_ITEMS.inc(len(result.unknown_items))
    return Recommendation(
        bundle_version=result.bundle_version,
        user_id=result.user_id,
        items=[ScoredItem(item_id=i, score=s) for i, s in zip(result.item_ids, result.scores, strict=True)],
        fallback=result.fallback,
        fallback_reason=result.fallback_reason,
        unknown_items=result.unknown_items,
        history_length=result.history_length,
        history_truncated=result.history_truncated,
        live_events_unavailable=live_unavailable,
    )


async def _query(
    engine: engine_mod.BundleRecommender, services: ServicesDep, q: HistoryQuery
) -> tuple[engine_mod.Query, bool]:
    """The engine's query, and whether the user's live events could not be read (then it is the bundle's alone)."""
    if q.user_id is None:
        return engine_mod.Query(q.history, None, q.exclude), False
    live = await services.store.live_items(q.user_id, engine)
    query = engine.user_query(q.user_id, live or [], q.history)
    query.exclude = q.exclude
    return query, live is None


@router.get(
    "/users/{user_id}/recommendations",
    response_model=Recommendation,
    responses=responses(422, 503),
    summary="Recommendations for a user from their history (bundle + events since)",
)
async def user_recommendations(
    engine: Engine,
    services: ServicesDep,
    user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH)],
    k: Annotated[int, Query(ge=1, le=MAX_K, description=f"how many items, 1..{MAX_K}")] = 10,
    exclude_seen: Annotated[bool, Query(description="leave out items the user already has")] = True,
) -> Recommendation:
    """A user the bundle knows is ranked from their recent history plus the events received since the bundle
    was built; a user with neither gets the most popular items, flagged `fallback` (`unknown_user`)."""
    live = await services.store.live_items(user_id, engine)
    result = await services.compute(engine.recommend_for_user, user_id, k, exclude_seen, live or [])
    return to_response(result, live_unavailable=live is None)


@router.post(
    "/recommendations",
    response_model=Recommendation,
    responses=responses(400, 413, 415, 422, 503),
    summary="Recommendations for an anonymous or session history",
)
async def history_recommendations(engine: Engine, services: ServicesDep, body: RecommendRequest) -> Recommendation:
    """Ranks for the history in the body (unknown items are ignored and listed). With `user_id`, the history
    is appended to what the service knows of that user."""
    query, live_unavailable = await _query(engine, services, body)
    results = await services.compute(engine.recommend_queries, [query], body.k, body.exclude_seen)
    return to_response(results[0], live_unavailable)


@router.post(
    "/recommendations/batch",
    response_model=BatchRecommendation,
    responses=responses(400, 413, 415, 422, 429, 503),
    summary="Recommendations for many histories or users in one call",
)
async def batch_recommendations(
    engine: Engine, services: ServicesDep, slots: BatchSlotsDep, body: BatchRecommendRequest
) -> Response:
    """One ONNX run and one FAISS search for every query; results in the order of the queries.

    A batch may ask for at most `max_batch_results` results (queries × k; 422 beyond), and a worker serves a
    few batches at once (`batch_concurrency`): one that finds no free slot within `batch_wait_s` gets 429 with
    Retry-After."""
    check_batch_size(body, services.settings.max_batch_results)
    async with slots.slot():
        pairs = await asyncio.gather(*(_query(engine, services, q) for q in body.queries))
        queries = [query for query, _ in pairs]
        live_unavailable = [unavailable for _, unavailable in pairs]
        # Off the event loop (rendering 256 × 1000 items took ~2 s of it before, while every request waited) and
        # off the scoring thread that single-user requests queue for: a batch thread, pre-rendered JSON back.
        content = await slots.run(score_and_render, engine, queries, body.k, body.exclude_seen, live_unavailable)
    return Response(content, media_type="application/json")


def score_and_render(
    engine: engine_mod.BundleRecommender,
    queries: list[engine_mod.Query],
    k: int,
    exclude_seen: bool,
    live_unavailable: list[bool],
) -> bytes:
    results = engine.recommend_queries(queries, k, exclude_seen)
    return render_batch(engine.version, results, live_unavailable)


def check_batch_size(body: BatchRecommendRequest, max_results: int) -> None:
    """ApiError 422 when the batch asks for more results than one request may (what it costs grows with it)."""
    asked = len(body.queries) * body.k
    if asked > max_results:
        metrics.BATCH_REJECTIONS.labels("too_large").inc()
        if body.k > max_results:
            advice = f"ask for k of at most {max_results}"
        else:
            advice = f"split it into batches of at most {max_results // body.k} queries at this k"
        raise ApiError(
            422,
            f"this batch asks for {asked} results ({len(body.queries)} queries × k={body.k}), more than the limit "
            f"of {max_results} per request: {advice}",
            "batch_too_large",
        )


def render_batch(version: str, results: list[Recommendations], live_unavailable: list[bool]) -> bytes:
    """The BatchRecommendation JSON, byte for byte what FastAPI writes for the model (pydantic's serialiser).

    A ScoredItem model per item cost ~4 µs (a second for 256 × 1000 items), so the items are plain dicts of
    the model's two fields; the rest of each result goes through `to_response` (its fields, its metrics).
    Each result is serialised on its own: one call for everything would hold the GIL, and so stall the event
    loop, for as long as it runs, while between results the loop gets its turn.
    """
    parts = []
    for result, unavailable in zip(results, live_unavailable, strict=True):
        record = to_response(replace(result, item_ids=[], scores=[]), unavailable).model_dump()
        record["items"] = [{"item_id": i, "score": s} for i, s in zip(result.item_ids, result.scores, strict=True)]
        parts.append(to_json(record))
    return b'{"bundle_version":' + to_json(version) + b',"results":[' + b",".join(parts) + b"]}"
