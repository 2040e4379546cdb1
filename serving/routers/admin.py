"""Admin routes, behind the X-API-Key header (RECSYS_API_KEY)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from serving.dependencies import ServicesDep, require_admin
from serving.errors import ApiError, responses
from serving.schemas import ReloadResult
from serving.state import ReloadFailed

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@router.post(
    "/reload",
    response_model=ReloadResult,
    responses=responses(401, 403, 409, 422),
    summary="Load the bundle CURRENT names now",
)
async def reload_bundle(
    services: ServicesDep,
    request: Request,
    force: Annotated[bool, Query(description="reload even if CURRENT names the version already serving")] = False,
) -> ReloadResult:
    """Verifies the bundle (checksums, smoke query) and swaps it in atomically; a refused bundle gives 409 and
    the previous one keeps serving. The service also reloads by itself when CURRENT changes."""
    try:
        outcome = await services.holder.reload(force=force, reason="admin")
    except ReloadFailed as exc:
        raise ApiError(409, str(exc), "bundle_refused") from None
    request.state.bundle_version = outcome.version
    return ReloadResult(
        status=outcome.status, bundle_version=outcome.version, previous_version=outcome.previous_version
    )
