"""Cold-start items: a new catalogue item becomes recommendable from its text, without retraining."""

import copy

import numpy as np
import pytest

from serving.engine import BundleRecommender
from training import pipeline
from training.export import export_bundle
from training.text_embeddings import TextEncoder, TextProjection, add_items_from_text, item_texts


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

    # and the online path serves it: export a bundle from the updated model (no training step in between)
    sequences = pipeline.build_sequences(prepared.events, prepared.vocab)
    bundle_dir = export_bundle(model, sequences, tmp_path / "bundles", prepared.catalogue, promote=True)
    engine = BundleRecommender(bundle_dir)
    answers = [engine.recommend_for_history([model.vocab.item_ids[i] for i in h], k=10) for h in users]
    assert np.mean(["NEW-LISTING" in a.item_ids for a in answers]) >= 0.8
