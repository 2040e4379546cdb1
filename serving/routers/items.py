"""Item-to-item: the items most similar to one item, from the bundle's item embeddings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from recsys.models.base import MAX_K
from serving.dependencies import Engine, ServicesDep
from serving.errors import ApiError, responses
from serving.schemas import MAX_ID_LENGTH, ScoredItem, SimilarItems

router = APIRouter(prefix="/v1", tags=["items"])


@router.get(
    "/items/{item_id}/similar",
    response_model=SimilarItems,
    responses=responses(404, 422, 503),
    summary="Items similar to an item",
)
async def similar_items(
    engine: Engine,
    services: ServicesDep,
    item_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH)],
    k: Annotated[int, Query(ge=1, le=MAX_K, description=f"how many items, 1..{MAX_K}")] = 10,
) -> SimilarItems:
    if item_id not in engine.vocab:
        raise ApiError(404, f"item {item_id!r} is not in bundle {engine.version}", "unknown_item")
    result = await services.compute(engine.similar_to, item_id, k)
    return SimilarItems(
        bundle_version=result.bundle_version,
        item_id=item_id,
        items=[ScoredItem(item_id=i, score=s) for i, s in zip(result.item_ids, result.scores, strict=True)],
    )
