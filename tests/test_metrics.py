import numpy as np
import pytest

from recsys.data.sequences import HoldoutSet, Sequences, leave_one_out
from recsys.evaluate import evaluate
from recsys.metrics import NonFiniteScores, ranking_metrics, target_ranks, top_k
from recsys.models.adapters import ExcludingScorer
from recsys.models.base import Scorer


def test_ties_count_against_the_model():
    scores = np.array([[1.0, 1.0, 1.0, 0.5]])
    assert target_ranks(scores, np.array([0]))[0] == 3.0  # two other items tie with it: both count above
    assert target_ranks(scores, np.array([3]))[0] == 4.0
    constant = np.zeros((1, 50))
    assert target_ranks(constant, np.array([7]))[0] == 50.0  # a constant scorer never gets a hit


def test_masked_target_is_a_miss_and_masked_items_do_not_count():
    scores = np.array([[5.0, 4.0, 3.0, 2.0]])
    masked = np.array([[True, False, False, False]])
    assert target_ranks(scores, np.array([2]), masked)[0] == 2.0  # item 0 removed, only item 1 above
    assert np.isinf(target_ranks(scores, np.array([0]), masked)[0])


def test_ranking_metrics_values():
    metrics = ranking_metrics(np.array([1.0, 3.0, np.inf, 60.0]))
    assert metrics["HR@10"] == pytest.approx(0.5)
    assert metrics["NDCG@10"] == pytest.approx((1.0 + 1.0 / np.log2(4.0)) / 4)
    assert metrics["HR@50"] == pytest.approx(0.5)
    assert metrics["HR@200"] == pytest.approx(0.75)
    assert metrics["MRR"] == pytest.approx((1 + 1 / 3 + 0 + 1 / 60) / 4)


def test_top_k_is_sorted_best_first():
    scores = np.array([[0.1, 0.9, 0.5, 0.7]])
    assert top_k(scores, 3).tolist() == [[1, 3, 2]]
    assert top_k(scores, 10).shape == (1, 4)


def test_leave_one_out_follows_the_protocol():
    seqs = Sequences(
        ["a", "b", "c"],
        [np.array([1, 2, 3, 4, 5]), np.array([7, 8]), np.array([9, 9, 6])],
    )
    split = leave_one_out(seqs, max_len=2)
    assert split.test.user_ids == ["a", "c"]  # b has fewer than 3 events: training only
    assert split.test.targets.tolist() == [5, 6]
    assert [x.tolist() for x in split.test.inputs] == [[3, 4], [9, 9]]
    assert split.valid.targets.tolist() == [4, 9]
    assert [x.tolist() for x in split.valid.inputs] == [[2, 3], [9]]
    assert [x.tolist() for x in split.train.items] == [[1, 2, 3], [7, 8], [9]]
    with pytest.raises(ValueError, match="max_len"):
        leave_one_out(seqs, max_len=0)


class FixedScores(Scorer):
    """Every history gets the same scores: the smallest real scorer that can return NaN or infinities."""

    def __init__(self, row: list[float]):
        self.row = np.array(row, dtype=np.float32)
        self.n_items = len(row)

    def score(self, histories):
        return np.tile(self.row, (len(histories), 1))


def _holdout() -> HoldoutSet:
    return HoldoutSet(["a", "b"], [np.array([0]), np.array([1])], np.array([2, 3]))


def test_evaluate_refuses_nan_scores_that_would_rank_first():
    with pytest.raises(NonFiniteScores, match=r"2 of the 2 users .* \(8 of 8 scores\).*Retrain") as refused:
        evaluate(FixedScores([np.nan] * 4), _holdout())  # before the check: HR@10 = NDCG@10 = 1.0
    assert isinstance(refused.value, ValueError)
    with pytest.raises(NonFiniteScores, match=r"2 of the 2 users .* \(2 of 8 scores\)"):
        evaluate(FixedScores([0.0, 0.0, np.inf, 0.0]), _holdout())


def test_evaluate_allows_minus_inf_for_items_a_scorer_cannot_recommend():
    scorer = ExcludingScorer(FixedScores([0.4, 0.3, 0.2, 0.1]), excluded=[3])
    masked = evaluate(scorer, _holdout())["masked"]
    # a's target 2 ranks second (item 0 is masked); b's excluded target 3 ties with nothing above it: last
    assert masked["MRR"] == pytest.approx((1 / 2 + 1 / 3) / 2)
