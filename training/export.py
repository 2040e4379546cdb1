"""Export a trained LM as a bundle: ONNX user encoder + FAISS item index + catalogue + histories + manifest."""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from recsys import bundle
from recsys.bundle.histories import write_histories
from recsys.bundle.layout import CATALOGUE, ENCODER, HISTORIES, HISTORY_DIR, INDEX_ENTRY, POPULARITY, EncoderSpec
from recsys.data.sequences import Sequences
from recsys.data.vocab import ItemVocab
from recsys.index import IndexParams, ItemIndex
from recsys.tokens import left_pad
from training.adcopy.batch import write_adcopy_assets
from training.lm.ensemble import EnsembleRecommender
from training.lm.model import GenerativeRecommender

# what a bundle serves: one LM, or an ensemble of LMs (one encoder and one item matrix all the same)
ServableModel = GenerativeRecommender | EnsembleRecommender


@dataclass(frozen=True)
class AdCopyPlan:
    """What the bundle carries for ad copy: the copy model for the live path (None: template only) and copy for
    each user's top-k, written by the copy model or, when `batch_writer_dir` is set, by a pretrained model's
    chat writer (`training.adcopy.llama.export_chat_writer`): too slow for the live budget on CPU, fine in batch."""

    copy_model_dir: Path | None
    top_k: int = 3
    batch_size: int = 512
    batch_writer_dir: Path | None = None


def top_k_items(model: ServableModel, sequences: Sequences, k: int, batch_size: int) -> dict[str, list[str]]:
    """Each user's top-k item IDs (history masked), scored in batches."""
    assert model.vocab is not None
    out: dict[str, list[str]] = {}
    for start in range(0, len(sequences.items), batch_size):
        histories = [seq[-model.max_len :] for seq in sequences.items[start : start + batch_size]]
        items, _ = model.recommend(histories, k)
        for user_id, row in zip(sequences.user_ids[start : start + batch_size], items, strict=True):
            out[user_id] = [model.vocab.item_ids[i] for i in row if i >= 0]
    return out


def export_onnx(model: ServableModel, path: Path) -> Path:
    """The user encoder with dynamic batch and length (left padding), opset 18, weights inside the file.

    The TorchScript exporter is used: it takes ~0.3 s against ~5 s for the dynamo exporter and gives the
    same graph numerics (max diff ~1e-6) for this decoder.
    """
    encoder = model.user_encoder()
    ids, mask = left_pad([np.arange(3), np.arange(7)], model.max_len, model.token_offset)
    ids, mask = np.minimum(ids, model.token_offset + model.n_items - 1), mask
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            encoder,
            (torch.from_numpy(ids), torch.from_numpy(mask)),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["user_vector"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "length"},
                "attention_mask": {0: "batch", 1: "length"},
                "user_vector": {0: "batch"},
            },
            opset_version=18,
            dynamo=False,
        )
    return path


def recent_histories(sequences: Sequences, item_ids: list[str], max_len: int) -> pl.DataFrame:
    """Each known user's last max_len items (as item IDs), what the service starts a user's history from."""
    ids = np.asarray(item_ids, dtype=object)
    return pl.DataFrame(
        {
            "user_id": sequences.user_ids,
            "item_ids": [ids[seq[-max_len:]].tolist() for seq in sequences.items],
        },
        schema={"user_id": pl.String, "item_ids": pl.List(pl.String)},
    )


def without_items(model: GenerativeRecommender, item_ids: Iterable[str]) -> GenerativeRecommender:
    """A copy of the model whose vocabulary lacks these items (e.g. no longer in the catalogue).

    What the bundle of such a model serves cannot recommend them; in a history they are unknown items, which
    the service ignores and reports. The original model (and its checkpoint, the next warm start) keeps them.
    """
    assert model.lm is not None and model.vocab is not None
    drop = {str(i) for i in item_ids}
    keep = [i for i, item_id in enumerate(model.vocab.item_ids) if item_id not in drop]
    if len(keep) == model.n_items:
        return model
    rows = model.lm.get_input_embeddings().weight.data
    kept_rows = torch.cat([rows[: model.token_offset], rows[model.token_offset + torch.tensor(keep, dtype=torch.long)]])
    pruned = copy.copy(model)
    pruned.lm = copy.deepcopy(model.lm)
    pruned.lm.resize_token_embeddings(model.token_offset + len(keep), mean_resizing=False)
    with torch.no_grad():
        pruned.lm.get_input_embeddings().weight.copy_(kept_rows)
    pruned.lm.tie_weights()
    pruned.vocab = ItemVocab([model.vocab.item_ids[i] for i in keep])
    pruned.n_items = len(keep)
    return pruned


def export_bundle(
    model: ServableModel,
    sequences: Sequences,
    bundles_root: str | Path,
    catalogue: pl.DataFrame | None = None,
    manifest_fields: dict[str, Any] | None = None,
    promote: bool = False,
    version: str | None = None,
    before_seal: Callable[[Path], None] | None = None,
    adcopy: AdCopyPlan | None = None,
    index: IndexParams | None = None,
) -> Path:
    """Write, seal and (optionally) promote a bundle; returns its directory. Production is untouched on error.

    `version` names the bundle (default: now), so a job that is rerun after a crash writes the same bundle
    again rather than a second one; `before_seal` is called with the staging directory (fault-injection tests).
    With `adcopy` and a catalogue, the bundle also carries the copy model and the copy for each user's top-k.
    `index` chooses the FAISS index (default: exact below IndexParams.approximate_from items, approximate from
    there on); the manifest records the kind built and its parameters.
    """
    assert model.vocab is not None
    version = version or bundle.new_version()
    staging = bundle.staging_dir(bundles_root, version)
    export_onnx(model, staging / ENCODER)
    embeddings = model.item_embeddings().detach().float().numpy()
    item_index = ItemIndex.build(embeddings, model.vocab.item_ids, index or IndexParams())
    item_index.save(staging)
    recent_histories(sequences, model.vocab.item_ids, model.max_len).write_parquet(staging / HISTORIES)
    write_histories(staging / HISTORY_DIR, sequences.user_ids, [seq[-model.max_len :] for seq in sequences.items])
    counts = np.bincount(np.concatenate(sequences.items), minlength=model.n_items) if sequences.items else []
    (staging / POPULARITY).write_text(json.dumps({"counts": np.asarray(counts).tolist()}))
    adcopy_stats = None
    if catalogue is not None:
        catalogue.write_parquet(staging / CATALOGUE)
        if adcopy is not None:
            histories: dict[str, list[str]] = {}
            recommendations: dict[str, list[str]] = {}
            # without a model nothing is precomputed: skip the scoring
            if adcopy.copy_model_dir is not None or adcopy.batch_writer_dir is not None:
                item_ids = np.asarray(model.vocab.item_ids, dtype=object)
                pairs = zip(sequences.user_ids, sequences.items, strict=True)
                histories = {u: item_ids[s].tolist() for u, s in pairs}
                recommendations = top_k_items(model, sequences, adcopy.top_k, adcopy.batch_size)
            adcopy_stats = write_adcopy_assets(
                staging,
                adcopy.copy_model_dir,
                catalogue,
                histories,
                recommendations,
                batch_writer_dir=adcopy.batch_writer_dir,
            )
    fields = {
        "model": EncoderSpec(
            kind=model.kind,
            max_len=model.max_len,
            token_offset=model.token_offset,
            pad_token_id=0,
            hidden_size=int(embeddings.shape[1]),
            n_items=model.n_items,
        ).to_json(),
        INDEX_ENTRY: item_index.params.manifest_entry(),
        **(manifest_fields or {}),
    }
    if adcopy_stats is not None:
        fields["adcopy"] = adcopy_stats
    if before_seal is not None:
        before_seal(staging)
    final = bundle.seal(staging, version, fields)
    if promote:
        bundle.promote(bundles_root, version)
    return final
