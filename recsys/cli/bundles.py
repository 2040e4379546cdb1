"""`recsys bundle ...` and `recsys rollback`: inspect, verify, promote and roll back bundles."""

from __future__ import annotations

from pathlib import Path

import typer

from recsys.cli.common import console, fail
from recsys.settings import get_settings

app = typer.Typer(help="Inspect, verify and promote bundles.", no_args_is_help=True)
commands = typer.Typer()  # top-level: rollback


@app.command("verify")
def bundle_verify(path: Path = typer.Argument(..., help="bundle directory or bundles root")) -> None:
    """Check every file of a bundle against the manifest's sha256."""
    from recsys import bundle as bundles

    try:
        manifest = bundles.verify(bundles.resolve(path))
    except bundles.BundleError as exc:
        fail(str(exc))
    console.print(f"bundle {manifest['version']} verified: {len(manifest['files'])} files match the manifest")


@app.command("promote")
def bundle_promote(
    version: str = typer.Argument(..., help="bundle version (directory name)"),
    bundles: Path = typer.Option(None, help="bundles root (default: <work_dir>/bundles)"),
) -> None:
    """Verify a bundle and point CURRENT at it atomically."""
    from recsys import bundle as bundles_mod

    try:
        bundles_mod.promote(bundles or get_settings().bundles_dir, version)
    except bundles_mod.BundleError as exc:
        fail(str(exc))
    console.print(f"CURRENT -> {version}")


@app.command("list")
def bundle_list(bundles: Path = typer.Option(None, help="bundles root (default: <work_dir>/bundles)")) -> None:
    """The sealed bundles, oldest first, with the current one and the one `recsys rollback` would restore."""
    from recsys.bundle.releases import describe

    for row in describe(bundles or get_settings().bundles_dir):
        flag = "CURRENT " if row["current"] else "previous" if row["previous"] else "        "
        ndcg = f"NDCG@10 {row['NDCG@10']:.4f}" if isinstance(row["NDCG@10"], float) else ""
        console.print(f"{flag} {row['version']}  {row['created_at'] or ''}  {ndcg}")


@commands.command()
def rollback(
    bundles: Path = typer.Option(None, help="bundles root (default: <work_dir>/bundles)"),
    to: str = typer.Option(None, help="a specific version (default: the bundle that served before this one)"),
) -> None:
    """Put the previous bundle back: verified, then CURRENT is replaced atomically (the service follows)."""
    from recsys.bundle import BundleError
    from recsys.bundle.releases import rollback as do_rollback

    try:
        old, new = do_rollback(bundles or get_settings().bundles_dir, to)
    except BundleError as exc:
        fail(str(exc))
    console.print(f"rolled back: CURRENT {old} -> {new}")
