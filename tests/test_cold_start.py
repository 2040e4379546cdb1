"""Cold-start items: a new catalogue item becomes recommendable from its text, without retraining."""

import copy

import numpy as np
import pytest

from recsys.data.sequences import HoldoutSet
from recsys.evaluate import evaluate
from recsys.metrics import ranking_metrics
from training import pipeline
from training.bench.cold_start import SelectionRanker
from training.coldstart.text_embeddings import (
    KnnProjection,
    TextEncoder,
    TextProjection,
    add_items_from_text,
    item_texts,
    load_projection,
)


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder()


def test_text_encoder_gives_normalised_embeddings_that_reflect_meaning(encoder):
    vectors = encoder.encode(["hydrating face serum 30 ml", "moisturising facial serum", "steel hex bolts, 100 pcs"])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_projection_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x, true_w = rng.normal(size=(200, 8)), rng.normal(size=(8, 4))
    projection = TextProjection.fit(x, x @ true_w + 0.5, l2=1e-6)
    np.testing.assert_allclose(projection(x), x @ true_w + 0.5, atol=1e-3)
    projection.save(tmp_path / "p.safetensors")
    np.testing.assert_allclose(TextProjection.load(tmp_path / "p.safetensors")(x), projection(x), atol=1e-6)


def test_norm_matched_ridge_gives_rows_of_the_median_warm_norm(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(300, 16)), rng.normal(size=(300, 8)) * rng.uniform(0.5, 3.0, size=(300, 1))
    median = np.median(np.linalg.norm(y, axis=1))
    for projection in (
        TextProjection.fit(x, y, 10.0, match_norm=True),
        TextProjection.fit(x, y, 10.0, unit_targets=True),
    ):
        np.testing.assert_allclose(np.linalg.norm(projection(x[:20]), axis=1), median, rtol=1e-4)
        projection.save(tmp_path / "r.safetensors")
        np.testing.assert_allclose(load_projection(tmp_path / "r.safetensors")(x[:20]), projection(x[:20]), atol=1e-6)
    assert np.linalg.norm(TextProjection.fit(x, y, 10.0)(x), axis=1).mean() < 0.5 * median  # why: plain ridge shrinks


def test_knn_projection_follows_the_most_similar_items_and_round_trips(tmp_path):
    rng = np.random.default_rng(2)
    keys, rows = rng.normal(size=(100, 12)), rng.normal(size=(100, 6)) * rng.uniform(0.5, 3.0, size=(100, 1))
    twin_queries = keys[[3, 40]] * 2.0  # same direction as items 3 and 40: cosine 1
    np.testing.assert_allclose(
        KnnProjection.fit(keys, rows, k=1, norm_scale=1.0)(twin_queries), rows[[3, 40]], rtol=1e-5
    )
    projection = KnnProjection.fit(keys, rows, k=10, temperature=0.05, match_norm=True)
    index, weights = projection.neighbours(twin_queries)
    assert index.shape == (2, 10) and np.allclose(weights.sum(1), 1.0)
    projected = projection(twin_queries)
    expected_norm = (weights * np.linalg.norm(rows, axis=1)[index]).sum(1) * projection.norm_scale
    np.testing.assert_allclose(np.linalg.norm(projected, axis=1), expected_norm, rtol=1e-4)
    cosine = (
        np.sum(projected * rows[[3, 40]], 1) / np.linalg.norm(projected, axis=1) / np.linalg.norm(rows[[3, 40]], axis=1)
    )
    assert np.all(cosine > 0.5)  # dominated by the twin
    projection.save(tmp_path / "k.safetensors")
    loaded = load_projection(tmp_path / "k.safetensors")
    assert isinstance(loaded, KnnProjection) and (loaded.k, loaded.temperature) == (10, 0.05)
    np.testing.assert_allclose(loaded(twin_queries), projected, atol=1e-6)


def test_selection_ranks_match_the_evaluator(tiny_lm, tiny_split):
    """The fast selection ranker scores cold rows without the model; it must agree with `evaluate`."""
    model = copy.deepcopy(tiny_lm)
    n_warm = model.n_items
    rng = np.random.default_rng(3)
    cold_rows = (model.item_embeddings().detach().numpy()[rng.choice(n_warm, 6)] * 1.5).astype(np.float32)
    valid = tiny_split.valid
    targets = valid.targets.copy()
    targets[::3] = n_warm + rng.integers(0, len(cold_rows), size=len(targets[::3]))  # some targets are cold items
    holdout = HoldoutSet(valid.user_ids, valid.inputs, targets)
    ranks = SelectionRanker(model, holdout, n_warm).ranks(cold_rows)
    add_items_from_text(model, [f"COLD-{i}" for i in range(len(cold_rows))], cold_rows, lambda rows: rows)
    expected = evaluate(model, holdout)["masked"]
    got = ranking_metrics(ranks)
    for key in ("HR@10", "NDCG@10", "HR@50", "MRR"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6)


def test_new_item_becomes_recommendable_after_a_catalogue_update(encoder, tiny_prepared, tiny_split, tiny_lm, tmp_path):
    prepared, _ = tiny_prepared
    model = copy.deepcopy(tiny_lm)
    histories = tiny_split.test.inputs[:50]
    top, _ = model.recommend(histories, k=1)
    twin_of = model.vocab.item_ids[int(np.bincount(top[:, 0]).argmax())]  # the item most often ranked first
    # a catalogue update: a new listing of the same product (same text), never seen in any event
    texts = encoder.encode(item_texts(prepared.catalogue, model.vocab.item_ids + [twin_of]))
    projection = TextProjection.fit(texts[:-1], model.item_embeddings().detach().numpy(), l2=0.01)
    n_before = model.n_items
    add_items_from_text(model, ["NEW-LISTING"], texts[-1:], projection)
    assert model.n_items == n_before + 1 and "NEW-LISTING" in model.vocab

    new_index = model.vocab.index_of("NEW-LISTING")
    users = [h for h, t in zip(histories, top[:, 0], strict=True) if model.vocab.item_ids[t] == twin_of]
    items, _ = model.recommend(users, k=10)
    assert np.mean([new_index in row for row in items]) >= 0.8  # ranks beside its twin for the twin's fans

    # the kNN projector (the cold-start default) puts the new listing beside its twin too
    knn_model = copy.deepcopy(tiny_lm)
    knn = KnnProjection.fit(texts[:-1], knn_model.item_embeddings().detach().numpy())
    add_items_from_text(knn_model, ["NEW-LISTING"], texts[-1:], knn)
    knn_items, _ = knn_model.recommend(users, k=10)
    assert np.mean([knn_model.vocab.index_of("NEW-LISTING") in row for row in knn_items]) >= 0.8

    # and the online path serves it: export a bundle from the updated model (no training step in between)
    from recsys.bundle.reader import BundleRecommender
    from training.export import export_bundle

    sequences = pipeline.build_sequences(prepared.events, prepared.vocab)
    bundle_dir = export_bundle(model, sequences, tmp_path / "bundles", prepared.catalogue, promote=True)
    engine = BundleRecommender(bundle_dir)
    answers = [engine.recommend_for_history([model.vocab.item_ids[i] for i in h], k=10) for h in users]
    assert np.mean(["NEW-LISTING" in a.item_ids for a in answers]) >= 0.8
