"""Recommendations for a known user (bundle history + live events) and for a history sent in the body."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from recsys.bundle import reader as engine_mod
from recsys.bundle.reader import Recommendations
from recsys.models.base import MAX_K
from serving import metrics
from serving.dependencies import Engine, ServicesDep
from serving.errors import responses
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


def to_response(result: Recommendations) -> Recommendation:
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
    )


def _query(engine: engine_mod.BundleRecommender, services: ServicesDep, q: HistoryQuery) -> engine_mod.Query:
    if q.user_id is None:
        return engine_mod.Query(q.history, None, q.exclude)
    live = services.live.items(q.user_id, engine.created_ts)
    query = engine.user_query(q.user_id, live, q.history)
    query.exclude = q.exclude
    return query


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
    live = services.live.items(user_id, engine.created_ts)
    result = await services.compute(engine.recommend_for_user, user_id, k, exclude_seen, live)
    return to_response(result)


@router.post(
    "/recommendations",
    response_model=Recommendation,
    responses=responses(400, 413, 415, 422, 503),
    summary="Recommendations for an anonymous or session history",
)
async def history_recommendations(engine: Engine, services: ServicesDep, body: RecommendRequest) -> Recommendation:
    """Ranks for the history in the body (unknown items are ignored and listed). With `user_id`, the history
    is appended to what the service knows of that user."""
    queries = [_query(engine, services, body)]
    results = await services.compute(engine.recommend_queries, queries, body.k, body.exclude_seen)
    return to_response(results[0])


@router.post(
    "/recommendations/batch",
    response_model=BatchRecommendation,
    responses=responses(400, 413, 415, 422, 503),
    summary="Recommendations for many histories or users in one call",
)
async def batch_recommendations(
    engine: Engine, services: ServicesDep, body: BatchRecommendRequest
) -> BatchRecommendation:
    """One ONNX run and one FAISS search for every query; results in the order of the queries."""
    queries = [_query(engine, services, q) for q in body.queries]
    results = await services.compute(engine.recommend_queries, queries, body.k, body.exclude_seen)
    return BatchRecommendation(bundle_version=engine.version, results=[to_response(r) for r in results])
