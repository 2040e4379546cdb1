"""`recsys serve`: the online service."""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError

from recsys.cli.common import console, fail
from recsys.settings import describe_invalid, get_settings

app = typer.Typer()


@app.command()
def serve(
    host: str = typer.Option(None, help="interface (default RECSYS_HOST or 127.0.0.1)"),
    port: int = typer.Option(None, help="port (default RECSYS_PORT or 8000)"),
    workers: int = typer.Option(None, help="uvicorn worker processes (default RECSYS_WORKERS or 1)"),
    bundles: Path = typer.Option(
        None, help="bundles root with CURRENT (default RECSYS_BUNDLES_ROOT or <work_dir>/bundles)"
    ),
    journal: Path = typer.Option(None, help="event journal file (default <work_dir>/journal/events.sqlite3)"),
) -> None:
    """Run the online service (uvicorn): recommendations, events, hot reload, /metrics; admin key: RECSYS_API_KEY."""
    try:
        from serving.server import run
    except ImportError as exc:  # the base install answers from bundles; the HTTP service is the serve extra
        fail(f"the service needs the serve extra ({exc.name} is missing): pip install 'genrec[serve]'")

    overrides = {"host": host, "port": port, "workers": workers, "bundles_root": bundles, "journal_path": journal}
    try:
        settings = get_settings().model_copy(update={k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        fail(describe_invalid(exc))
    except ValueError as exc:
        fail(str(exc))
    base = f"http://{settings.host}:{settings.port}"
    console.print(f"serving {settings.bundles_dir} on {base} ({settings.workers} worker(s)); API docs: {base}/docs")
    console.print(f"try:  curl -s '{base}/v1/users/U-00001/recommendations?k=5'")
    console.print(
        f"      curl -s -XPOST {base}/v1/recommendations -H 'content-type: application/json' "
        """-d '{"history": ["SKU-00001", "SKU-00002"], "k": 5}'"""
    )
    run(settings)
