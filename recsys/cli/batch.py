"""The unattended batch side: the nightly job, the behaviour report and the demo."""

from __future__ import annotations

from pathlib import Path

import typer

from recsys.cli.common import console, fail, trains
from recsys.settings import get_settings

commands = typer.Typer()  # top-level: nightly, demo
report_app = typer.Typer(help="Offline reports: behaviour predictions over all users.", no_args_is_help=True)


@commands.command()
@trains
def nightly(
    work_dir: Path = typer.Option(None, help="the job's folder: runs, event lake, checkpoints (<work_dir>/nightly)"),
    bundles: Path = typer.Option(None, help="bundles root the service serves (default: <work_dir>/bundles)"),
    inbox: Path = typer.Option(None, help="folder of new event files, csv/parquet (default: <work_dir>/inbox)"),
    events_from: str = typer.Option(
        None,
        "--journal",
        "--event-store",
        help="where the service's events are: its SQLite journal file or the shared store's redis:// URL "
        "(default: RECSYS_STATE_URL when set, else the journal's configured path)",
    ),
    catalogue: Path = typer.Option(None, help="current catalogue: csv, parquet or MovieLens movies.dat"),
    preset: str = typer.Option("synthetic", help="training preset: architecture, training and nightly recipe"),
    tolerance: float = typer.Option(0.02, help="relative NDCG@10 the candidate may lose against production"),
    eval_users: int = typer.Option(
        20_000, min=100, help="evaluate, gate and verify on a fixed sample of this many users (all when fewer)"
    ),
    retention: int = typer.Option(5, min=0, help="old bundles kept besides the current and the previous one"),
    max_minutes: float = typer.Option(None, help="time budget of the warm-started fine-tune (default: the preset's)"),
    scratch_max_minutes: float = typer.Option(None, help="time budget when training from scratch (default: preset's)"),
    warm_epochs: int = typer.Option(None, min=1, help="epochs of the warm-started fine-tune (default: the preset's)"),
    warm_shrink: float = typer.Option(
        None, min=0.01, max=1.0, help="shrink-and-perturb factor before the fine-tune, 1: none (default: preset's)"
    ),
    max_reject_rate: float = typer.Option(None, help="fail above this share of rejected rows (default 0.05)"),
    nproc: int = typer.Option(1, min=1, help="training processes (torchrun, DDP: gloo on CPU, NCCL on GPUs)"),
    launcher: str = typer.Option(None, help="training launcher for a cluster, e.g. 'torchrun --nnodes 2 ...'"),
    from_scratch: bool = typer.Option(False, help="ignore the production model; train from scratch"),
    text_init: bool = typer.Option(True, help="new items' rows start from their catalogue text"),
    force: bool = typer.Option(False, help="train even when nothing is new since the last run"),
    copy_model: Path = typer.Option(None, help="ad-copy model folder (`recsys train-copy`); none: template copy"),
    adcopy_top_k: int = typer.Option(3, min=1, max=50, help="the bundle carries copy for each user's top-k"),
    run_id: str = typer.Option(None, help="resume (or create) this run instead of the latest unfinished one"),
    seed: int = typer.Option(0),
    drill_shuffled_training: bool = typer.Option(
        False, hidden=True, help="gate drill: train on shuffled sequences; the gate must refuse the candidate"
    ),
) -> None:
    """The nightly batch job: ingest -> prepare -> train (warm start) -> evaluate -> gate -> export -> promote.

    Safe to rerun: an interrupted run resumes where it stopped. Exit 0: promoted, refused by the gate or
    nothing new (see the summary); 1: a step failed (production untouched); 75: another run holds the lock.
    """
    from training.nightly.job import EXIT_LOCKED, NightlyConfig, NightlyLocked, StepFailed, run_nightly

    settings = get_settings()
    cfg = NightlyConfig(
        work_dir=work_dir or settings.work_dir / "nightly",
        bundles_root=bundles or settings.bundles_dir,
        inbox=inbox or settings.work_dir / "inbox",
        journal=events_from or settings.state_url or settings.journal_file,
        catalogue=catalogue,
        preset=preset,
        tolerance=tolerance,
        eval_users=eval_users,
        retention=retention,
        recipe={
            "warm_max_minutes": max_minutes,
            "scratch_max_minutes": scratch_max_minutes,
            "warm_epochs": warm_epochs,
            "warm_shrink": warm_shrink,
        },
        max_reject_rate=settings.max_reject_rate if max_reject_rate is None else max_reject_rate,
        nproc=nproc,
        launcher=launcher,
        from_scratch=from_scratch,
        text_init=text_init,
        force=force,
        copy_model=copy_model,
        adcopy_top_k=adcopy_top_k,
        run_id=run_id,
        seed=seed,
        drill_shuffle=drill_shuffled_training,
    )
    try:
        summary = run_nightly(cfg, log=lambda line: print(line, flush=True))
    except NightlyLocked as exc:
        fail(str(exc), code=EXIT_LOCKED)
    except StepFailed as exc:
        fail(f"{exc} (artefacts kept in {cfg.work_dir / 'runs'}; production unchanged)")
    print(f"summary: {cfg.work_dir / 'runs' / summary['run_id'] / 'summary.json'}", flush=True)


@report_app.command("behaviour")
def report_behaviour(
    bundles: Path = typer.Option(None, help="bundle directory or bundles root (default: <work_dir>/bundles)"),
    events: Path = typer.Option(
        None, help="events: partitioned parquet (the nightly lake), a parquet file, or a prepared dataset folder"
    ),
    users: Path = typer.Option(None, help="user attributes for the bias audit: csv/parquet, or MovieLens users.dat"),
    segment: list[str] = typer.Option(None, help="only users with COLUMN=VALUE (repeat to combine)"),
    nightly_dir: Path = typer.Option(None, help="nightly job folder, for quality over previous nights"),
    out: Path = typer.Option(None, help="output folder (default: <work_dir>/reports/behaviour)"),
    k: int = typer.Option(10, min=1, max=100, help="items per user in predictions.parquet"),
    period_days: float = typer.Option(7.0, help="the 'next period' of the activity prediction and rising items"),
    baselines: str = typer.Option("popularity,als", help="comma-separated baselines to compare with"),
    screenshot: bool = typer.Option(False, help="render report.html in headless Chromium and save report.png"),
    backtest_users: int = typer.Option(
        20_000, min=1, help="back-test on a fixed random sample of this many users when there are more"
    ),
) -> None:
    """Behaviour predictions over all users: predictions.parquet and a self-contained report.html."""
    from training.reports.behaviour import ReportConfig, build_report

    settings = get_settings()
    cfg = ReportConfig(
        bundles=bundles or settings.bundles_dir,
        events=events or settings.work_dir / "nightly" / "lake",
        users=users,
        segment=list(segment or []),
        nightly_dir=nightly_dir or settings.work_dir / "nightly",
        out=out or settings.work_dir / "reports" / "behaviour",
        k=k,
        period_days=period_days,
        baselines=[b for b in baselines.split(",") if b],
        backtest_users=backtest_users,
    )
    try:
        result = build_report(cfg, console)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    except Exception as exc:
        from recsys.bundle import BundleError

        if isinstance(exc, BundleError):
            fail(str(exc))
        raise
    if screenshot:
        from training.reports.browser import render

        rendered = render(result["html"], cfg.out / "report.png")
        console.print(f"rendered in Chromium: {len(rendered.charts)} charts, {len(rendered.errors)} console errors")
    console.print(f"wrote [bold]{result['predictions']}[/] and [bold]{result['html']}[/]")


# -- demo and benchmarks -----------------------------------------------------------------------------------
@commands.command()
@trains
def demo(
    work_dir: Path = typer.Option(None, help="where everything is written (default: RECSYS_WORK_DIR or ./var)"),
    preset: str = typer.Option("default", help="synthetic data preset (data/synthetic/<name>.json)"),
    seed: int = typer.Option(0),
) -> None:
    """The main job end to end on the embedded synthetic data: data -> train -> evaluate -> bundle -> recommend."""
    from training.demo import run_demo

    run_demo(work_dir or get_settings().work_dir, preset, seed, console)
