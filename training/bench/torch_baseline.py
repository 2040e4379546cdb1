"""The baseline of `recsys benchmark serving`: what a team writes first to serve the model.

FastAPI + uvicorn (defaults), the torch checkpoint loaded with `GenerativeRecommender.load`, and per request
the model's own `recommend()`: a torch forward pass for the user vector, scores for the whole catalogue,
history masked, top-k. A plain `def` route (FastAPI runs it in its thread pool), torch's default threads.
It answers the same route as the service, from the same bundle's user histories, so the load is identical.
It lives on the training side because it imports torch, which the service never does.

    python -m training.bench.torch_baseline --checkpoint MODEL_DIR --bundle BUNDLE_DIR --port 8001
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import polars as pl
import uvicorn
from fastapi import FastAPI, HTTPException

from recsys.bundle.layout import HISTORIES
from training.lm.model import GenerativeRecommender


def create_app(checkpoint: Path, bundle_dir: Path) -> FastAPI:
    model = GenerativeRecommender.load(checkpoint)
    frame = pl.read_parquet(bundle_dir / HISTORIES)
    histories = dict(zip(frame["user_id"].to_list(), frame["item_ids"].to_list(), strict=True))
    app = FastAPI(title="torch baseline")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/users/{user_id}/recommendations")
    def recommend(user_id: str, k: int = 10) -> dict:
        history = histories.get(user_id)
        if history is None:
            raise HTTPException(404, "unknown user")
        known, _ = model.vocab.lookup(history)
        items, scores = model.recommend([known], k)
        return {
            "user_id": user_id,
            "items": [
                {"item_id": model.vocab.item_ids[i], "score": float(s)}
                for i, s in zip(items[0], scores[0], strict=True)
            ],
        }

    return app


def create_app_from_env() -> FastAPI:
    """For uvicorn's worker processes, which import the app by name."""
    return create_app(Path(os.environ["BASELINE_CHECKPOINT"]), Path(os.environ["BASELINE_BUNDLE"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="saved LM directory (recsys train)")
    parser.add_argument("--bundle", type=Path, required=True, help="bundle directory: its user histories")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    os.environ["BASELINE_CHECKPOINT"] = str(args.checkpoint.resolve())
    os.environ["BASELINE_BUNDLE"] = str(args.bundle.resolve())
    # uvicorn's defaults otherwise; warning level only drops its per-request access lines.
    uvicorn.run(
        "training.bench.torch_baseline:create_app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
