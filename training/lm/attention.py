"""Causal attention and dropout that are cheap on CPU, for training only.

Torch's dropout (`bernoulli_`) is slow on CPU and pushes SDPA off its fused kernel, so here the mask is drawn as
random bytes and attention is written out. Any call with a mask or without dropout (evaluation, export,
left-padded histories) goes to the stock SDPA path unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

TRAIN_ATTENTION = "recsys_train_attention"


def dropped_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device) -> tuple[torch.Tensor, float]:
    """(bool tensor True where an element is dropped, with probability p rounded to k/256; 1 / keep rate).

    One random draw per 4 elements, each byte compared with round(p * 256); seeded by torch's global generator.
    """
    threshold = round(p * 256) if 0.0 <= p < 1.0 else -1
    if not 0 <= threshold < 256:  # p >= 255.5/256 would round to "drop everything"
        raise ValueError(f"dropout probability must be in [0, 1) (at most 255/256 here), got {p}")
    numel = math.prod(shape)
    words = torch.empty((numel + 3) // 4, dtype=torch.int32, device=device).random_(-(2**31), 2**31)
    return words.view(torch.uint8)[:numel].view(shape) < threshold, 256 / (256 - threshold)


def fast_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """`F.dropout` with the byte-drawn mask above."""
    if not training or p == 0.0:
        return x
    dropped, rescale = dropped_mask(x.shape, p, x.device)
    return x.masked_fill(dropped, 0.0) * rescale


def train_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """HF attention interface: causal attention with byte-mask dropout; SDPA whenever that does not apply.

    No padding mask is needed: training batches are right-padded and attention is causal, so a real position
    never sees padding.
    """
    if attention_mask is not None or dropout == 0.0 or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = (query * scale) @ key.transpose(-1, -2)  # scaling the query: a pass over the scores fewer
    length = query.shape[2]
    future = torch.ones(length, length, dtype=torch.bool, device=query.device).triu_(1)
    weights = torch.softmax(scores.masked_fill_(future, float("-inf")), dim=-1)
    dropped, rescale = dropped_mask(weights.shape, dropout, weights.device)
    # the rescale goes on the (small) output rather than the (large) weights: one pass over them fewer
    output = (weights.masked_fill(dropped, 0.0) @ value) * rescale
    return output.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make TRAIN_ATTENTION a valid `attn_implementation` (idempotent); its masks are SDPA's."""
    if TRAIN_ATTENTION not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        AttentionInterface.register(TRAIN_ATTENTION, train_attention)
        AttentionMaskInterface.register(TRAIN_ATTENTION, sdpa_mask)


@contextmanager
def training_attention(lm: PreTrainedModel) -> Iterator[None]:
    """Within the block the model's attention is `train_attention`; the previous implementation after."""
    register()
    previous = lm.config._attn_implementation
    lm.set_attn_implementation(TRAIN_ATTENTION)
    try:
        yield
    finally:
        lm.set_attn_implementation(previous)
