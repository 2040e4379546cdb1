"""`recsys data ...`: validate, import and generate event data."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from recsys.cli.common import FORMATS_HELP, console, fail
from recsys.settings import get_settings

app = typer.Typer(help="Validate and import event data.", no_args_is_help=True)


@app.command("validate")
def data_validate(
    path: Path = typer.Argument(..., help="event file or dataset folder"),
    fmt: str = typer.Option("csv", "--format", "-f", help=FORMATS_HELP),
    catalogue: Path = typer.Option(None, help="catalogue file (csv/parquet/sequences formats); enables unknown_item"),
    rejects: Path = typer.Option(None, help="write the rejected rows, with a reason column, to this parquet file"),
    max_reject_rate: float = typer.Option(None, help="fail above this share of rejected rows (default 0.05)"),
) -> None:
    """Validate an event source: print the summary and keep every rejected row with its reason."""
    from recsys.data.importers import read_dataset
    from recsys.data.validate import validate

    rate = get_settings().max_reject_rate if max_reject_rate is None else max_reject_rate
    try:
        result = validate(read_dataset(path, fmt, catalogue_path=catalogue), max_reject_rate=1.0)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if rejects is not None:
        rejects.parent.mkdir(parents=True, exist_ok=True)
        result.rejects.write_parquet(rejects)
    console.print_json(json.dumps(result.summary, default=str))
    if result.summary["reject_rate"] > rate:
        where = f" (rows in {rejects})" if rejects else " (add --rejects FILE to keep them)"
        fail(f"reject rate {result.summary['reject_rate']:.2%} is above the threshold {rate:.2%}{where}")


@app.command("import")
def data_import(
    path: Path = typer.Argument(..., help="event file or dataset folder"),
    out: Path = typer.Option(..., help="prepared dataset directory to write"),
    fmt: str = typer.Option("csv", "--format", "-f", help=FORMATS_HELP),
    catalogue: Path = typer.Option(None, help="catalogue file (csv/parquet/sequences formats)"),
    max_reject_rate: float = typer.Option(None, help="fail above this share of rejected rows (default 0.05)"),
) -> None:
    """Read, validate and write a prepared dataset (events, catalogue, rejects, vocabulary, summary)."""
    from recsys.data.importers import read_dataset
    from recsys.data.prepared import write_prepared
    from recsys.data.validate import validate

    rate = get_settings().max_reject_rate if max_reject_rate is None else max_reject_rate
    out.mkdir(parents=True, exist_ok=True)
    try:
        raw = read_dataset(path, fmt, catalogue_path=catalogue)
        write_prepared(validate(raw, max_reject_rate=rate, rejects_path=out / "rejects.parquet"), out)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    console.print(f"prepared dataset written to [bold]{out}[/]")
    console.print_json((out / "summary.json").read_text())


@app.command("synthetic")
def data_synthetic(
    out: Path = typer.Option(..., help="folder for events.csv and catalogue.csv"),
    preset: str = typer.Option("default", help="data/synthetic/<preset>.json or a path"),
    seed: int = typer.Option(0),
) -> None:
    """Write the seeded synthetic dataset (catalogue with item text, sequential user behaviour)."""
    from recsys.data.synthetic import write_synthetic

    events, catalogue = write_synthetic(out, preset, seed)
    console.print(f"wrote {events} and {catalogue}")


@app.command("synth")
def data_synth(
    out: Path = typer.Option(..., help="folder for catalogue.parquet, events/part-*.parquet and summary.json"),
    items: int = typer.Option(1_000_000, min=1),
    users: int = typer.Option(1_000_000, min=1),
    events: int = typer.Option(20_000_000, min=3, help="exactly this many; 3..max-length per user"),
    max_length: int = typer.Option(500, min=3, help="events per user at most"),
    chunk_users: int = typer.Option(50_000, min=1, help="users generated and written at a time (bounds memory)"),
    seed: int = typer.Option(0),
) -> None:
    """A large synthetic world for scale tests, streamed to partitioned parquet in bounded memory."""
    from recsys.data.scale import ScaleWorld, write_scale_world

    try:
        world = ScaleWorld(items, users, events, max_length=max_length, chunk_users=chunk_users, seed=seed)
    except ValueError as exc:
        fail(str(exc))
    summary = write_scale_world(world, out, log=console.print)
    console.print(f"wrote {out}: {summary['wall_s']} s, peak RSS {summary['peak_rss_mb']} MB")
