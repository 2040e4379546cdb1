"""The sampled-softmax training loss (`train.loss="sampled"`): its values and gradients against a plain
reference, what the log-Q correction and the accidental-hit mask do, bfloat16, a tiny run that learns, and
the settings it refuses."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recsys.data.sequences import Sequences
from recsys.data.vocab import ItemVocab
from recsys.evaluate import evaluate
from recsys.models.popularity import PopularityRecommender
from training.lm.ensemble import EnsembleRecommender
from training.lm.model import GenerativeRecommender, LMConfig, TrainConfig
from training.lm.train import NextItemLoss, UniformNegatives, collate, sampled_cross_entropy
from training.presets import PRESETS_DIR, load_preset


def reference_sampled_loss(hidden, weight, labels, negatives, logq_correction):
    """One explicit logit per candidate: [positive, every position's target, every uniform draw]."""
    n_items = weight.shape[0]
    negative_items = torch.cat([labels, negatives])
    logits = hidden @ weight[negative_items].T
    if logq_correction:
        count_in_batch = (labels[:, None] == labels[None, :]).sum(1).float()
        uniform_q = torch.full((len(negatives),), len(negatives) / n_items)
        logits = logits - torch.cat([count_in_batch, uniform_q]).log()
    logits = logits.masked_fill(negative_items[None, :] == labels[:, None], -math.inf)
    positive = (hidden * weight[labels]).sum(1, keepdim=True)
    return F.cross_entropy(torch.cat([positive, logits], dim=1), torch.zeros(len(labels), dtype=torch.long))


def skewed_batch(n_tokens=300, n_items=50, dim=16, seed=0):
    """Targets with a popular head (many repeats in the batch), random hidden states and item rows."""
    generator = torch.Generator().manual_seed(seed)
    popularity = 1.0 / torch.arange(1, n_items + 1).float()
    labels = torch.multinomial(popularity, n_tokens, replacement=True, generator=generator)
    hidden = torch.randn(n_tokens, dim, generator=generator).requires_grad_()
    weight = (0.3 * torch.randn(n_items, dim, generator=generator)).requires_grad_()
    return hidden, weight, labels


def loss_and_grads(loss_fn, hidden, weight):
    hidden.grad = weight.grad = None
    loss = loss_fn()
    loss.backward()
    return loss.detach(), hidden.grad.clone(), weight.grad.clone()


@pytest.mark.parametrize("logq_correction", [True, False])
def test_values_and_gradients_match_the_reference_given_the_same_draws(logq_correction):
    hidden, weight, labels = skewed_batch()
    sampler = UniformNegatives(40, seed=3)
    negatives = sampler(weight.shape[0], torch.device("cpu"))
    assert torch.equal(negatives, UniformNegatives(40, seed=3)(weight.shape[0], torch.device("cpu")))  # seeded
    assert bool(torch.isin(negatives, labels).any())  # some draws are accidental hits for some rows
    expected = loss_and_grads(
        lambda: reference_sampled_loss(hidden, weight, labels, negatives, logq_correction), hidden, weight
    )
    # chunk 64 < 300 rows: the chunked kernel's rows are split as in training
    got = loss_and_grads(
        lambda: 2.0 * sampled_cross_entropy(hidden, weight, labels, negatives, logq_correction, chunk=64),
        hidden,
        weight,
    )
    torch.testing.assert_close(got[0], 2.0 * expected[0])
    torch.testing.assert_close(got[1], 2.0 * expected[1])  # a scaled upstream gradient scales the result
    torch.testing.assert_close(got[2], 2.0 * expected[2])


def softmax_shares(labels, negatives, logq_correction, n_items=10):
    """Each row's softmax share per item: with zero hidden states every raw logit is 0, so only the correction
    and the masks set the shares, and with orthonormal item rows the hidden gradient reads them out."""
    hidden = torch.zeros(len(labels), n_items, requires_grad=True)
    loss = sampled_cross_entropy(hidden, torch.eye(n_items), labels, negatives, logq_correction)
    loss.backward()
    one_hot = F.one_hot(labels, n_items).float()
    return hidden.grad * len(labels) + one_hot, loss.item()  # grad = (shares - one-hot) / rows


def test_logq_correction_lowers_frequent_in_batch_items_and_raises_uniform_draws():
    # item 0 is 8 of the batch's targets, items 1..8 one each; item 9 is drawn once from 10 items
    labels = torch.tensor([0] * 8 + list(range(1, 9)))
    negatives = torch.tensor([9])
    row = 8  # the row whose positive is item 1
    plain, _ = softmax_shares(labels, negatives, logq_correction=False)
    corrected, _ = softmax_shares(labels, negatives, logq_correction=True)
    # without it the 8 copies of item 0 take 8x the share of item 2; with it each copy's logit is lowered by
    # log 8, so item 0 weighs as much as any other item present (a wrong sign would make it 64x)
    assert plain[row, 0] / plain[row, 2] == pytest.approx(8.0)
    assert corrected[row, 0] / corrected[row, 2] == pytest.approx(1.0)
    # a uniform draw stands for n_items / draws = 10 items: its logit is raised by log 10
    assert plain[row, 9] / plain[row, 2] == pytest.approx(1.0)
    assert corrected[row, 9] / corrected[row, 2] == pytest.approx(10.0)


def test_accidental_hits_are_masked_out():
    # both rows' positive is item 3: the other row's target and the draw of item 3 are not its negatives
    labels = torch.tensor([3, 3])
    shares, loss = softmax_shares(labels, torch.tensor([3, 5]), logq_correction=True)
    # candidates left per row: the positive (logit 0) and the draw of item 5 (logit log(10 / 2))
    assert loss == pytest.approx(math.log(1 + 5))
    assert shares[0, 3] == pytest.approx(1 / 6)
    assert shares[0, 5] == pytest.approx(5 / 6)


def reference_popularity_loss(hidden, weight, labels, negatives, frequency):
    """The popularity correction spelled out: every distinct candidate once, each negative's logit lowered by
    the log of its probability of being a candidate (in the batch's targets or among the draws)."""
    n_items = weight.shape[0]
    candidates = sorted(set(labels.tolist()) | set(negatives.tolist()))
    logits = hidden @ weight[candidates].T
    for column, item in enumerate(candidates):
        missed = (1 - float(frequency[item])) ** len(labels) * (1 - 1 / n_items) ** len(negatives)
        is_positive = labels == item
        logits[:, column] = torch.where(is_positive, logits[:, column], logits[:, column] - math.log(1 - missed))
    target = torch.tensor([candidates.index(int(y)) for y in labels])
    return F.cross_entropy(logits, target)


def test_the_popularity_correction_matches_its_reference():
    hidden, weight, labels = skewed_batch(n_items=200)
    frequency = torch.bincount(labels, minlength=200).float() / len(labels)
    negatives = UniformNegatives(40, seed=3)(200, torch.device("cpu"))
    expected = loss_and_grads(
        lambda: reference_popularity_loss(hidden, weight, labels, negatives, frequency), hidden, weight
    )
    got = loss_and_grads(
        lambda: sampled_cross_entropy(hidden, weight, labels, negatives, chunk=64, target_frequency=frequency),
        hidden,
        weight,
    )
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="needs logq_correction"):
        sampled_cross_entropy(hidden, weight, labels, negatives, logq_correction=False, target_frequency=frequency)


def test_the_popularity_correction_tracks_the_full_softmax_where_counting_does_not():
    # targets drawn from a skewed popularity over 2,000 items, 300 per batch, 100 uniform draws: counted once,
    # the batch's items and the draws (which already stand for the whole catalogue) are added up twice, so
    # the loss sits above the full softmax's; weighted by 1 / P(candidate) it estimates the same sum
    n_items, dim = 2000, 16
    popularity = 1.0 / torch.arange(1, n_items + 1).float() ** 1.1
    frequency = popularity / popularity.sum()
    generator = torch.Generator().manual_seed(0)
    weight = 0.1 * torch.randn(n_items, dim, generator=generator)  # modest logits: the log of a sum is tame
    gaps = {"count": [], "popularity": []}
    for trial in range(30):
        labels = torch.multinomial(frequency, 300, replacement=True, generator=generator)
        hidden = torch.randn(300, dim, generator=generator)
        negatives = UniformNegatives(100, seed=trial)(n_items, torch.device("cpu"))
        with torch.no_grad():
            full = F.cross_entropy(hidden @ weight.T, labels)
            gaps["count"].append(float(sampled_cross_entropy(hidden, weight, labels, negatives) - full))
            gaps["popularity"].append(
                float(sampled_cross_entropy(hidden, weight, labels, negatives, target_frequency=frequency) - full)
            )
    count_gap, popularity_gap = np.mean(gaps["count"]), np.mean(gaps["popularity"])
    assert count_gap > 0.04, gaps  # the double count (measured: 0.063, spread 0.004 over the trials)
    assert abs(popularity_gap) < count_gap / 2, gaps  # measured: -0.016 (spread 0.035: 1 / P weights are noisy)


def test_a_tiny_run_with_the_popularity_correction_learns(tiny_prepared, tiny_split):
    prepared, _ = tiny_prepared
    train = TrainConfig(
        epochs=4, batch_size=64, lr=3e-3, weight_decay=0.01, loss="sampled", sampled_negatives=32, log_every=1000
    )
    model = GenerativeRecommender(
        LMConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_len=20),
        TrainConfig(**{**train.__dict__, "logq_popularity": True}),
    )
    model.fit(tiny_split.train, len(prepared.vocab), tiny_split.valid, vocab=prepared.vocab)
    popularity = PopularityRecommender().fit(tiny_split.train, len(prepared.vocab))
    lm_ndcg = evaluate(model, tiny_split.test)["masked"]["NDCG@10"]
    assert lm_ndcg > 2 * evaluate(popularity, tiny_split.test)["masked"]["NDCG@10"]


def test_bf16_runs_and_stays_close_to_float32():
    hidden, weight, labels = skewed_batch(n_tokens=400, n_items=80, dim=32, seed=1)
    negatives = UniformNegatives(64, seed=0)(weight.shape[0], torch.device("cpu"))
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        results[dtype] = loss_and_grads(
            lambda dtype=dtype: sampled_cross_entropy(hidden, weight, labels, negatives, chunk=128, dtype=dtype),
            hidden,
            weight,
        )
        assert all(t.dtype == torch.float32 for t in results[dtype])  # sums and gradients stay float32
    for exact, low in zip(results[torch.float32], results[torch.bfloat16], strict=True):
        assert not torch.equal(exact, low)  # the products did run in bfloat16
        torch.testing.assert_close(low, exact, rtol=0.05, atol=5e-4)


def test_special_tokens_are_never_drawn_and_get_no_gradient():
    n_items = 30
    assert int(UniformNegatives(5000, seed=0)(n_items, torch.device("cpu")).max()) < n_items  # item rows only
    model = GenerativeRecommender(
        LMConfig(hidden_size=16, num_layers=1, num_heads=1, intermediate_size=32, max_len=10),
        TrainConfig(loss="sampled", sampled_negatives=n_items),
    )
    model.init_model(ItemVocab([str(i) for i in range(n_items)]))
    ids, _, labels = collate([np.array([1, 2, 3, 4]), np.array([5, 6])], model.token_offset)
    NextItemLoss(model)(ids, labels).backward()
    grad = model.lm.get_input_embeddings().weight.grad
    assert torch.count_nonzero(grad[: model.token_offset]) == 0  # <pad>, <bos>: never a candidate
    assert torch.count_nonzero(grad[model.token_offset :].abs().sum(1)) > 6  # drawn items beyond the batch's


def test_a_tiny_run_with_the_sampled_loss_learns(tiny_prepared, tiny_split):
    prepared, _ = tiny_prepared
    model = GenerativeRecommender(
        LMConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_len=20),
        TrainConfig(
            epochs=4, batch_size=64, lr=3e-3, weight_decay=0.01, loss="sampled", sampled_negatives=32, log_every=1000
        ),
    )
    model.fit(tiny_split.train, len(prepared.vocab), tiny_split.valid, vocab=prepared.vocab)
    losses = [entry["loss"] for entry in model.history]
    assert losses[-1] < losses[0]
    popularity = PopularityRecommender().fit(tiny_split.train, len(prepared.vocab))
    lm_ndcg = evaluate(model, tiny_split.test)["masked"]["NDCG@10"]
    pop_ndcg = evaluate(popularity, tiny_split.test)["masked"]["NDCG@10"]
    assert lm_ndcg > 2 * pop_ndcg, (lm_ndcg, pop_ndcg)  # measured: 0.225 against 0.064


def test_bad_loss_settings_are_refused_with_the_setting_named():
    with pytest.raises(ValueError, match="loss must be one of full, sampled, got 'sample'"):
        TrainConfig(loss="sample")
    with pytest.raises(ValueError, match="sampled_negatives must be >= 0"):
        TrainConfig(loss="sampled", sampled_negatives=-1)
    with pytest.raises(ValueError, match="logq_popularity needs loss='sampled' and logq_correction=true"):
        TrainConfig(loss="full", logq_popularity=True)
    with pytest.raises(ValueError, match="amazon.json: loss must be one of"):
        load_preset("amazon", {"loss": "softmax"})
    with pytest.raises(ValueError, match="train.sampled_negatives=1024 is more than the catalogue's 120 items"):
        load_preset("amazon-beauty-34-sampled").check_catalogue(120)

    sequences = Sequences(["a", "b"], [np.arange(10), np.arange(5, 15)])
    too_many = TrainConfig(loss="sampled", sampled_negatives=300, epochs=1)
    tiny = LMConfig(hidden_size=16, num_layers=1, num_heads=1, intermediate_size=32, max_len=10)
    message = "train.sampled_negatives=300 is more than the catalogue's 120 items: lower it or use train.loss='full'"
    with pytest.raises(ValueError, match=re.escape(message)):
        GenerativeRecommender(tiny, too_many).fit(sequences, 120)
    # an ensemble builds every member before training any: the second member's setting stops it up front
    ensemble = EnsembleRecommender(
        [(tiny, TrainConfig(loss="sampled", sampled_negatives=8, epochs=1)), (tiny, too_many)]
    )
    with pytest.raises(ValueError, match="train.sampled_negatives=300"):
        ensemble.fit(sequences, 120)
    assert not ensemble.members[0].stats  # nothing trained


@pytest.mark.parametrize(
    ("preset", "negatives"), [("amazon-beauty-34-sampled", 1024), ("amazon-beauty-34-sampled-4096", 4096)]
)
def test_the_sampled_beauty_presets_are_the_refit_preset_with_the_sampled_loss(preset: str, negatives: int):
    sampled, base = load_preset(preset), load_preset("amazon-beauty-34")
    train = sampled.train
    assert (train.loss, train.sampled_negatives, train.logq_correction, train.logq_popularity) == (
        "sampled",
        negatives,
        True,
        True,
    )
    assert base.train.loss == "full"
    for name in ("lm", "als", "nightly"):
        assert getattr(sampled, name) == getattr(base, name)
    raw = {p: json.loads((PRESETS_DIR / f"{p}.json").read_text()) for p in ("amazon-beauty-34", preset)}
    # the same recipe and refit epochs; only the loss differs
    differs = ("loss", "sampled_negatives", "logq_popularity")
    sampled_train = {k: v for k, v in raw[preset]["train"].items() if k not in differs}
    base_train = {k: v for k, v in raw["amazon-beauty-34"]["train"].items() if k not in differs}
    assert sampled_train == base_train
    assert sampled.train.selected_epochs == base.train.selected_epochs == 34
