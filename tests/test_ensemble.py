"""Ensembles of LMs: the sum of the members' scores, trained from a preset, saved, exported as one bundle."""

import json

import numpy as np
import pytest

from recsys.bundle.reader import BundleRecommender
from recsys.evaluate import evaluate
from recsys.metrics import top_k
from training import pipeline
from training.export import export_bundle
from training.lm.ensemble import EnsembleRecommender
from training.presets import load_preset

PRESET = {
    "description": "two small members: one in float32, one trained in bfloat16",
    "max_len": 20,
    "lm": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
    "train": {"epochs": 6, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.01, "patience": 3, "log_every": 1000},
    "members": [
        {"lm": {"hidden_size": 16}},
        {"train": {"precision": "bf16", "ema_decay": 0.9}},
    ],
}


@pytest.fixture(scope="module")
def ensemble(tiny_prepared, tiny_split, tmp_path_factory):
    path = tmp_path_factory.mktemp("presets") / "two.json"
    path.write_text(json.dumps(PRESET))
    model = pipeline.new_model("lm", load_preset(str(path), {"seed": 3}))
    prepared, _ = tiny_prepared
    stats = pipeline.fit(model, tiny_split, prepared)
    return model, stats


def test_preset_members_override_what_they_share(tmp_path):
    path = tmp_path / "two.json"
    path.write_text(json.dumps(PRESET))
    preset = load_preset(str(path), {"seed": 3})
    (lm0, train0), (lm1, train1) = preset.members
    assert (lm0.hidden_size, lm1.hidden_size) == (16, 32)
    assert (lm0.num_layers, lm1.max_len, train0.lr) == (1, 20, 3e-3)  # shared entries reach every member
    assert (train0.precision, train1.precision, train1.ema_decay) == ("fp32", "bf16", 0.9)
    assert train0.seed == train1.seed == 3  # the override reaches every member; the ensemble offsets it
    model = pipeline.new_model("lm", preset)
    assert [m.train_config.seed for m in model.members] == [3, 4]


def test_ensemble_scores_are_the_sum_of_its_members(ensemble, tiny_split):
    model, stats = ensemble
    histories = tiny_split.test.inputs[:50]
    first, second = model.members
    expected = first.score(histories) + second.score(histories)
    np.testing.assert_allclose(model.score(histories), expected, rtol=1e-4, atol=1e-4)
    assert model.item_embeddings().shape == (model.n_items, 16 + 32)
    assert len(stats["members"]) == 2 and stats["train_wall_s"] > 0
    for member in model.members:  # both learnt, the bfloat16 one included
        losses = [entry["loss"] for entry in member.history]
        assert losses[-1] < losses[0]
        assert all(p.dtype.is_floating_point and p.itemsize == 4 for p in member.lm.parameters())


def test_ensemble_beats_popularity_and_round_trips(ensemble, tiny_prepared, tiny_split, tmp_path):
    from recsys.models.popularity import PopularityRecommender

    model, _ = ensemble
    prepared, _ = tiny_prepared
    popularity = PopularityRecommender().fit(tiny_split.train, len(prepared.vocab))
    ndcg = evaluate(model, tiny_split.test)["masked"]["NDCG@10"]
    assert ndcg > 1.5 * evaluate(popularity, tiny_split.test)["masked"]["NDCG@10"]
    model.save(tmp_path / "ensemble")
    reloaded = pipeline.load_model(tmp_path / "ensemble")
    assert isinstance(reloaded, EnsembleRecommender)
    histories = tiny_split.test.inputs[:20]
    np.testing.assert_allclose(reloaded.score(histories), model.score(histories), rtol=1e-5, atol=1e-5)


def test_ensemble_exports_one_encoder_and_one_index_serving_its_top_k(ensemble, tiny_prepared, tiny_split, tmp_path):
    model, _ = ensemble
    prepared, _ = tiny_prepared
    sequences = pipeline.build_sequences(prepared.events, prepared.vocab)
    bundle_dir = export_bundle(model, sequences, tmp_path / "bundles", prepared.catalogue, {"metrics": {}})
    engine = BundleRecommender(bundle_dir)
    histories = tiny_split.test.inputs[:60]
    assert np.abs(engine.user_vectors(histories) - model.user_vectors(histories)).max() <= 1e-4
    np.testing.assert_array_equal(top_k(engine.score(histories), 10), top_k(model.score(histories), 10))
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["model"]["kind"] == "lm-ensemble" and manifest["model"]["hidden_size"] == 48


def test_bad_ensembles_are_rejected_with_a_reason(tmp_path):
    one = {**PRESET, "members": PRESET["members"][:1]}
    path = tmp_path / "one.json"
    path.write_text(json.dumps(one))
    with pytest.raises(ValueError, match="at least 2 members"):
        pipeline.new_model("lm", load_preset(str(path)))
    path.write_text(json.dumps(PRESET))
    with pytest.raises(ValueError, match="refit_with_valid is not supported"):
        pipeline.new_model("lm", load_preset(str(path), {"refit_with_valid": True}))
    with pytest.raises(ValueError, match="trained from scratch"):
        pipeline.new_model("lm", load_preset(str(path)), base_model=tmp_path)
