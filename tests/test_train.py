"""Pieces of the training loop: windows, bucketing, the fused cross-entropy, stopping on divergence."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recsys.data.sequences import Sequences, leave_one_out
from recsys.data.vocab import ItemVocab
from recsys.evaluate import NonFiniteScores, evaluate
from training.lm.distributed import World
from training.lm.model import GenerativeRecommender, LMConfig, TrainConfig
from training.lm.train import (
    TrainingDiverged,
    bucketed_batches,
    collate,
    fused_cross_entropy,
    training_windows,
    valid_ndcg,
)


def test_fused_cross_entropy_matches_torch_values_and_gradients():
    torch.manual_seed(0)
    hidden = torch.randn(1300, 16, requires_grad=True)
    weight = (0.1 * torch.randn(700, 16)).requires_grad_()
    labels = torch.randint(0, 700, (1300,))
    expected = F.cross_entropy(hidden @ weight.T, labels)
    expected.backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    loss = fused_cross_entropy(hidden, weight, labels, chunk=512)
    (2.0 * loss).backward()  # a scaled upstream gradient must scale the result
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(hidden.grad, 2.0 * grads[0])
    torch.testing.assert_close(weight.grad, 2.0 * grads[1])


def test_windows_cover_every_target_once():
    seq = np.arange(450)
    windows = training_windows(Sequences(["u"], [seq]), max_len=200)
    targets = np.concatenate([w[1:] for w in windows])
    assert sorted(targets.tolist()) == list(range(1, 450))
    assert max(len(w) for w in windows) == 201


def test_bucketed_batches_cover_all_and_group_lengths():
    lengths = np.random.default_rng(0).integers(2, 200, size=1000)
    batches = bucketed_batches(lengths, 32, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    assert spread < 20  # random batches would spread over ~190


def test_collate_right_pads_and_masks_labels():
    ids, mask, labels = collate([np.array([1, 2, 3]), np.array([4, 5])], token_offset=2)
    assert ids.tolist() == [[3, 4], [6, 0]]
    assert labels.tolist() == [[2, 3], [5, -100]]
    assert mask.tolist() == [[1, 1], [1, 0]]


def test_bf16_cross_entropy_stays_close_to_float32_and_bad_precision_is_rejected():
    torch.manual_seed(0)
    hidden = torch.randn(700, 32, requires_grad=True)
    weight = (0.1 * torch.randn(300, 32)).requires_grad_()
    labels = torch.randint(0, 300, (700,))
    grads = {}
    for dtype in (torch.float32, torch.bfloat16):
        hidden.grad = weight.grad = None
        loss = fused_cross_entropy(hidden, weight, labels, chunk=256, dtype=dtype)
        loss.backward()
        grads[dtype] = loss.detach(), hidden.grad.clone(), weight.grad.clone()
        assert loss.dtype == hidden.grad.dtype == weight.grad.dtype == torch.float32  # sums stay float32
    for exact, low in zip(grads[torch.float32], grads[torch.bfloat16], strict=True):
        assert not torch.equal(exact, low)  # the products did run in bfloat16
        torch.testing.assert_close(low, exact, rtol=0.05, atol=2e-4)
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, got 'fp16'"):
        TrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="ema_decay must be in"):
        TrainConfig(ema_decay=1.5)


def _cyclic_split(n_items: int = 30):
    rng = np.random.default_rng(0)
    items = [(rng.integers(0, n_items) + np.arange(rng.integers(5, 12))) % n_items for _ in range(120)]
    return leave_one_out(Sequences([str(i) for i in range(120)], items), max_len=10)


def _tiny_lm(**train) -> GenerativeRecommender:
    config = LMConfig(hidden_size=16, num_layers=1, num_heads=1, intermediate_size=32, max_len=10)
    model = GenerativeRecommender(config, TrainConfig(batch_size=32, log_every=1000, **train))
    model.init_model(ItemVocab([str(i) for i in range(30)]))
    return model


def test_a_nan_weight_stops_training_with_the_epoch_named(tmp_path):
    split = _cyclic_split()
    model = _tiny_lm(epochs=3, eval_every=1)
    with torch.no_grad():
        model.lm.get_decoder().norm.weight.fill_(math.nan)
    with pytest.raises(NonFiniteScores):
        evaluate(model, split.valid)  # what the evaluator says of such a model
    assert math.isnan(valid_ndcg(model, split.valid, World()))  # NaN, never an exception, inside the loop
    with pytest.raises(TrainingDiverged, match="epoch 1: the training loss is nan") as diverged:
        model.fit(split.train, 30, split.valid)
    assert diverged.value.epoch == 1
    assert model.history == []  # no epoch was recorded as if it had trained


class NaNScoringLM(GenerativeRecommender):
    """A real LM that trains normally but whose scores come out NaN: only validation can see it."""

    def score(self, histories):
        return np.full((len(histories), self.n_items), np.nan, dtype=np.float32)


def test_a_non_finite_validation_metric_stops_training_at_the_first_evaluation():
    split = _cyclic_split()
    config = LMConfig(hidden_size=16, num_layers=1, num_heads=1, intermediate_size=32, max_len=10)
    model = NaNScoringLM(config, TrainConfig(epochs=6, eval_every=2, batch_size=32, log_every=1000))
    with pytest.raises(TrainingDiverged, match="epoch 2: validation NDCG@10 is nan") as diverged:
        model.fit(split.train, 30, split.valid)  # before: NaN never beat the best, training ran on to patience
    assert diverged.value.epoch == 2


def test_the_time_budget_stops_training_inside_an_epoch_and_still_validates():
    split = _cyclic_split()
    config = LMConfig(hidden_size=16, num_layers=1, num_heads=1, intermediate_size=32, max_len=10)
    # batch 2 and a check every 2 steps: an epoch has dozens of checks; a budget of ~1 ms is spent by the first
    model = GenerativeRecommender(
        config, TrainConfig(epochs=5, eval_every=5, batch_size=2, log_every=2, max_minutes=1e-5)
    )
    model.fit(split.train, 30, split.valid)
    steps_per_epoch = math.ceil(len(training_windows(split.train, config.max_len)) / 2)
    assert steps_per_epoch > 4
    assert model.stats["epochs"] == 1 and model.stats["last_epoch_complete"] is False
    assert 0 < model.stats["tokens_seen"] < sum(len(s) - 1 for s in split.train.items)
    assert [entry["epoch"] for entry in model.history] == [1]  # the stopped epoch is still validated
    assert math.isfinite(model.history[0]["loss"])
