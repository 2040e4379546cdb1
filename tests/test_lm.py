"""The generative model: learns sequential structure, persists, warm-starts by item ID, is reproducible."""

import numpy as np
import pytest
import torch

from recsys.data.sequences import Sequences
from recsys.data.vocab import ItemVocab
from recsys.evaluate import evaluate
from recsys.models.als import ALSRecommender
from recsys.models.popularity import PopularityRecommender
from training.lm.model import GenerativeRecommender, LMConfig, TrainConfig


def test_lm_beats_popularity_clearly_on_synthetic(tiny_prepared, tiny_split, tiny_lm):
    prepared, _ = tiny_prepared
    popularity = PopularityRecommender().fit(tiny_split.train, len(prepared.vocab))
    lm_ndcg = evaluate(tiny_lm, tiny_split.test)["masked"]["NDCG@10"]
    pop_ndcg = evaluate(popularity, tiny_split.test)["masked"]["NDCG@10"]
    assert lm_ndcg > 1.5 * pop_ndcg and lm_ndcg - pop_ndcg > 0.03, (lm_ndcg, pop_ndcg)


def test_every_model_shares_the_interface(tiny_prepared, tiny_split, tiny_lm, tmp_path):
    prepared, _ = tiny_prepared
    n_items = len(prepared.vocab)
    models = [
        PopularityRecommender().fit(tiny_split.train, n_items),
        ALSRecommender(factors=16, iterations=5).fit(tiny_split.train, n_items),
        tiny_lm,
    ]
    histories = tiny_split.test.inputs[:8]
    for model in models:
        items, scores = model.recommend(histories, k=5)
        assert items.shape == (8, 5)
        for row, history in enumerate(histories):
            assert not set(items[row]) & set(history.tolist())  # seen items excluded by default
            assert np.all(np.diff(scores[row]) <= 1e-6)  # best first
        model.save(tmp_path / model.kind)
        reloaded = type(model).load(tmp_path / model.kind)
        np.testing.assert_allclose(reloaded.score(histories), model.score(histories), rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="k must be"):
            model.recommend(histories, k=0)


def test_checkpoint_is_safetensors_with_tied_embeddings(tiny_lm, tmp_path):
    tiny_lm.save(tmp_path / "lm")
    assert (tmp_path / "lm" / "model.safetensors").exists()
    assert not list((tmp_path / "lm").glob("*.bin")) and not list((tmp_path / "lm").glob("*.pt"))
    lm = GenerativeRecommender.load(tmp_path / "lm").lm
    assert lm.get_input_embeddings().weight.data_ptr() == lm.get_output_embeddings().weight.data_ptr()


def test_a_checkpoint_whose_card_has_the_removed_extra_field_still_loads(tiny_lm, tmp_path):
    import json

    tiny_lm.save(tmp_path / "old")
    card = json.loads((tmp_path / "old" / "model.json").read_text())
    card["train_config"]["extra"] = {}  # what cards said before TrainConfig.extra was removed
    (tmp_path / "old" / "model.json").write_text(json.dumps(card))
    assert GenerativeRecommender.load(tmp_path / "old").train_config == tiny_lm.train_config


def test_the_lm_config_owns_the_presets_max_len():
    from training.presets import available, load_preset

    for name in available():
        preset = load_preset(name)
        assert preset.max_len == preset.lm.max_len > 0
        assert all(lm.max_len == preset.max_len for lm, _ in preset.members)
    assert load_preset("movielens").max_len == 200


def test_warm_start_maps_item_rows_by_id_and_adds_new_items(tiny_lm, tmp_path):
    tiny_lm.save(tmp_path / "prev")
    old_vocab = tiny_lm.vocab
    # new vocabulary: reversed order, two items dropped, two new items
    new_ids = list(reversed(old_vocab.item_ids[2:])) + ["NEW-1", "NEW-2"]
    model = GenerativeRecommender(base_model=tmp_path / "prev")
    model.init_model(ItemVocab(new_ids))
    old_rows = tiny_lm.item_embeddings().detach()
    new_rows = model.item_embeddings().detach()
    assert new_rows.shape[0] == len(new_ids)
    for item_id in (old_vocab.item_ids[2], old_vocab.item_ids[-1]):
        old = old_rows[old_vocab.index_of(item_id)]
        new = new_rows[new_ids.index(item_id)]
        torch.testing.assert_close(new, old)
    assert not torch.equal(new_rows[-1], new_rows[-2])  # new items get their own fresh rows
    # the transformer blocks carry over unchanged
    for (name, a), (_, b) in zip(
        tiny_lm.lm.get_decoder().layers.named_parameters(),
        model.lm.get_decoder().layers.named_parameters(),
        strict=True,
    ):
        torch.testing.assert_close(a, b, msg=name)


def test_shrink_and_perturb_scales_matrices_keeps_norms_and_rejects_bad_factors(tiny_lm, tmp_path):
    from training.nightly.candidate import shrink_and_perturb

    tiny_lm.save(tmp_path / "prev")

    def warm() -> GenerativeRecommender:
        model = GenerativeRecommender(base_model=tmp_path / "prev")
        model.init_model(tiny_lm.vocab)
        return model

    before = dict(warm().lm.named_parameters())
    unchanged = warm()
    shrink_and_perturb(unchanged, 1.0, seed=0)  # 1.0: the plain warm start
    for name, param in unchanged.lm.named_parameters():
        torch.testing.assert_close(param, before[name], msg=name)

    shrunk = warm()
    shrink_and_perturb(shrunk, 0.5, seed=0)
    noise_std = shrunk.config.init_std * 0.5
    for name, param in shrunk.lm.named_parameters():
        if param.dim() >= 2:  # half the old weights plus noise of the init scale times the other half
            old = before[name].detach().flatten()
            residual = param.detach().flatten() - 0.5 * old
            assert 0.5 * noise_std < residual.std().item() < 1.5 * noise_std, name
            assert abs(torch.corrcoef(torch.stack([residual, old]))[0, 1].item()) < 0.2, name  # fresh noise
        else:  # norm gains untouched: layers keep their input scale
            torch.testing.assert_close(param, before[name], msg=name)
    again = warm()
    shrink_and_perturb(again, 0.5, seed=0)
    for (name, a), (_, b) in zip(shrunk.lm.named_parameters(), again.lm.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)  # seeded: the nightly candidate is reproducible
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="shrink_perturb"):
            shrink_and_perturb(warm(), bad, seed=0)


def _toy_sequences(seed: int = 0) -> Sequences:
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(200):
        start = rng.integers(0, 30)
        items.append((start + np.arange(rng.integers(4, 12))) % 30)
    return Sequences([str(i) for i in range(200)], items)


def test_training_is_reproducible_for_a_seed():
    seqs = _toy_sequences()
    cfg = LMConfig(hidden_size=16, num_layers=1, num_heads=1, intermediate_size=32, max_len=10)

    def run(seed):
        model = GenerativeRecommender(cfg, TrainConfig(epochs=2, batch_size=32, seed=seed, log_every=1000))
        model.fit(seqs, 30)
        return model.score(seqs.items[:5])

    np.testing.assert_allclose(run(0), run(0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(run(0), run(1))


def test_frozen_layers_do_not_change():
    seqs = _toy_sequences()
    cfg = LMConfig(hidden_size=16, num_layers=2, num_heads=1, intermediate_size=32, max_len=10)
    model = GenerativeRecommender(cfg, TrainConfig(epochs=1, batch_size=32, freeze_layers=1, log_every=1000))
    model.init_model(ItemVocab([str(i) for i in range(30)]))
    before = [p.detach().clone() for p in model.lm.get_decoder().layers[0].parameters()]
    upper = [p.detach().clone() for p in model.lm.get_decoder().layers[1].parameters()]
    model.fit(seqs, 30)
    for a, b in zip(before, model.lm.get_decoder().layers[0].parameters(), strict=True):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(upper, model.lm.get_decoder().layers[1].parameters(), strict=True))


def test_refit_trains_again_on_the_validation_events_for_the_chosen_epochs(tiny_prepared, tiny_split):
    from training import pipeline

    prepared, _ = tiny_prepared
    cfg = LMConfig(hidden_size=16, num_layers=1, num_heads=1, intermediate_size=32, max_len=20)
    model = GenerativeRecommender(cfg, TrainConfig(epochs=4, batch_size=64, patience=2, refit_with_valid=True))
    stats = pipeline.fit(model, tiny_split, prepared)
    assert stats["epochs"] == stats["selection"]["best_epoch"]  # the refit ran exactly the chosen epochs
    assert set(stats["valid_metrics"]) >= {"HR@10", "NDCG@10"}  # valid is measured before the refit saw it
    assert sum(map(len, tiny_split.train_with_valid.items)) == sum(map(len, tiny_split.train.items)) + len(
        tiny_split.valid
    )
