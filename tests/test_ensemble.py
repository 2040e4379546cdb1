import numpy as np
import pytest

from recsys.models.base import Scorer
from recsys.models.ensemble import ScoreEnsemble


class Fixed(Scorer):
    def __init__(self, scores):
        self.scores = np.asarray(scores, dtype=np.float32)
        self.n_items = self.scores.shape[1]

    def score(self, histories):
        return np.repeat(self.scores, len(histories), axis=0)


def test_one_member_keeps_its_ranking_and_members_on_other_scales_count_equally():
    a = Fixed([[3.0, 1.0, 2.0, 0.0]])
    assert np.argsort(-ScoreEnsemble([a]).score([np.array([0])])[0]).tolist() == [0, 2, 1, 3]
    # b prefers item 3 strongly but on a tiny scale; scaled 100x it must dominate the same way
    b_small, b_large = Fixed([[0.0, 0.0, 0.0, 0.05]]), Fixed([[0.0, 0.0, 0.0, 5.0]])
    small = ScoreEnsemble([a, b_small]).score([np.array([0])])[0]
    large = ScoreEnsemble([a, b_large]).score([np.array([0])])[0]
    assert small.argmax() == 0 and large.argmax() == 3


def test_members_must_score_the_same_catalogue():
    with pytest.raises(ValueError, match="different catalogues"):
        ScoreEnsemble([Fixed([[1.0, 2.0]]), Fixed([[1.0, 2.0, 3.0]])])
    with pytest.raises(ValueError, match="at least one"):
        ScoreEnsemble([])
