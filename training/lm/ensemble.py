"""Several generative recommenders ranked by the sum of their scores, served as one model.

A sum of dot products is one dot product of the members' user vectors laid end to end with their item rows
laid end to end, so the ensemble has the single model's shape downstream: one ONNX user encoder, one FAISS
index, the same recommender interface. Member i trains with seed + i, so like members still differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recsys.data.sequences import HoldoutSet, Sequences
from recsys.data.vocab import ItemVocab
from recsys.models.base import EmbeddingScorer, Recommender, read_card
from training.lm.model import GenerativeRecommender, LMConfig, TrainConfig


class ConcatenatedEncoders(nn.Module):
    """(input_ids, attention_mask) -> the members' user vectors side by side: what ONNX exports."""

    def __init__(self, encoders: Sequence[nn.Module]):
        super().__init__()
        self.encoders = nn.ModuleList(encoders)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.cat([encoder(input_ids, attention_mask) for encoder in self.encoders], dim=-1)


class EnsembleRecommender(Recommender, EmbeddingScorer):
    kind = "lm-ensemble"

    def __init__(self, members: Sequence[tuple[LMConfig, TrainConfig]] | Sequence[GenerativeRecommender]):
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}: use a single-model preset")
        self.members: list[GenerativeRecommender] = []
        for i, member in enumerate(members):
            if not isinstance(member, GenerativeRecommender):  # (LMConfig, TrainConfig) of a member to train
                lm_config, train_config = member
                member = GenerativeRecommender(lm_config, replace(train_config, seed=train_config.seed + i))
            self.members.append(member)
        max_lens = {m.config.max_len for m in self.members}
        if len(max_lens) != 1:
            raise ValueError(f"ensemble members must share max_len (one history window), got {sorted(max_lens)}")
        if any(m.train_config.refit_with_valid for m in self.members):
            raise ValueError("refit_with_valid is not supported for ensemble members: set it to false")
        self.stats: dict = {}

    # what export and the evaluator read, shared by every member (they are trained on one vocabulary)
    @property
    def vocab(self) -> ItemVocab | None:
        return self.members[0].vocab

    @property
    def n_items(self) -> int:
        return self.members[0].n_items

    @property
    def token_offset(self) -> int:
        return self.members[0].token_offset

    @property
    def max_len(self) -> int:
        return self.members[0].max_len

    def fit(
        self, train: Sequences, n_items: int, valid: HoldoutSet | None = None, vocab: ItemVocab | None = None
    ) -> EnsembleRecommender:
        vocab = vocab or ItemVocab([str(i) for i in range(n_items)])
        for member in self.members:  # every member is built first: a bad architecture fails before any training
            if member.lm is None:
                member.init_model(vocab)
        for member in self.members:
            member.fit(train, n_items, valid, vocab=vocab)
        member_stats = [m.stats for m in self.members]
        wall = sum(s["train_wall_s"] for s in member_stats)
        self.stats = {
            "train_wall_s": round(wall, 1),
            # the members' training rates weighted by their wall time
            "tokens_per_s": round(
                sum(s["tokens_per_s"] * s["train_wall_s"] for s in member_stats) / max(wall, 1e-9), 1
            ),
            "params": sum(s["params"] for s in member_stats),
            "members": member_stats,
        }
        return self

    def user_encoder(self) -> nn.Module:
        return ConcatenatedEncoders([m.user_encoder() for m in self.members])

    def item_embeddings(self) -> torch.Tensor:
        return torch.cat([m.item_embeddings() for m in self.members], dim=1)

    def user_vectors(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate([m.user_vectors(histories) for m in self.members], axis=1)

    @torch.no_grad()
    def item_vectors(self) -> np.ndarray:
        return self.item_embeddings().detach().float().cpu().numpy()

    def save(self, path: str | Path) -> None:
        path = Path(path)
        for i, member in enumerate(self.members):
            member.save(path / f"member-{i}")
        self._write_card(path, members=len(self.members), stats=self.stats)

    @classmethod
    def load(cls, path: str | Path) -> EnsembleRecommender:
        path = Path(path)
        card = read_card(path)
        model = cls([GenerativeRecommender.load(path / f"member-{i}") for i in range(card["members"])])
        model.stats = card.get("stats", {})
        return model
