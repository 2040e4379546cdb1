"""The training-only attention and dropout (training/lm/attention.py) and the weight average in the loop."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recsys.data.sequences import Sequences
from recsys.data.vocab import ItemVocab
from training.lm.attention import dropped_mask, fast_dropout, train_attention, training_attention
from training.lm.model import GenerativeRecommender, LMConfig, TrainConfig
from training.lm.train import WeightAverage, collate, next_item_loss


def _tiny_model(n_items: int = 40, dropout: float = 0.0) -> GenerativeRecommender:
    cfg = LMConfig(hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, max_len=12)
    cfg.attention_dropout = cfg.embedding_dropout = dropout
    model = GenerativeRecommender(cfg, TrainConfig(seed=0))
    model.init_model(ItemVocab([str(i) for i in range(n_items)]))
    return model


def test_dropout_masks_drop_at_the_asked_rate_and_keep_the_mean():
    torch.manual_seed(0)
    dropped, rescale = dropped_mask((1000, 1000), 0.2, torch.device("cpu"))
    assert dropped.dtype == torch.bool
    assert abs(dropped.float().mean().item() - 51 / 256) < 0.002  # p rounded to 51/256
    assert rescale == pytest.approx(256 / 205)
    out = fast_dropout(torch.ones(1000, 1000), 0.2, training=True)
    assert abs(out.mean().item() - 1.0) < 0.01
    assert torch.unique(out).tolist() == pytest.approx([0.0, 256 / 205])
    x = torch.randn(5, 5)
    assert fast_dropout(x, 0.2, training=False) is x
    for bad in (1.0, 0.999, -0.1):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            dropped_mask((3,), bad, torch.device("cpu"))


def test_train_attention_is_causal_attention_with_the_drawn_mask():
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 7, 8) for _ in range(3))
    module = torch.nn.Module()
    torch.manual_seed(5)
    dropped, rescale = dropped_mask((3, 2, 7, 7), 0.3, q.device)
    torch.manual_seed(5)
    out, _ = train_attention(module, q, k, v, None, dropout=0.3, scaling=8**-0.5)
    future = torch.ones(7, 7, dtype=torch.bool).triu(1)
    weights = torch.softmax((q @ k.transpose(-1, -2)) / 8**0.5 + torch.where(future, -torch.inf, 0.0), dim=-1)
    expected = ((weights * ~dropped) @ v * rescale).transpose(1, 2)
    torch.testing.assert_close(out, expected)
    # without dropout it is exactly the stock causal attention
    out, _ = train_attention(module, q, k, v, None, dropout=0.0, scaling=8**-0.5)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2))


def test_training_loss_needs_no_padding_mask_and_the_implementation_is_restored():
    """Right-padded rows give the loss they give alone: padding never reaches a real position."""
    model = _tiny_model(dropout=0.2)
    rng = np.random.default_rng(0)
    windows = [rng.integers(0, 40, size=n) for n in (12, 7, 4)]
    model.lm.eval()  # no dropout: the losses must match exactly
    with training_attention(model.lm):
        assert model.lm.config._attn_implementation != "sdpa"
        ids, mask, labels = collate(windows, model.token_offset)
        together = next_item_loss(model, ids, labels).item()
        alone = []
        for w in windows:
            ids, _, labels = collate([w], model.token_offset)
            alone.append(next_item_loss(model, ids, labels).item() * (len(w) - 1))
        model.lm.train()  # with dropout the loss is random but finite and differs between draws
        ids, mask, labels = collate(windows, model.token_offset)
        draws = {round(next_item_loss(model, ids, labels).item(), 6) for _ in range(3)}
    assert together == pytest.approx(sum(alone) / int(mask.sum()), rel=1e-5)
    assert len(draws) == 3 and all(np.isfinite(list(draws)))
    assert model.lm.config._attn_implementation == "sdpa"


def test_weight_average_follows_the_ema_and_swaps_back_and_forth():
    model = _tiny_model()
    average = WeightAverage(model, decay=0.5)
    param = average.params[0]
    start = param.detach().clone()
    with torch.no_grad():
        param.add_(1.0)
    average.update()  # first update: decay min(0.5, 2/11) = 2/11
    expected = start + (1 - 2 / 11)
    torch.testing.assert_close(average.average[0], expected)
    average.swap()
    torch.testing.assert_close(param.detach(), expected)
    average.swap()
    torch.testing.assert_close(param.detach(), start + 1.0)
    with pytest.raises(ValueError, match="ema_decay"):
        WeightAverage(model, decay=1.0)


def test_training_with_an_average_ends_on_the_averaged_weights():
    rng = np.random.default_rng(0)
    seqs = Sequences([str(i) for i in range(100)], [(rng.integers(0, 30) + np.arange(8)) % 30 for _ in range(100)])
    cfg = LMConfig(hidden_size=16, num_layers=1, num_heads=1, intermediate_size=32, max_len=10)

    def run(ema):
        model = GenerativeRecommender(cfg, TrainConfig(epochs=2, batch_size=32, ema_decay=ema, log_every=1000))
        return model.fit(seqs, 30).score(seqs.items[:5])

    plain, averaged = run(0.0), run(0.9)
    assert np.isfinite(averaged).all()
    assert not np.allclose(plain, averaged)  # same seed and batches: only the averaging differs
