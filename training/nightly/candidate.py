"""Train one candidate model from a JSON spec: the nightly job's train step, in process or under torchrun.

    python -m training.nightly.candidate SPEC.json                                     # one process
    torchrun --standalone --nproc-per-node 2 -m training.nightly.candidate SPEC.json   # data-parallel (gloo on CPU)

The spec names the prepared dataset, the preset (+ overrides), the checkpoint to warm-start from, item
text embeddings, and where to save. Every process builds the same model from the same inputs; training
synchronises them (training/lm/train.py); process 0 saves, through a temporary directory and one rename, so a
crash never leaves half a checkpoint at `out`.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from recsys.data.prepared import load_prepared
from recsys.data.sequences import Sequences
from recsys.durable import atomic_write
from training import pipeline
from training.coldstart.text_embeddings import KnnProjection, add_items_from_text
from training.lm import distributed
from training.lm.model import GenerativeRecommender
from training.presets import load_preset


def save_text(path: str | Path, embeddings: dict[str, np.ndarray], digests: dict[str, str] | None = None) -> None:
    """One safetensors file: the rows, and in its metadata the item IDs (and text digests) in row order.

    One file, replaced in one rename, so rows and IDs can never disagree after a crash.
    """
    ids = list(embeddings)
    rows = np.stack([embeddings[i] for i in ids]).astype(np.float32) if ids else np.zeros((0, 1), np.float32)
    metadata = {"ids": json.dumps(ids), "sha": json.dumps([(digests or {}).get(i, "") for i in ids])}
    atomic_write(path, lambda tmp: save_file({"embeddings": rows}, str(tmp), metadata=metadata))


def load_text(path: str | Path | None, with_digests: bool = False):
    """item_id -> text embedding (and item_id -> text digest when asked) from a file written by save_text."""
    if not path or not Path(path).exists():
        return ({}, {}) if with_digests else {}
    with safe_open(str(path), framework="np") as f:
        metadata = f.metadata()
        rows = f.get_tensor("embeddings")
    ids, shas = json.loads(metadata["ids"]), json.loads(metadata["sha"])
    embeddings = dict(zip(ids, rows, strict=True))
    return (embeddings, dict(zip(ids, shas, strict=True))) if with_digests else embeddings


def shuffled(train: Sequences, seed: int) -> Sequences:
    """Every training item moved to a random position of a random sequence (lengths kept): a gate drill.

    Only item popularity survives, so the model trained on it is much worse than production and the gate
    must refuse it.
    """
    lengths = [len(s) for s in train.items]
    pool = np.random.default_rng(seed).permutation(np.concatenate(train.items))
    return Sequences(train.user_ids, np.split(pool, np.cumsum(lengths)[:-1]))


def _rows_from_text(model: GenerativeRecommender, base_ids: set[str], text: dict[str, np.ndarray]) -> int:
    """New items' rows (not in the base checkpoint) start from their projected text embedding; returns how many."""
    assert model.vocab is not None and model.lm is not None
    warm = [(i, item) for i, item in enumerate(model.vocab.item_ids) if item in base_ids and item in text]
    new = [(i, item) for i, item in enumerate(model.vocab.item_ids) if item not in base_ids and item in text]
    if not new or len(warm) < 2:
        return 0
    rows = model.item_embeddings().detach().numpy()
    projection = KnnProjection.fit(np.stack([text[item] for _, item in warm]), rows[[i for i, _ in warm]])
    projected = projection(np.stack([text[item] for _, item in new]))
    with torch.no_grad():
        weight = model.lm.get_input_embeddings().weight
        weight[[model.token_offset + i for i, _ in new]] = torch.from_numpy(projected).to(weight.dtype)
    return len(new)


def _catalogue_items_from_text(model: GenerativeRecommender, text: dict[str, np.ndarray]) -> int:
    """Catalogue items with text but no events join the vocabulary with projected rows (recommendable at once)."""
    assert model.vocab is not None
    fresh = [item for item in text if item not in model.vocab]
    trained = [(i, item) for i, item in enumerate(model.vocab.item_ids) if item in text]
    if not fresh or len(trained) < 2:
        return 0
    rows = model.item_embeddings().detach().numpy()
    projection = KnnProjection.fit(np.stack([text[item] for _, item in trained]), rows[[i for i, _ in trained]])
    add_items_from_text(model, fresh, np.stack([text[item] for item in fresh]), projection)
    return len(fresh)


@torch.no_grad()
def shrink_and_perturb(model: GenerativeRecommender, shrink: float, seed: int) -> None:
    """Warm-start weights scaled by `shrink` plus fresh-init noise scaled by 1 - shrink (Ash & Adams, 2020).

    Only matrices (embeddings, projections): norm gains stay, so every layer still sees unit-scale inputs.
    """
    if not 0.0 < shrink <= 1.0:
        raise ValueError(f"shrink_perturb must be in (0, 1], got {shrink}: 1.0 keeps the warm start as it is")
    if shrink == 1.0:
        return
    assert model.lm is not None
    generator = torch.Generator().manual_seed(seed)
    noise_std = model.config.init_std * (1.0 - shrink)
    for param in model.lm.parameters():
        if param.dim() >= 2:
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            param.mul_(shrink).add_(noise * noise_std)


def train_candidate(spec: dict[str, Any]) -> dict[str, Any]:
    """Build, train and (process 0) save the candidate; returns its training stats."""
    prepared = load_prepared(spec["prepared"])
    preset = load_preset(spec["preset"], spec.get("overrides"))
    train_config = replace(preset.train, refit_with_valid=False)
    base = spec.get("base_model")
    model = GenerativeRecommender(preset.lm, train_config, base_model=base)
    model.init_model(prepared.vocab)
    data = pipeline.split(prepared, model.max_len)  # a warm start keeps its base's window, not the preset's
    text = load_text(spec.get("text"))
    base_ids: set[str] = set()
    shrink: float | None = None  # the stats say None for a model trained from scratch
    if base:
        base_ids = set(json.loads((Path(base) / "item_vocab.json").read_text())["item_ids"])
        shrink = float(spec.get("shrink_perturb", 1.0))
        shrink_and_perturb(model, shrink, train_config.seed)
    from_text = _rows_from_text(model, base_ids, text) if base else 0
    train = shuffled(data.train, train_config.seed) if spec.get("shuffle_drill") else data.train
    model.fit(train, len(prepared.vocab), data.valid, vocab=prepared.vocab)
    added = _catalogue_items_from_text(model, text) if spec.get("catalogue_items", True) else 0
    stats = {
        **model.stats,
        "mode": "warm" if base else "scratch",
        "base_model": str(base) if base else None,
        "shrink_perturb": shrink,
        "new_items": len(set(prepared.vocab.item_ids) - base_ids) if base else len(prepared.vocab),
        "new_item_rows_from_text": from_text,
        "catalogue_items_from_text": added,
        "shuffle_drill": bool(spec.get("shuffle_drill")),
        "history": model.history,
    }
    model.stats = {k: v for k, v in stats.items() if k != "history"}
    if distributed.current().is_main:
        out = Path(spec["out"])
        tmp = out.with_name(f".{out.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save(tmp)
        (tmp / "train_stats.json").write_text(json.dumps(stats, indent=2, default=str))
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    distributed.barrier(distributed.current())
    return stats


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m training.nightly.candidate SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    train_candidate(spec)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
