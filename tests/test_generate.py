"""Generated slates and the multi-step holdout."""

import numpy as np
import pytest

from recsys.data.sequences import Sequences, multi_step_holdout
from training.lm.generate import generate_slates, slate_metrics


def test_multi_step_holdout_never_trains_on_the_future():
    seqs = Sequences(["a", "b"], [np.arange(10), np.arange(6)])
    holdout = multi_step_holdout(seqs, n=5, max_len=3)
    assert holdout.user_ids == ["a"]  # b has fewer than n + 3 events: training only
    assert holdout.futures[0].tolist() == [5, 6, 7, 8, 9]
    assert holdout.inputs[0].tolist() == [2, 3, 4]
    assert holdout.train.items[0].tolist() == [0, 1, 2, 3]
    assert holdout.valid.targets.tolist() == [4]
    assert holdout.train.items[1].tolist() == list(range(6))
    with pytest.raises(ValueError):
        multi_step_holdout(seqs, n=0, max_len=3)


def test_generated_slates_have_no_repeats_and_skip_history(tiny_lm, tiny_split):
    histories = tiny_split.test.inputs[:10]
    for width in (1, 3):
        slates = generate_slates(tiny_lm, histories, n=5, beam_width=width)
        assert slates.shape == (10, 5)
        for slate, history in zip(slates, histories, strict=True):
            assert len(set(slate.tolist())) == 5
            assert not set(slate.tolist()) & set(history.tolist())


def test_greedy_first_item_is_the_top_ranked_item(tiny_lm, tiny_split):
    histories = tiny_split.test.inputs[:10]
    greedy = generate_slates(tiny_lm, histories, n=3, beam_width=1)
    top, _ = tiny_lm.recommend(histories, k=1)
    np.testing.assert_array_equal(greedy[:, 0], top[:, 0])


def test_slate_metrics():
    slates = np.array([[1, 2, 3], [4, 5, 6]])
    futures = [np.array([1, 9, 3]), np.array([7, 8, 9])]
    metrics = slate_metrics(slates, futures)
    assert metrics["precision@3"] == pytest.approx((2 / 3) / 2)
    assert metrics["first_hit"] == pytest.approx(0.5)
    assert metrics["next_item_in_slate"] == pytest.approx(0.5)
    ideal = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert metrics["ndcg@3"] == pytest.approx(((1 + 1 / np.log2(4)) / ideal) / 2)
