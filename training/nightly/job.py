"""`recsys nightly`: the unattended batch job — ingest, prepare, train, evaluate, gate, export, verify, promote.

A scheduler (cron, a systemd timer, Airflow) runs it every night. What makes that safe:

- **One run at a time.** An exclusive `fcntl` lock on `<nightly>/nightly.lock`. The kernel drops it when
  the holder dies, however it dies, so a crashed run never blocks the next one; the file also says who
  holds it (pid, start time) for the "already running" message.
- **Resumable, idempotent steps.** A run lives in `runs/<run_id>/`. Each step writes its outputs atomically
  (temporary name, then rename) and then a done-marker `steps/<step>.json` holding its result and timing. A
  rerun after a crash (SIGKILL included) resumes the unfinished run: finished steps are skipped, the step
  that was interrupted is redone from its inputs. The bundle's version is fixed when the run is created, so a
  redone export rewrites the same bundle instead of adding a second one, and a half-written bundle is only
  ever a hidden staging directory.
- **Exactly-once ingest.** New event files and journal rows go into the event lake as one atomically
  committed partition per run (recsys/data/lake.py); the partitions themselves are the watermark.
- **A gate.** The candidate is promoted only if, on the same (latest) holdout, its NDCG@10 is not below
  production's by more than `tolerance` (relative) and is above popularity's. Otherwise production stays.
- **A failed run** leaves production untouched, keeps its artefacts, writes its summary and exits non-zero
  naming the step and the reason. Old bundles are pruned to `retention`, never the current or previous one.

How the candidate trains (the warm start's epochs, shrink-and-perturb, time budgets) is the preset's nightly
recipe (training.presets.NightlyRecipe), which `recsys nightly` options may override for one run.

Every invocation writes `runs/<run_id>/summary.json` and `summary.txt` (one readable line per step with its
wall time) and prints those lines. Exit codes: 0 promoted, refused by the gate, or nothing new; 1 failed;
75 another run holds the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from recsys import bundle
from recsys.bundle import releases, sha256_of
from recsys.durable import atomic_write_json, atomic_write_text

if TYPE_CHECKING:  # the presets import torch; the job imports it only in the steps that train
    from recsys.index import IndexParams
    from training.presets import NightlyRecipe

STEPS = ("ingest", "prepare", "train", "evaluate", "gate", "export", "verify", "promote", "prune")
FINAL_STATUSES = ("promoted", "refused", "skipped", "abandoned")
EXIT_OK, EXIT_FAILED, EXIT_LOCKED = 0, 1, 75
CRASH_ENV = "RECSYS_NIGHTLY_CRASH_AT"  # fault injection for the kill tests: "<step>:<point>"


@dataclass
class NightlyConfig:
    """Everything one nightly run needs; the CLI fills it from options and settings."""

    work_dir: Path  # the job's own folder: runs/, lake/, checkpoints/, text_cache/, nightly.lock
    bundles_root: Path
    inbox: Path | None = None  # folder of new event files (csv / parquet, contract columns)
    journal: Path | str | None = None  # the service's events: its SQLite journal, or the shared store's redis:// URL
    catalogue: Path | None = None  # the current catalogue (csv / parquet / MovieLens movies.dat)
    preset: str = "synthetic"  # architecture, training and the nightly recipe (training/presets/)
    # fields of the preset's nightly recipe (training.presets.NightlyRecipe) to override; None: the preset's
    recipe: dict[str, Any] = field(default_factory=dict)
    tolerance: float = 0.02  # relative NDCG@10 the candidate may lose against production
    # Evaluate, gate and verify on a fixed, seeded sample of this many users: each pass ranks the whole catalogue
    # per user, so all users at 100k items cost ~460 s a pass (measured), and at 1M hours. 20,000 users put
    # NDCG@10's standard error near 0.002, well inside the gate's tolerance. All users when there are fewer.
    eval_users: int = 20_000
    retention: int = 5  # sealed bundles kept (besides the current and the previous one)
    keep_runs: int = 30  # run folders kept
    max_reject_rate: float = 0.05
    nproc: int = 1  # training processes (torchrun, DDP); 1 = in this process
    launcher: str | None = None  # training launcher command for nproc > 1 (default: torchrun --standalone)
    from_scratch: bool = False  # ignore the production checkpoint
    text_init: bool = True  # new items' rows from their catalogue text
    catalogue_items: bool = True  # catalogue items with text but no events become recommendable
    copy_model: Path | None = None  # ad-copy model folder (training/adcopy/finetune.py); None: template copy only
    adcopy_top_k: int = 3  # the bundle carries copy for each user's top-k recommendations
    # the bundle's FAISS index; None: IndexParams() (exact below 100k items, approximate from there)
    index: IndexParams | None = None
    force: bool = False  # train even when nothing is new
    run_id: str | None = None
    resume_within_hours: float = 24.0  # an unfinished run older than this is abandoned, not resumed
    seed: int = 0
    drill_shuffle: bool = False  # gate drill: train the candidate on shuffled sequences (must be refused)
    overrides: dict[str, Any] = field(default_factory=dict)  # extra train-config fields (tests, benchmarks)

    @property
    def lake(self) -> Path:
        return self.work_dir / "lake"

    @property
    def checkpoints(self) -> Path:
        return self.work_dir / "checkpoints"


class NightlyLocked(RuntimeError):
    pass


class StepFailed(RuntimeError):
    def __init__(self, step: str, reason: str):
        super().__init__(f"nightly run failed at step '{step}': {reason}")
        self.step, self.reason = step, reason


# -- small helpers ------------------------------------------------------------------------------------------
def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def crash_point(name: str) -> None:
    """SIGKILL this process here when the kill tests ask for it (no cleanup, like a power cut)."""
    if os.environ.get(CRASH_ENV) == name:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """flock: held while the process lives, released by the kernel when it dies (no stale lock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            raise NightlyLocked(f"another nightly run holds {path} ({holder}); not starting a second one") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {datetime.now(UTC).isoformat(timespec='seconds')}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# -- runs ---------------------------------------------------------------------------------------------------
@dataclass
class Run:
    dir: Path
    run_id: str
    version: str  # the bundle version this run exports (fixed at creation: reruns rewrite the same bundle)
    created_at: str
    production: str | None  # CURRENT when the run was created: warm-start base and gate opponent

    def marker(self, step: str) -> Path:
        return self.dir / "steps" / f"{step}.json"

    def done(self, step: str) -> dict[str, Any] | None:
        path = self.marker(step)
        return read_json(path) if path.exists() else None

    @property
    def prepared(self) -> Path:
        return self.dir / "prepared"

    @property
    def candidate(self) -> Path:
        return self.dir / "candidate"


def _run_status(path: Path) -> str | None:
    summary = path / "summary.json"
    if not summary.exists():
        return None
    try:
        return read_json(summary).get("status")
    except json.JSONDecodeError:
        return None


def open_run(cfg: NightlyConfig, log: Callable[[str], None]) -> tuple[Run, bool]:
    """The run to work on: `cfg.run_id`, else the latest unfinished recent one (resumed), else a new one."""
    runs = cfg.work_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    chosen: Path | None = None
    if cfg.run_id:
        chosen = runs / cfg.run_id
    else:
        existing = sorted((p for p in runs.iterdir() if (p / "run.json").exists()), key=lambda p: p.name)
        if existing and _run_status(existing[-1]) not in FINAL_STATUSES:
            latest = existing[-1]
            created = datetime.fromisoformat(read_json(latest / "run.json")["created_at"])
            if datetime.now(UTC) - created <= timedelta(hours=cfg.resume_within_hours):
                chosen = latest
            else:
                summary = latest / "summary.json"
                previous = read_json(summary) if summary.exists() else {"run_id": latest.name}
                atomic_write_json(summary, {**previous, "status": "abandoned"})
                log(f"run {latest.name} was left unfinished on {created:%Y-%m-%d %H:%M}; abandoned (artefacts kept)")
    if chosen is not None and (chosen / "run.json").exists():
        meta = read_json(chosen / "run.json")
        return Run(chosen, meta["run_id"], meta["version"], meta["created_at"], meta["production"]), True
    version = bundle.new_version()
    run_id = cfg.run_id or version
    meta = {
        "run_id": run_id,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(),
        "production": bundle.current_version(cfg.bundles_root),
        "config": asdict(cfg),
    }
    path = runs / run_id
    atomic_write_json(path / "run.json", meta)
    return Run(path, run_id, version, meta["created_at"], meta["production"]), False


# -- the steps ------------------------------------------------------------------------------------------------
class Context:
    """What the steps share: config, the run, and lazily loaded inputs (each step can start from disk)."""

    def __init__(self, cfg: NightlyConfig, run: Run, log: Callable[[str], None]):
        self.cfg, self.run, self.log = cfg, run, log
        self._catalogue: pl.DataFrame | None = None

    def raw_catalogue(self) -> pl.DataFrame | None:
        if self.cfg.catalogue is None:
            return None
        if self._catalogue is None:
            from recsys.data.importers import read_any_catalogue

            self._catalogue = read_any_catalogue(self.cfg.catalogue)
        return self._catalogue

    def catalogue_sha(self) -> str | None:
        return sha256_of(Path(self.cfg.catalogue)) if self.cfg.catalogue else None

    def production_manifest(self) -> dict[str, Any] | None:
        if not self.run.production:
            return None
        path = self.cfg.bundles_root / self.run.production / bundle.MANIFEST
        return read_json(path) if path.exists() else None

    def base_checkpoint(self) -> Path | None:
        """The production model's checkpoint (warm-start base); None: none known, train from scratch."""
        if self.cfg.from_scratch or not self.run.production:
            return None
        path = self.cfg.checkpoints / self.run.production
        if (path / "item_vocab.json").exists():
            return path
        manifest = self.production_manifest() or {}
        recorded = (manifest.get("nightly") or {}).get("checkpoint")
        return Path(recorded) if recorded and (Path(recorded) / "item_vocab.json").exists() else None


def step_ingest(ctx: Context) -> dict[str, Any]:
    from recsys.data import lake

    meta = lake.ingest(
        ctx.cfg.lake,
        ctx.run.run_id,
        ctx.cfg.inbox,
        ctx.cfg.journal,
        ctx.raw_catalogue(),
        max_reject_rate=ctx.cfg.max_reject_rate,
        rejects_path=ctx.run.dir / "ingest_rejects.parquet",
    )
    crash_point("ingest:committed")
    journal = meta["journal"]
    line = (
        f"+{meta['events']:,} events from {len(meta['files'])} file(s) and journal seq "
        f"{journal['after']:,}→{journal['upto']:,}; {meta['rejected']:,} rejected"
        + (" (partition committed by the interrupted attempt)" if meta.get("reused") else "")
    )
    result = {**meta, "line": line, "catalogue_sha256": ctx.catalogue_sha()}
    production = ctx.production_manifest()
    same_catalogue = (
        production is not None
        and (production.get("data_snapshot") or {}).get("catalogue_sha256") == ctx.catalogue_sha()
    )
    if meta["events"] == 0 and production is not None and same_catalogue and not ctx.cfg.force:
        result.update(stop="skipped", line=line + f"; nothing new: production stays on {ctx.run.production}")
    return result


def step_prepare(ctx: Context) -> dict[str, Any]:
    from recsys.data import lake
    from recsys.data.importers import RawData
    from recsys.data.prepared import load_prepared, write_prepared
    from recsys.data.validate import validate, validate_catalogue

    if not lake.partitions(ctx.cfg.lake):
        raise ValueError(
            f"the event lake {ctx.cfg.lake} is empty: nothing to train on (put event files in the inbox "
            "or point --journal at the service's journal)"
        )
    events = lake.lake_events(ctx.cfg.lake).drop("ingest")
    # History was checked against the catalogue of the day it arrived; an item retired since keeps its past
    # events (they still say something about the users), so no catalogue check here, only structure/duplicates.
    checked = validate(RawData(events, None), max_reject_rate=ctx.cfg.max_reject_rate)
    raw_catalogue = ctx.raw_catalogue()
    if raw_catalogue is not None:
        checked.catalogue, checked.catalogue_rejects, checked.summary["catalogue"] = validate_catalogue(raw_catalogue)
    tmp = ctx.run.dir / ".prepared.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    write_prepared(checked, tmp)
    shutil.rmtree(ctx.run.prepared, ignore_errors=True)
    tmp.rename(ctx.run.prepared)
    prepared = load_prepared(ctx.run.prepared)
    summary = prepared.summary
    retired = 0
    if prepared.catalogue is not None:
        retired = len(set(prepared.vocab.item_ids) - set(prepared.catalogue["item_id"].to_list()))
    line = (
        f"{summary['accepted']:,} events, {summary['users']:,} users, {summary['items']:,} items; "
        f"{summary['rejected']:,} rejected across ingests (duplicates: {summary['reasons']['duplicate']:,}); "
        f"{retired:,} item(s) no longer in the catalogue"
    )
    return {
        "events": summary["accepted"],
        "users": summary["users"],
        "items": summary["items"],
        "rejected": summary["rejected"],
        "retired_items": retired,
        "line": line,
    }


def _text_embeddings(ctx: Context) -> Path | None:
    """Catalogue text embeddings for this run (cached across runs by item text); None without text."""
    import hashlib

    from recsys.data.prepared import load_prepared
    from training.coldstart.text_embeddings import item_texts
    from training.nightly.candidate import load_text, save_text

    if not ctx.cfg.text_init:
        return None
    catalogue = load_prepared(ctx.run.prepared).catalogue
    if catalogue is None:
        return None
    ids = catalogue["item_id"].to_list()
    wanted = {i: t for i, t in zip(ids, item_texts(catalogue, ids), strict=True) if t.strip()}
    if not wanted:
        return None
    cache = ctx.cfg.work_dir / "text_cache" / "embeddings.safetensors"
    known, digests = load_text(cache, with_digests=True)
    wanted_digest = {i: hashlib.sha256(t.encode()).hexdigest() for i, t in wanted.items()}
    missing = [i for i in wanted if digests.get(i) != wanted_digest[i]]
    if missing:
        from training.coldstart.text_embeddings import TextEncoder

        started = time.perf_counter()
        encoded = TextEncoder().encode([wanted[i] for i in missing])
        known.update(zip(missing, encoded, strict=True))
        digests.update({i: wanted_digest[i] for i in missing})
        save_text(cache, known, digests)
        ctx.log(f"  encoded the text of {len(missing):,} catalogue item(s) in {time.perf_counter() - started:.1f} s")
    out = ctx.run.dir / "text_embeddings.safetensors"
    save_text(out, {i: known[i] for i in wanted})
    return out


def nightly_recipe(cfg: NightlyConfig) -> NightlyRecipe:
    """The preset's nightly recipe with the run's overrides (`cfg.recipe`; None values keep the preset's)."""
    from training.presets import NightlyRecipe, load_preset

    given = {k: v for k, v in cfg.recipe.items() if v is not None}
    known = {f.name for f in fields(NightlyRecipe)}
    if unknown := sorted(set(given) - known):
        raise ValueError(f"no nightly recipe field(s) {', '.join(unknown)}; the fields: {', '.join(sorted(known))}")
    return replace(load_preset(cfg.preset).nightly, **given)


def _train_overrides(ctx: Context, recipe: NightlyRecipe, warm: bool) -> dict[str, Any]:
    from training.presets import load_preset

    cfg = ctx.cfg
    preset = load_preset(cfg.preset)
    if preset.members:
        raise ValueError(
            f"preset {cfg.preset!r} is an ensemble: the nightly warm-starts one model, give it a single-model preset"
        )
    overrides: dict[str, Any] = {"seed": cfg.seed}
    if warm:
        overrides.update(
            epochs=recipe.warm_epochs,
            lr=preset.train.lr * recipe.warm_lr_scale,
            patience=recipe.warm_patience,
            eval_every=1,
            warmup_ratio=recipe.warm_warmup_ratio,
            max_minutes=recipe.warm_max_minutes or 0.0,
        )
    elif recipe.scratch_max_minutes is not None:
        overrides["max_minutes"] = recipe.scratch_max_minutes
    return {**overrides, **cfg.overrides}


def step_train(ctx: Context) -> dict[str, Any]:
    import torch

    from training.lm.distributed import default_threads
    from training.nightly.candidate import train_candidate

    # Earlier steps of this process may have opened a bundle, which leaves OpenMP (shared by FAISS and
    # torch) at one thread: text encoding and training get their normal thread count back.
    torch.set_num_threads(default_threads())
    base = ctx.base_checkpoint()
    recipe = nightly_recipe(ctx.cfg)
    spec = {
        "prepared": str(ctx.run.prepared),
        "out": str(ctx.run.candidate),
        "preset": ctx.cfg.preset,
        "overrides": _train_overrides(ctx, recipe, warm=base is not None),
        "base_model": str(base) if base else None,
        "shrink_perturb": recipe.warm_shrink,
        "text": str(text) if (text := _text_embeddings(ctx)) else None,
        "catalogue_items": ctx.cfg.catalogue_items,
        "shuffle_drill": ctx.cfg.drill_shuffle,
    }
    spec_path = ctx.run.dir / "train_spec.json"
    atomic_write_json(spec_path, spec)
    if ctx.cfg.nproc > 1 or ctx.cfg.launcher:
        _launch_training(ctx, spec_path)
    else:
        train_candidate(spec)
    crash_point("train:saved")
    stats = read_json(ctx.run.candidate / "train_stats.json")
    line = (
        f"{stats['mode']} start"
        + (f" from {ctx.run.production}" if base else "")
        + f", {stats['epochs']} epoch(s) (best {stats['best_epoch']}), {stats['train_wall_s']:.0f} s, "
        f"{stats['tokens_per_s']:,.0f} tok/s, {stats['processes']} process(es); valid NDCG@10 "
        f"{stats['best_valid_NDCG@10']:.4f}; {stats['new_item_rows_from_text']} new item row(s) from text, "
        f"{stats['catalogue_items_from_text']} catalogue-only item(s) added"
        + ("; GATE DRILL: trained on shuffled sequences" if stats.get("shuffle_drill") else "")
    )
    return {k: v for k, v in stats.items() if k != "history"} | {"recipe": asdict(recipe), "line": line}


def _launch_training(ctx: Context, spec_path: Path) -> None:
    """The train step as N processes (torchrun by default; any launcher command for a cluster)."""
    launcher = ctx.cfg.launcher or os.environ.get("RECSYS_TRAIN_LAUNCHER")
    if launcher:
        command = shlex.split(launcher)
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ctx.cfg.nproc}"]
    command += ["-m", "training.nightly.candidate", str(spec_path)]
    log_path = ctx.run.dir / "train.log"
    ctx.log(f"  training with: {' '.join(command)} (log: {log_path})")
    with log_path.open("ab") as out:
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"training processes exited with {code}; last lines of {log_path}:\n" + "\n".join(tail))


def _holdout_and_scorers(ctx: Context) -> tuple[Any, dict[str, Any], Any]:
    from recsys.bundle.reader import BundleRecommender
    from recsys.data.prepared import load_prepared
    from recsys.models.adapters import ExcludingScorer, RemappedScorer
    from recsys.models.popularity import PopularityRecommender
    from training import pipeline
    from training.export import without_items
    from training.lm.model import GenerativeRecommender

    prepared = load_prepared(ctx.run.prepared)
    model = GenerativeRecommender.load(ctx.run.candidate)
    vocab = model.vocab
    data = pipeline.split(prepared, model.max_len)
    retired = retired_items(prepared, vocab.item_ids)
    served = without_items(model, retired)
    scorers: dict[str, Any] = {"candidate": RemappedScorer(served, served.vocab, vocab)}
    if ctx.run.production:
        engine = BundleRecommender(ctx.cfg.bundles_root / ctx.run.production)
        scorers["production"] = RemappedScorer(engine, engine.vocab, vocab)
    popularity = PopularityRecommender().fit(data.train, len(vocab))
    scorers["popularity"] = ExcludingScorer(popularity, [vocab.index_of(i) for i in retired])
    return data, scorers, model


def retired_items(prepared: Any, item_ids: list[str]) -> list[str]:
    """Items of the model that the current catalogue no longer lists (none without a catalogue)."""
    if prepared.catalogue is None:
        return []
    listed = set(prepared.catalogue["item_id"].to_list())
    return [i for i in item_ids if i not in listed]


def step_evaluate(ctx: Context) -> dict[str, Any]:
    from recsys.evaluate import evaluate

    data, scorers, _ = _holdout_and_scorers(ctx)
    test_users = data.test.subset(ctx.cfg.eval_users)  # the same users for every model, and in verify
    results: dict[str, Any] = {}
    for name, scorer in scorers.items():
        test = evaluate(scorer, test_users)
        results[name] = {"test": test["masked"], "test_unmasked": test["unmasked"]}
    results["candidate"]["valid"] = evaluate(scorers["candidate"], data.valid.subset(ctx.cfg.eval_users))["masked"]
    atomic_write_json(ctx.run.dir / "evaluation.json", results)
    parts = [f"{name} {r['test']['NDCG@10']:.4f}" for name, r in results.items()]
    sampled = f" of {len(data.test):,}" if len(test_users) < len(data.test) else ""
    line = f"test NDCG@10 (masked, {len(test_users):,}{sampled} users): " + ", ".join(parts)
    return {name: r["test"] for name, r in results.items()} | {"users": len(test_users), "line": line}


def step_gate(ctx: Context) -> dict[str, Any]:
    evaluation = ctx.run.done("evaluate")
    assert evaluation is not None
    candidate = evaluation["candidate"]["NDCG@10"]
    popularity = evaluation["popularity"]["NDCG@10"]
    production = evaluation.get("production", {}).get("NDCG@10")
    tolerance = ctx.cfg.tolerance
    floor = production * (1 - tolerance) if production is not None else None
    reasons = []
    if not candidate > popularity:
        reasons.append(f"candidate NDCG@10 {candidate:.4f} does not beat popularity {popularity:.4f}")
    if floor is not None and candidate < floor:
        reasons.append(
            f"candidate NDCG@10 {candidate:.4f} is below production {production:.4f} - {tolerance:.0%} = {floor:.4f}"
        )
    promote = not reasons
    against = f"production {production:.4f} (floor {floor:.4f})" if production is not None else "no production yet"
    line = (
        f"PROMOTE: candidate NDCG@10 {candidate:.4f} vs {against}, popularity {popularity:.4f}"
        if promote
        else "REFUSE: " + "; ".join(reasons) + f"; production stays on {ctx.run.production or 'nothing'}"
    )
    result = {
        "promote": promote,
        "reasons": reasons,
        "candidate": candidate,
        "production": production,
        "popularity": popularity,
        "tolerance": tolerance,
        "line": line,
    }
    if not promote:
        result["stop"] = "refused"
    atomic_write_json(ctx.run.dir / "gate.json", result)
    return result


def step_export(ctx: Context) -> dict[str, Any]:
    from recsys.data.prepared import load_prepared
    from training import pipeline
    from training.export import AdCopyPlan, export_bundle, without_items
    from training.lm.model import GenerativeRecommender

    root, version = ctx.cfg.bundles_root, ctx.run.version
    final = root / version
    if not (final / bundle.MANIFEST).exists():  # else: sealed by the interrupted attempt; verify checks it
        prepared = load_prepared(ctx.run.prepared)
        model = GenerativeRecommender.load(ctx.run.candidate)
        retired = retired_items(prepared, model.vocab.item_ids)
        served = without_items(model, retired)
        evaluation = read_json(ctx.run.dir / "evaluation.json")
        checkpoint = ctx.cfg.checkpoints / version
        snapshot = pipeline.data_snapshot(ctx.run.prepared) | {
            "catalogue_sha256": ctx.catalogue_sha(),
            "lake_partitions": len(_lake_partitions(ctx)),
        }
        taken = (ctx.run.done("ingest") or {}).get("journal") or {}
        fields = {
            "data_snapshot": snapshot,
            "metrics": evaluation["candidate"],
            "gate": {k: v for k, v in (ctx.run.done("gate") or {}).items() if k != "line"},
            "nightly": {
                "run_id": ctx.run.run_id,
                "checkpoint": str(checkpoint.resolve()),
                "production_before": ctx.run.production,
                "retired_items": len(retired),
            },
            "config": {"model": read_json(ctx.run.candidate / "model.json").get("config")},
        }
        if taken.get("location"):  # the service keeps events after this seq live on top of the bundle
            fields["events_watermark"] = {k: taken[k] for k in ("location", "store_id")} | {"seq": taken["upto"]}
        export_bundle(
            served,
            pipeline.build_sequences(prepared.events, served.vocab),
            root,
            prepared.catalogue,
            fields,
            promote=False,
            version=version,
            before_seal=lambda _staging: crash_point("export:staged"),
            adcopy=AdCopyPlan(ctx.cfg.copy_model, ctx.cfg.adcopy_top_k),
            index=ctx.cfg.index,
        )
    crash_point("export:sealed")
    checkpoint = ctx.cfg.checkpoints / version
    if not (checkpoint / "item_vocab.json").exists():  # the next night's warm-start base
        tmp = ctx.cfg.checkpoints / f".{version}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(ctx.run.candidate, tmp)
        tmp.rename(checkpoint)
    return {"version": version, "path": str(final), "line": f"bundle {version} sealed (not yet serving)"}


def _lake_partitions(ctx: Context) -> list[dict[str, Any]]:
    from recsys.data import lake

    return lake.partitions(ctx.cfg.lake)


def step_verify(ctx: Context) -> dict[str, Any]:
    from recsys.bundle.reader import BundleRecommender
    from recsys.data.prepared import load_prepared
    from recsys.data.vocab import ItemVocab
    from recsys.evaluate import evaluate
    from recsys.models.adapters import RemappedScorer
    from training import pipeline

    path = ctx.cfg.bundles_root / ctx.run.version
    manifest = bundle.verify(path)
    engine = BundleRecommender(path)
    engine.smoke_check()
    vocab = ItemVocab.load(ctx.run.candidate / "item_vocab.json")
    data = pipeline.split(load_prepared(ctx.run.prepared), engine.max_len)
    test_users = data.test.subset(ctx.cfg.eval_users)  # the users step_evaluate scored the model on
    remapped = RemappedScorer(engine, engine.vocab, vocab)  # the holdout's item indices are the candidate's
    served = evaluate(remapped, test_users)["masked"]["NDCG@10"]
    expected = (ctx.run.done("evaluate") or {})["candidate"]["NDCG@10"]
    # Tolerance 1e-3 for every kind of index: the evaluation ranks all items by user vector · item vector, the item
    # vectors read back exactly from a flat or an approximate index alike, so only ONNX-vs-torch float noise
    # differs. What an approximate index adds, items its search misses, is checked apart on these users: its
    # recall@10 against exact search must be at least 0.95 (the defaults aim at 0.98; below 0.95 more than 1 in 20
    # of the top-10 served would not be the model's, a misconfigured index rather than a trade-off).
    if abs(served - expected) > 1e-3:
        raise ValueError(
            f"the bundle (ONNX + FAISS) scores NDCG@10 {served:.4f} but the model scored {expected:.4f}: "
            "the export does not reproduce the model"
        )
    index_note = ""
    if engine.index.params.approximate:
        recall = engine.index.recall(engine.user_vectors(remapped.map_histories(test_users.inputs[:1000])), k=10)
        if recall < 0.95:
            raise ValueError(
                f"the bundle's {manifest['index']} index finds {recall:.3f} of the exact top-10 (needs >= 0.95): "
                "raise its ivf_nprobe / hnsw_ef_search"
            )
        index_note = f"; {engine.index.params.kind} recall@10 {recall:.3f}"
    line = f"{len(manifest['files'])} files match their sha256; smoke query ok; bundle NDCG@10 {served:.4f}{index_note}"
    return {"files": len(manifest["files"]), "bundle_NDCG@10": served, "line": line}


def step_promote(ctx: Context) -> dict[str, Any]:
    root, version = ctx.cfg.bundles_root, ctx.run.version
    current = bundle.current_version(root)
    if current != version:
        if current != ctx.run.production:
            raise RuntimeError(
                f"CURRENT changed while this run worked ({ctx.run.production} -> {current}): someone promoted or "
                "rolled back by hand; not overriding that (rerun the job to start from the new production)"
            )
        bundle.promote(root, version, action="promote", run_id=ctx.run.run_id)
    crash_point("promote:done")
    line = f"CURRENT {ctx.run.production or '(none)'} -> {version}; the service reloads it on its next poll"
    return {"previous": ctx.run.production, "current": version, "line": line}


def step_prune(ctx: Context) -> dict[str, Any]:
    removed = releases.prune(ctx.cfg.bundles_root, ctx.cfg.retention)
    existing = set(releases.sealed_versions(ctx.cfg.bundles_root))
    checkpoints = 0
    if ctx.cfg.checkpoints.is_dir():
        for path in ctx.cfg.checkpoints.iterdir():
            if not path.name.startswith(".") and path.name not in existing:
                shutil.rmtree(path)
                checkpoints += 1
    runs = sorted(p for p in (ctx.cfg.work_dir / "runs").iterdir() if p.is_dir())
    old_runs = [p for p in runs[: max(0, len(runs) - ctx.cfg.keep_runs)] if p != ctx.run.dir]
    for path in old_runs:
        shutil.rmtree(path)
    line = (
        f"{len(removed)} old bundle(s), {checkpoints} checkpoint(s), {len(old_runs)} run folder(s) removed "
        f"(keeping {ctx.cfg.retention} bundles + current + previous)"
    )
    return {"removed_bundles": removed, "removed_checkpoints": checkpoints, "removed_runs": len(old_runs), "line": line}


STEP_FUNCTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "ingest": step_ingest,
    "prepare": step_prepare,
    "train": step_train,
    "evaluate": step_evaluate,
    "gate": step_gate,
    "export": step_export,
    "verify": step_verify,
    "promote": step_promote,
    "prune": step_prune,
}


# -- the runner -----------------------------------------------------------------------------------------------
def _summary(run: Run, status: str, steps: list[dict[str, Any]], started: float, **extra: Any) -> dict[str, Any]:
    evaluation = run.done("evaluate") or {}
    gate = run.done("gate") or {}
    return {
        "run_id": run.run_id,
        "version": run.version,
        "status": status,
        "production_before": run.production,
        "promoted": status == "promoted",
        "created_at": run.created_at,
        "finished_at": datetime.now(UTC).isoformat(),
        "wall_s": round(time.perf_counter() - started, 1),
        "metrics": {
            "candidate": evaluation.get("candidate"),
            "production": evaluation.get("production"),
            "popularity": evaluation.get("popularity"),
        },
        "gate": {k: v for k, v in gate.items() if k != "line"} or None,
        "steps": steps,
        **extra,
    }


def _write_summary(run: Run, summary: dict[str, Any], lines: list[str]) -> None:
    atomic_write_json(run.dir / "summary.json", summary)
    atomic_write_text(run.dir / "summary.txt", "\n".join(lines) + "\n")


def run_nightly(cfg: NightlyConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """One invocation of the job (under the lock); returns the summary. Raises StepFailed / NightlyLocked."""
    with exclusive_lock(cfg.work_dir / "nightly.lock"):
        return _run_locked(cfg, log)


def _run_locked(cfg: NightlyConfig, log: Callable[[str], None]) -> dict[str, Any]:
    started = time.perf_counter()
    run, resumed = open_run(cfg, log)
    ctx = Context(cfg, run, log)
    head = f"nightly {run.run_id}"
    lines = [
        f"{head} | {'resumed' if resumed else 'started'} | bundle version {run.version}, "
        f"production {run.production or '(none)'}"
    ]
    log(lines[0])
    steps: list[dict[str, Any]] = []
    status = "running"
    for step in STEPS:
        done = run.done(step)
        if done is not None:
            steps.append({"step": step, "status": "done earlier", "wall_s": done["wall_s"], "line": done["line"]})
            lines.append(f"{head} | {step:<8} | done earlier ({done['wall_s']:.1f} s) | {done['line']}")
            log(lines[-1])
            if done.get("stop"):
                status = done["stop"]
                break
            continue
        crash_point(f"{step}:start")
        step_started = time.perf_counter()
        try:
            result = STEP_FUNCTIONS[step](ctx)
        except Exception as exc:  # noqa: BLE001 - any failure: record it, keep artefacts, production untouched
            wall = round(time.perf_counter() - step_started, 1)
            reason = f"{type(exc).__name__}: {exc}"
            steps.append({"step": step, "status": "failed", "wall_s": wall, "line": reason})
            lines.append(f"{head} | {step:<8} | FAILED after {wall:.1f} s | {reason}")
            log(lines[-1])
            summary = _summary(
                run, "failed", steps, started, failed_step=step, error=reason, traceback=traceback.format_exc()
            )
            _write_summary(run, summary, lines)
            raise StepFailed(step, reason) from exc
        wall = round(time.perf_counter() - step_started, 1)
        result = {**result, "step": step, "wall_s": wall, "finished_at": datetime.now(UTC).isoformat()}
        atomic_write_json(run.marker(step), result)
        crash_point(f"{step}:done")
        steps.append({"step": step, "status": "ok", "wall_s": wall, "line": result["line"]})
        lines.append(f"{head} | {step:<8} | {wall:6.1f} s | {result['line']}")
        log(lines[-1])
        _write_summary(run, _summary(run, "running", steps, started), lines)
        if result.get("stop"):
            status = result["stop"]
            break
    if status == "running":
        status = "promoted"
    summary = _summary(run, status, steps, started)
    lines.append(f"{head} | {status.upper()} | {summary['wall_s']:.1f} s this invocation")
    log(lines[-1])
    _write_summary(run, summary, lines)
    atomic_write_json(cfg.work_dir / "last_summary.json", summary)
    return summary


def history(work_dir: Path) -> list[dict[str, Any]]:
    """Summaries of every run kept, oldest first (the report's quality-over-nights chart)."""
    runs = Path(work_dir) / "runs"
    if not runs.is_dir():
        return []
    out = []
    for path in sorted(runs.iterdir()):
        if (path / "summary.json").exists():
            with contextlib.suppress(json.JSONDecodeError):
                out.append(read_json(path / "summary.json"))
    return out
