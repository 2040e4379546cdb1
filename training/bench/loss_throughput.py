"""Training-step throughput of the full and the sampled softmax as the catalogue grows.

One model size (by default hidden 64, 2 layers, max_len 50, batch 128 of full-length windows, as the amazon
presets train) at each catalogue size, one training step as the trainer takes it: the loss module the loop
uses (NextItemLoss, with its seeded negative sampler), backward, gradient clipping, AdamW. The full softmax's
cost per token grows with the catalogue; the sampled one's grows with the batch's distinct targets plus the
negatives, but AdamW and the embedding gradient still touch every item row (dense), which is what is left
growing with the catalogue under the sampled loss.

Window items are drawn uniformly from the catalogue, so nearly every target in a batch is distinct: the
sampled loss's worst case (real data repeats popular items, giving fewer in-batch columns).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from recsys.data.vocab import ItemVocab
from training.lm.attention import training_attention
from training.lm.model import GenerativeRecommender, LMConfig, TrainConfig
from training.lm.train import NextItemLoss, collate


def measure_one(
    n_items: int,
    loss: str,
    steps: int,
    lm_config: LMConfig,
    batch_size: int = 128,
    sampled_negatives: int = 256,
    precision: str = "fp32",
    seed: int = 0,
    budget_s: float | None = None,
) -> dict:
    """Real tokens/s of `steps` timed training steps (after one untimed warm-up step) for one loss and
    catalogue size. With `budget_s`, a configuration whose warm-up step says the timed steps would not fit in
    it is not timed: its figures are None and `skipped` says why."""
    rng = np.random.default_rng(seed)
    train_config = TrainConfig(seed=seed, precision=precision, loss=loss, sampled_negatives=sampled_negatives)
    model = GenerativeRecommender(lm_config, train_config)
    model.init_model(ItemVocab([str(i) for i in range(n_items)]))
    model.lm.train()
    loss_module = NextItemLoss(model)
    optimizer = torch.optim.AdamW(model.lm.parameters(), lr=1e-3)
    result: dict = {
        "loss": loss,
        "n_items": n_items,
        "sampled_negatives": sampled_negatives if loss == "sampled" else None,
        "hidden_size": lm_config.hidden_size,
        "num_layers": lm_config.num_layers,
        "max_len": lm_config.max_len,
        "batch_size": batch_size,
        "precision": precision,
        "threads": torch.get_num_threads(),
    }
    timings, tokens = [], []
    with training_attention(model.lm):
        for step in range(steps + 1):  # step 0 warms up (allocations, kernels) and is not timed
            windows = [rng.integers(0, n_items, size=lm_config.max_len + 1) for _ in range(batch_size)]
            ids, mask, labels = collate(windows, model.token_offset)
            started = time.perf_counter()
            loss_value = loss_module(ids, labels)
            optimizer.zero_grad(set_to_none=True)
            loss_value.backward()
            torch.nn.utils.clip_grad_norm_(model.lm.parameters(), 1.0)
            optimizer.step()
            elapsed = time.perf_counter() - started
            if step == 0:
                result["warmup_step_s"] = round(elapsed, 3)
                if budget_s is not None and elapsed * steps > budget_s:
                    skipped = f"the warm-up step took {elapsed:.1f} s: {steps} timed steps would pass {budget_s:.0f} s"
                    return {**result, "real_tokens_per_s": None, "median_step_ms": None, "skipped": skipped}
                continue
            timings.append(elapsed)
            tokens.append(int(mask.sum()))
    return {
        **result,
        "real_tokens_per_s": round(sum(tokens) / sum(timings), 1),
        "median_step_ms": round(1000 * float(np.median(timings)), 2),
        "steps": steps,
    }


def measure(
    items_list: Sequence[int],
    steps: int,
    losses: Sequence[str] = ("full", "sampled"),
    hidden_size: int = 64,
    num_layers: int = 2,
    max_len: int = 50,
    batch_size: int = 128,
    sampled_negatives: int = 256,
    precision: str = "fp32",
    budget_s: float | None = None,
) -> list[dict]:
    """One dict per (catalogue size, loss): real tokens/s and the median step time of the training step."""
    lm_config = LMConfig(
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=2,
        intermediate_size=4 * hidden_size,
        max_len=max_len,
    )
    results = []
    for n_items in items_list:
        for loss in losses:
            results.append(
                measure_one(
                    n_items,
                    loss,
                    steps,
                    lm_config,
                    batch_size=batch_size,
                    sampled_negatives=sampled_negatives,
                    precision=precision,
                    budget_s=budget_s,
                )
            )
    return results
