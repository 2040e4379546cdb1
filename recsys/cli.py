"""The `recsys` command line. Heavy modules (torch, the training side) are imported inside the commands
that need them, so `recsys recommend` answers from a bundle without ever importing torch."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console

from recsys.console import metrics_table, print_recommendations
from recsys.settings import get_settings

app = typer.Typer(help="Generative recommender: data, training, evaluation, export and serving.", no_args_is_help=True)
data_app = typer.Typer(help="Validate and import event data.", no_args_is_help=True)
bundle_app = typer.Typer(help="Inspect, verify and promote bundles.", no_args_is_help=True)
benchmark_app = typer.Typer(
    help="Benchmarks that print figures and write JSON under benchmarks/results/.", no_args_is_help=True
)
report_app = typer.Typer(help="Offline reports: behaviour predictions over all users.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(bundle_app, name="bundle")
app.add_typer(benchmark_app, name="benchmark")
app.add_typer(report_app, name="report")
# Wide enough for the metrics tables when the output goes to a file or a pipe (rich assumes 80 columns).
console = Console(width=None if sys.stdout.isatty() else 140)
errors = Console(stderr=True, soft_wrap=True)  # one unbroken line per error, greppable

FORMATS_HELP = "csv | parquet | movielens | sequences | recbole"


def _fail(message: str, code: int = 1) -> None:
    errors.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _tune_malloc() -> None:
    """Re-run this process with glibc malloc settings that make small-model CPU training ~1.7x faster.

    They only take effect when set before Python starts (PITFALLS.md), hence the re-exec; opt out with
    RECSYS_NO_MALLOC_TUNING=1.
    """
    if os.environ.get("MALLOC_MMAP_MAX_") is not None or os.environ.get("RECSYS_NO_MALLOC_TUNING"):
        return
    env = dict(os.environ, MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_="68719476736")
    argv = [sys.executable, "-m", "recsys.cli", *sys.argv[1:]]
    sys.stdout.flush()
    os.execve(sys.executable, argv, env)


# -- data ------------------------------------------------------------------------------------------------
@data_app.command("validate")
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
        _fail(str(exc))
    if rejects is not None:
        rejects.parent.mkdir(parents=True, exist_ok=True)
        result.rejects.write_parquet(rejects)
    console.print_json(json.dumps(result.summary, default=str))
    if result.summary["reject_rate"] > rate:
        where = f" (rows in {rejects})" if rejects else " (add --rejects FILE to keep them)"
        _fail(f"reject rate {result.summary['reject_rate']:.2%} is above the threshold {rate:.2%}{where}")


@data_app.command("import")
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
        _fail(str(exc))
    console.print(f"prepared dataset written to [bold]{out}[/]")
    console.print_json((out / "summary.json").read_text())


@data_app.command("synthetic")
def data_synthetic(
    out: Path = typer.Option(..., help="folder for events.csv and catalogue.csv"),
    preset: str = typer.Option("default", help="data/synthetic/<preset>.json or a path"),
    seed: int = typer.Option(0),
) -> None:
    """Write the seeded synthetic dataset (catalogue with item text, sequential user behaviour)."""
    from recsys.synthetic import write_synthetic

    events, catalogue = write_synthetic(out, preset, seed)
    console.print(f"wrote {events} and {catalogue}")


# -- training, evaluation, export -------------------------------------------------------------------------
@app.command()
def train(
    dataset: Path = typer.Option(..., help="prepared dataset directory (recsys data import)"),
    out: Path = typer.Option(..., help="directory to save the trained model in"),
    model: str = typer.Option("lm", help="lm | als | popularity"),
    preset: str = typer.Option("synthetic", help="training/presets/<name>.json or a path"),
    base_model: Path = typer.Option(None, help="local checkpoint to start from (ours: warm start; HF: base LM)"),
    epochs: int = typer.Option(None, help="override the preset's epochs"),
    seed: int = typer.Option(None, help="override the preset's seed"),
) -> None:
    """Fit a model on the training part of the leave-one-out split; keeps the best validation checkpoint."""
    _tune_malloc()
    from training import pipeline
    from training.presets import load_preset

    try:
        chosen = load_preset(preset, {"epochs": epochs, "seed": seed})
        recommender = pipeline.new_model(model, chosen, base_model)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    prepared = _load_prepared(dataset)
    data = pipeline.split(prepared, chosen.max_len)
    stats = pipeline.fit(recommender, data, prepared)
    from training.distributed import current

    if current().is_main:  # under torchrun every process trains the same model; one saves it
        recommender.save(out)
        console.print(f"saved {model} model to [bold]{out}[/]: {stats}")


@app.command("train-copy")
def train_copy(
    dataset: Path = typer.Option(..., help="prepared dataset directory with a catalogue (recsys data import)"),
    out: Path = typer.Option(..., help="directory for the copy model (ONNX decoder, tokenizer, weights)"),
    max_minutes: float = typer.Option(10.0, help="training time budget"),
    epochs: int = typer.Option(30, min=1),
    seed: int = typer.Option(0),
) -> None:
    """Fine-tune the ad-copy model on the catalogue's text and export it for the service."""
    _tune_malloc()
    from recsys.adcopy.facts import CatalogueFacts
    from recsys.adcopy.records import records_from_catalogue
    from training.copywriter import CopyTrainConfig, export_copy_model, fine_tune_copy

    prepared = _load_prepared(dataset)
    if prepared.catalogue is None:
        _fail(f"{dataset} has no catalogue: ad copy is written from catalogue records (import one with --catalogue)")
    records = records_from_catalogue(prepared.catalogue)
    config = CopyTrainConfig(max_minutes=max_minutes, epochs=epochs, seed=seed)
    trained = fine_tune_copy(
        list(records.values()), CatalogueFacts.from_records(records.values()), config, console.print
    )
    export_copy_model(trained.model, trained.tokenizer, out)
    console.print(f"copy model written to [bold]{out}[/]: {trained.stats}")


@app.command("evaluate")
def evaluate_command(
    dataset: Path = typer.Option(..., help="prepared dataset directory"),
    model_dir: Path = typer.Option(None, help="a saved model directory"),
    bundle: Path = typer.Option(None, help="or a bundle (directory or bundles root): evaluates the ONNX+FAISS path"),
    max_len: int = typer.Option(None, help="input length (default: the model's, else 50)"),
    out: Path = typer.Option(None, help="write the metrics JSON here"),
) -> None:
    """Evaluate under the protocol: full ranking, masked (headline) and unmasked, test and valid."""
    if (model_dir is None) == (bundle is None):
        _fail("give exactly one of --model-dir or --bundle")
    prepared = _load_prepared(dataset)
    if bundle is not None:
        scorer = _open_bundle(bundle)
        length = max_len or scorer.max_len
    else:
        from training.pipeline import load_model

        scorer = load_model(model_dir)
        length = max_len or getattr(scorer, "max_len", 50)
    from recsys.data.sequences import build_sequences, leave_one_out
    from recsys.evaluate import evaluate

    data = leave_one_out(build_sequences(prepared.events, prepared.vocab), length)
    test = evaluate(scorer, data.test)
    result = {
        "test": test["masked"],
        "test_unmasked": test["unmasked"],
        "valid": evaluate(scorer, data.valid)["masked"],
    }
    console.print(metrics_table("test (masked headline)", {"model": result}))
    console.print(metrics_table("test (unmasked)", {"model": result}, "test_unmasked"))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        console.print(f"metrics written to {out}")


@app.command()
def export(
    dataset: Path = typer.Option(..., help="prepared dataset directory the model was trained on"),
    model_dir: Path = typer.Option(..., help="a saved LM directory"),
    bundles: Path = typer.Option(None, help="bundles root (default: <work_dir>/bundles)"),
    promote: bool = typer.Option(True, help="point CURRENT at the new bundle after it verifies"),
    copy_model: Path = typer.Option(None, help="ad-copy model folder (`recsys train-copy`); none: template copy"),
    adcopy_top_k: int = typer.Option(3, min=1, max=50, help="the bundle carries copy for each user's top-k"),
) -> None:
    """Export the LM as a bundle: ONNX user encoder, FAISS index, catalogue, histories, ad copy, manifest."""
    from recsys.data.sequences import build_sequences
    from training.export import AdCopyPlan, export_bundle
    from training.pipeline import data_snapshot, load_model

    prepared = _load_prepared(dataset)
    model = load_model(model_dir)
    if model.kind not in ("lm", "lm-ensemble"):
        _fail(f"only the generative model (or an ensemble) exports to a bundle; {model_dir} holds a {model.kind} model")
    root = bundles or get_settings().bundles_dir
    path = export_bundle(
        model,
        build_sequences(prepared.events, model.vocab),
        root,
        prepared.catalogue,
        {"data_snapshot": data_snapshot(dataset), "config": _model_card(model_dir)},
        promote=promote,
        adcopy=AdCopyPlan(copy_model, adcopy_top_k),
    )
    console.print(f"bundle written to [bold]{path}[/]" + (" and promoted" if promote else ""))


@app.command()
def recommend(
    bundle: Path = typer.Option(None, help="bundle directory or bundles root (default: <work_dir>/bundles)"),
    user: str = typer.Option(None, help="a known user ID"),
    history: str = typer.Option(None, help="or comma-separated item IDs of an anonymous history"),
    k: int = typer.Option(10, "--k", "-k", help="how many items (1..1000)"),
    exclude_seen: bool = typer.Option(True, help="leave out items already in the history"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Recommend from a bundle alone (onnxruntime + FAISS; torch is never imported)."""
    if (user is None) == (history is None):
        _fail("give exactly one of --user or --history")
    engine = _open_bundle(bundle or get_settings().bundles_dir)
    try:
        if user is not None:
            result = engine.recommend_for_user(user, k, exclude_seen)
        else:
            result = engine.recommend_for_history([h for h in history.split(",") if h], k, exclude_seen)
    except ValueError as exc:
        _fail(str(exc), code=2)
    print_recommendations(console, engine, result, as_json)


# -- bundles -----------------------------------------------------------------------------------------------
@bundle_app.command("verify")
def bundle_verify(path: Path = typer.Argument(..., help="bundle directory or bundles root")) -> None:
    """Check every file of a bundle against the manifest's sha256."""
    from recsys import bundle as bundles

    try:
        manifest = bundles.verify(bundles.resolve(path))
    except bundles.BundleError as exc:
        _fail(str(exc))
    console.print(f"bundle {manifest['version']} verified: {len(manifest['files'])} files match the manifest")


@bundle_app.command("promote")
def bundle_promote(
    version: str = typer.Argument(..., help="bundle version (directory name)"),
    bundles: Path = typer.Option(None, help="bundles root (default: <work_dir>/bundles)"),
) -> None:
    """Verify a bundle and point CURRENT at it atomically."""
    from recsys import bundle as bundles_mod

    try:
        bundles_mod.promote(bundles or get_settings().bundles_dir, version)
    except bundles_mod.BundleError as exc:
        _fail(str(exc))
    console.print(f"CURRENT -> {version}")


@bundle_app.command("list")
def bundle_list(bundles: Path = typer.Option(None, help="bundles root (default: <work_dir>/bundles)")) -> None:
    """The sealed bundles, oldest first, with the current one and the one `recsys rollback` would restore."""
    from recsys.releases import describe

    for row in describe(bundles or get_settings().bundles_dir):
        flag = "CURRENT " if row["current"] else "previous" if row["previous"] else "        "
        ndcg = f"NDCG@10 {row['NDCG@10']:.4f}" if isinstance(row["NDCG@10"], float) else ""
        console.print(f"{flag} {row['version']}  {row['created_at'] or ''}  {ndcg}")


@app.command()
def rollback(
    bundles: Path = typer.Option(None, help="bundles root (default: <work_dir>/bundles)"),
    to: str = typer.Option(None, help="a specific version (default: the bundle that served before this one)"),
) -> None:
    """Put the previous bundle back: verified, then CURRENT is replaced atomically (the service follows)."""
    from recsys.bundle import BundleError
    from recsys.releases import rollback as do_rollback

    try:
        old, new = do_rollback(bundles or get_settings().bundles_dir, to)
    except BundleError as exc:
        _fail(str(exc))
    console.print(f"rolled back: CURRENT {old} -> {new}")


# -- the nightly job and reports -----------------------------------------------------------------------------
@app.command()
def nightly(
    work_dir: Path = typer.Option(None, help="the job's folder: runs, event lake, checkpoints (<work_dir>/nightly)"),
    bundles: Path = typer.Option(None, help="bundles root the service serves (default: <work_dir>/bundles)"),
    inbox: Path = typer.Option(None, help="folder of new event files, csv/parquet (default: <work_dir>/inbox)"),
    journal: Path = typer.Option(None, help="the service's event journal (default: its configured path)"),
    catalogue: Path = typer.Option(None, help="current catalogue: csv, parquet or MovieLens movies.dat"),
    preset: str = typer.Option("synthetic", help="training preset: architecture and from-scratch training"),
    tolerance: float = typer.Option(0.02, help="relative NDCG@10 the candidate may lose against production"),
    retention: int = typer.Option(5, min=0, help="old bundles kept besides the current and the previous one"),
    max_minutes: float = typer.Option(None, help="time budget of the warm-started fine-tune"),
    scratch_max_minutes: float = typer.Option(None, help="time budget when training from scratch"),
    warm_epochs: int = typer.Option(12, min=1, help="epochs of the warm-started fine-tune (early stopping within)"),
    warm_shrink: float = typer.Option(
        0.5, min=0.01, max=1.0, help="shrink-and-perturb factor of the production weights before the fine-tune; 1: none"
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
    _tune_malloc()
    from training.nightly import EXIT_LOCKED, NightlyConfig, NightlyLocked, StepFailed, run_nightly

    settings = get_settings()
    cfg = NightlyConfig(
        work_dir=work_dir or settings.work_dir / "nightly",
        bundles_root=bundles or settings.bundles_dir,
        inbox=inbox or settings.work_dir / "inbox",
        journal=journal or settings.journal_file,
        catalogue=catalogue,
        preset=preset,
        tolerance=tolerance,
        retention=retention,
        warm_max_minutes=max_minutes,
        scratch_max_minutes=scratch_max_minutes,
        warm_epochs=warm_epochs,
        warm_shrink=warm_shrink,
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
        _fail(str(exc), code=EXIT_LOCKED)
    except StepFailed as exc:
        _fail(f"{exc} (artefacts kept in {cfg.work_dir / 'runs'}; production unchanged)")
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
) -> None:
    """Behaviour predictions over all users: predictions.parquet and a self-contained report.html."""
    from training.report import ReportConfig, build_report

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
    )
    try:
        result = build_report(cfg, console)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    except Exception as exc:
        from recsys.bundle import BundleError

        if isinstance(exc, BundleError):
            _fail(str(exc))
        raise
    if screenshot:
        from training.browser import render

        rendered = render(result["html"], cfg.out / "report.png")
        console.print(f"rendered in Chromium: {len(rendered.charts)} charts, {len(rendered.errors)} console errors")
    console.print(f"wrote [bold]{result['predictions']}[/] and [bold]{result['html']}[/]")


# -- demo and benchmarks -----------------------------------------------------------------------------------
@app.command()
def demo(
    work_dir: Path = typer.Option(None, help="where everything is written (default: RECSYS_WORK_DIR or ./var)"),
    preset: str = typer.Option("default", help="synthetic data preset (data/synthetic/<name>.json)"),
    seed: int = typer.Option(0),
) -> None:
    """The main job end to end on the embedded synthetic data: data -> train -> evaluate -> bundle -> recommend."""
    _tune_malloc()
    from training.demo import run_demo

    run_demo(work_dir or get_settings().work_dir, preset, seed, console)


@benchmark_app.command("train-throughput")
def benchmark_train_throughput(
    steps: int = typer.Option(20, help="timed training steps per configuration"),
    out: Path = typer.Option(None, help="JSON summary (default: benchmarks/results/train-throughput.json)"),
) -> None:
    """Real (unpadded) training tokens/s: hidden 64, 2 layers, length 200, batch 128, and each preset."""
    _tune_malloc()
    from training.benchmark import run_throughput_benchmark

    run_throughput_benchmark(steps, console, " ".join(["recsys", *sys.argv[1:]]), out)


@benchmark_app.command("slates")
def benchmark_slates(
    dataset: str = typer.Option("ml-1m-half", help="beauty | ml-1m-half | scientific | synthetic"),
    n: int = typer.Option(5, help="slate length = how many future events are held out"),
    beam_width: int = typer.Option(4, help="beam width of the generated slate (1 = greedy is always reported)"),
    preset: str = typer.Option(None, help="training preset (default: the dataset's)"),
    max_minutes: float = typer.Option(None, help="training time budget (default: the preset's)"),
    max_users: int = typer.Option(None, help="evaluate on the first N users only"),
    data_root: Path = typer.Option(None, help="folder of the real datasets (default: ../shared/data)"),
    out: Path = typer.Option(None, help="JSON summary (default: benchmarks/results/slates-<dataset>.json)"),
) -> None:
    """Generated next-N slates (beam search, no repeats) vs the top-N of one ranking step."""
    _tune_malloc()
    from training.benchmark import run_slates_benchmark

    try:
        run_slates_benchmark(
            dataset,
            n=n,
            beam_width=beam_width,
            preset=preset,
            data_root=data_root or get_settings().data_root,
            max_minutes=max_minutes,
            max_users=max_users,
            console=console,
            command=" ".join(["recsys", *sys.argv[1:]]),
            out=out,
        )
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))


@benchmark_app.command("cold-start")
def benchmark_cold_start(
    dataset: str = typer.Option("scientific", help="a dataset with item text (scientific)"),
    cold_share: float = typer.Option(0.1, help="share of the catalogue held out of training"),
    seed: int = typer.Option(0),
    max_minutes: float = typer.Option(None, help="training time budget (default: the preset's)"),
    data_root: Path = typer.Option(None, help="folder of the real datasets (default: ../shared/data)"),
    out: Path = typer.Option(None, help="JSON summary (default: benchmarks/results/cold-start-<dataset>.json)"),
) -> None:
    """Items never seen in training, recommended from their text: HR/NDCG@10 vs popularity and random."""
    _tune_malloc()
    from training.cold_start import run_cold_start_benchmark

    try:
        run_cold_start_benchmark(
            dataset,
            cold_share=cold_share,
            seed=seed,
            data_root=data_root or get_settings().data_root,
            max_minutes=max_minutes,
            console=console,
            command=" ".join(["recsys", *sys.argv[1:]]),
            out=out,
        )
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        _fail(str(exc))


@benchmark_app.command("adcopy")
def benchmark_adcopy(
    eval_share: float = typer.Option(0.08, help="share of the items with text held out of copy fine-tuning"),
    max_minutes: float = typer.Option(10.0, help="copy-model training budget"),
    bundle_users: int = typer.Option(600, help="users whose top-3 copy the benchmark bundle precomputes"),
    requests: int = typer.Option(200, help="HTTP requests per latency phase (precomputed, live)"),
    seed: int = typer.Option(0),
    reuse_model: bool = typer.Option(False, help="evaluate the copy model a previous run trained (no training)"),
    latency_only: bool = typer.Option(False, help="only re-measure HTTP latency against the last run's bundle"),
    data_root: Path = typer.Option(None, help="folder of the real datasets (default: ../shared/data)"),
    out: Path = typer.Option(None, help="JSON summary (default: benchmarks/results/adcopy.json)"),
) -> None:
    """Ad copy on held-out Scientific items: ROUGE-L/BLEU vs template and retrieval, safety, latency."""
    _tune_malloc()
    from recsys.bundle import BundleError
    from training.adcopy_benchmark import rerun_latency, run_adcopy_benchmark

    command = " ".join(["recsys", *sys.argv[1:]])
    if latency_only:
        try:
            rerun_latency(
                eval_share=eval_share, requests=requests, seed=seed, console=console, command=command, out=out
            )
        except (FileNotFoundError, BundleError) as exc:
            _fail(str(exc))
        return
    try:
        run_adcopy_benchmark(
            data_root=data_root or get_settings().data_root,
            eval_share=eval_share,
            max_minutes=max_minutes,
            bundle_users=bundle_users,
            requests=requests,
            console=console,
            command=command,
            out=out,
            seed=seed,
            reuse_model=reuse_model,
        )
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        _fail(str(exc))


@benchmark_app.command("nightly-replay")
def benchmark_nightly_replay(
    dataset: str = typer.Option("ml-1m-half", help="ml-1m-half | synthetic (events with real timestamps)"),
    nights: int = typer.Option(7, min=1, help="nightly increments after the initial load"),
    base_share: float = typer.Option(0.7, help="share of the events (by time) loaded before the first night"),
    scratch_minutes: float = typer.Option(5.0, help="training budget from scratch (initial model, comparison)"),
    warm_minutes: float = typer.Option(1.5, help="training budget of each night's warm-started fine-tune"),
    warm_epochs: int = typer.Option(12, help="epochs of each night's fine-tune (early stopping within)"),
    warm_shrink: float = typer.Option(0.5, min=0.01, max=1.0, help="shrink-and-perturb factor (1: plain warm start)"),
    kill_drill: bool = typer.Option(True, help="also run the SIGKILL drill (synthetic data, subprocesses)"),
    reuse_scratch: bool = typer.Option(
        False, help="reuse the previous replay's from-scratch model when its data and settings match exactly"
    ),
    kill_drill_only: bool = typer.Option(False, help="only rerun the SIGKILL drill into an existing summary"),
    data_root: Path = typer.Option(None, help="folder of the real datasets (default: ../shared/data)"),
    out: Path = typer.Option(None, help="JSON summary (default: benchmarks/results/nightly-replay.json)"),
) -> None:
    """Replay a dataset as nightly increments: per-night metrics, gate decisions, warm vs scratch, drills."""
    _tune_malloc()
    from training.replay import rerun_kill_drill, run_replay

    command = " ".join(["recsys", *sys.argv[1:]])
    try:
        if kill_drill_only:
            rerun_kill_drill(dataset, console=console, command=command, out=out)
            return
        run_replay(
            dataset,
            nights=nights,
            base_share=base_share,
            scratch_minutes=scratch_minutes,
            warm_minutes=warm_minutes,
            warm_epochs=warm_epochs,
            warm_shrink=warm_shrink,
            kill_drill=kill_drill,
            reuse_scratch=reuse_scratch,
            data_root=data_root or get_settings().data_root,
            console=console,
            command=" ".join(["recsys", *sys.argv[1:]]),
            out=out,
        )
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))


@benchmark_app.command("ddp")
def benchmark_ddp(
    dataset: str = typer.Option("synthetic", help="synthetic | ml-1m-half | beauty | scientific"),
    epochs: int = typer.Option(3, min=1, help="epochs of each run (fixed: no early stopping)"),
    nproc: int = typer.Option(2, min=2, help="processes of the data-parallel run"),
    threads: int = typer.Option(0, min=0, help="CPU threads per process (0: the cores shared out)"),
    data_root: Path = typer.Option(None, help="folder of the real datasets (default: ../shared/data)"),
    out: Path = typer.Option(None, help="JSON summary (default: benchmarks/results/ddp.json)"),
) -> None:
    """The same training in 1 process and under torchrun with N processes (DDP, gloo): quality and time."""
    _tune_malloc()
    from training.ddp_benchmark import run_ddp_benchmark

    try:
        run_ddp_benchmark(
            dataset,
            epochs=epochs,
            nproc=nproc,
            data_root=data_root or get_settings().data_root,
            console=console,
            command=" ".join(["recsys", *sys.argv[1:]]),
            out=out,
            threads=threads,
        )
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        _fail(str(exc))


@benchmark_app.command("quality")
def benchmark_quality(
    dataset: str = typer.Option("synthetic", help="beauty | ml-1m-half | scientific | synthetic | a name for --path"),
    path: Path = typer.Option(None, help="any other dataset: file or folder"),
    fmt: str = typer.Option(None, "--format", help=f"format of --path: {FORMATS_HELP}"),
    preset: str = typer.Option(None, help="training preset (default: the dataset's)"),
    models: str = typer.Option("popularity,als,lm", help="comma-separated model kinds"),
    seeds: str = typer.Option("0", help="comma-separated seeds for the LM (mean and spread are reported)"),
    data_root: Path = typer.Option(None, help="folder of the real datasets (default: ../shared/data)"),
    out: Path = typer.Option(None, help="JSON summary (default: benchmarks/results/quality-<dataset>.json)"),
    epochs: int = typer.Option(None, help="override the preset's epochs (quick checks)"),
) -> None:
    """Train and evaluate popularity, ALS and the LM under the protocol; print a table and write JSON."""
    _tune_malloc()
    from training.benchmark import run_quality_benchmark

    try:
        run_quality_benchmark(
            dataset,
            path=path,
            fmt=fmt,
            preset=preset,
            models=models.split(","),
            seeds=[int(s) for s in seeds.split(",")],
            data_root=data_root or get_settings().data_root,
            out=out,
            epochs=epochs,
            console=console,
            command=" ".join(["recsys", *sys.argv[1:]]),
        )
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))


# -- the online service ----------------------------------------------------------------------------------
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
    from serving.server import run

    overrides = {"host": host, "port": port, "workers": workers, "bundles_root": bundles, "journal_path": journal}
    try:
        settings = get_settings().model_copy(update={k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:
        _fail(str(exc))
    base = f"http://{settings.host}:{settings.port}"
    console.print(f"serving {settings.bundles_dir} on {base} ({settings.workers} worker(s)); API docs: {base}/docs")
    console.print(f"try:  curl -s '{base}/v1/users/U-00001/recommendations?k=5'")
    console.print(
        f"      curl -s -XPOST {base}/v1/recommendations -H 'content-type: application/json' "
        """-d '{"history": ["SKU-00001", "SKU-00002"], "k": 5}'"""
    )
    run(settings)


@benchmark_app.command("serving")
def benchmark_serving(
    bundle: list[str] = typer.Option(None, help="NAME=PATH of a bundle (directory or root); repeat for each size"),
    checkpoint: list[str] = typer.Option(
        None, help="NAME=MODEL_DIR: the LM checkpoint of bundle NAME, for the baseline"
    ),
    duration: float = typer.Option(10.0, help="seconds of each measured phase (in-process, c=1, c=N)"),
    warmup: float = typer.Option(2.0, help="seconds of unmeasured load before each server's phases"),
    concurrency: int = typer.Option(16, min=1, max=256, help="clients of the throughput phase"),
    workers: int = typer.Option(1, min=1, help="uvicorn workers of the service and of the baseline"),
    out: Path = typer.Option(None, help="JSON summary (default: benchmarks/results/serving.json)"),
) -> None:
    """Latency and throughput of the real service vs a torch-in-FastAPI baseline, loopback only, bounded in time."""
    from serving.benchmark import RESULTS, run_serving_benchmark

    def pairs(values: list[str] | None, what: str) -> dict[str, Path]:
        parsed = {}
        for value in values or []:
            name, sep, path = value.partition("=")
            if not sep or not name or not path:
                _fail(f"--{what} takes NAME=PATH, got {value!r}")
            parsed[name] = Path(path)
        return parsed

    bundles = pairs(bundle, "bundle") or {"current": get_settings().bundles_dir}
    try:
        run_serving_benchmark(
            bundles,
            pairs(checkpoint, "checkpoint"),
            duration_s=duration,
            warmup_s=warmup,
            concurrency=concurrency,
            workers=workers,
            out=out or RESULTS,
            command=" ".join(["recsys", *sys.argv[1:]]),
            log=console.print,
        )
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        _fail(str(exc))
    except Exception as exc:
        from recsys.bundle import BundleError

        if isinstance(exc, BundleError):
            _fail(str(exc))
        raise


# -- helpers -----------------------------------------------------------------------------------------------
def _load_prepared(dataset: Path):
    from recsys.data.prepared import load_prepared

    try:
        return load_prepared(dataset)
    except FileNotFoundError as exc:
        _fail(f"{exc} (create it with `recsys data import`)")


def _open_bundle(path: Path):
    from recsys.bundle import BundleError
    from serving.engine import BundleRecommender

    try:
        return BundleRecommender(path)
    except BundleError as exc:
        _fail(str(exc))


def _model_card(model_dir: Path) -> dict:
    card = json.loads((model_dir / "model.json").read_text())
    return {key: card[key] for key in ("config", "train_config", "stats") if key in card}


if __name__ == "__main__":
    app()
