"""The item index: exact below a catalogue size, approximate above it, its kind and search parameters through
the bundle manifest, and seen items still left out when the reader searches an approximate index."""

from __future__ import annotations

import json
import re
import shutil

import faiss
import numpy as np
import pytest

from recsys import bundle
from recsys.bundle.reader import BundleRecommender
from recsys.index import AUTO_APPROXIMATE, FLAT, IndexParams, ItemIndex


def _catalogue(n_items: int, n_users: int = 100, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Item vectors whose norms vary and user vectors ~40x longer, the shape of a trained LM's vectors."""
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(n_items, dim)) * rng.lognormal(-0.6, 0.3, size=(n_items, 1)) / np.sqrt(dim)
    users = rng.normal(size=(n_users, dim))
    users *= 24.0 / np.linalg.norm(users, axis=1, keepdims=True)
    return items.astype(np.float32), users.astype(np.float32)


def _ids(n: int) -> list[str]:
    return [f"SKU-{i:05d}" for i in range(n)]


@pytest.mark.parametrize(
    "params",
    [
        # efSearch >= n explores all of the graph that can be reached; a sparse build (M 16, efConstruction 40)
        # left ~1% of these items with no way in, a denser one reaches them all
        IndexParams(kind="hnsw", hnsw_m=32, hnsw_ef_construction=200, hnsw_ef_search=2000),
        IndexParams(kind="ivf", ivf_nlist=32, ivf_nprobe=32),
    ],
    ids=["hnsw-ef-search-covers-all", "ivf-probes-every-cell"],
)
def test_exhaustive_approximate_search_returns_the_exact_top_k(params):
    items, users = _catalogue(2000)
    exact_rows, exact_scores = ItemIndex.build(items, _ids(2000), FLAT).search(users, 20)
    rows, scores = ItemIndex.build(items, _ids(2000), params).search(users, 20)
    np.testing.assert_array_equal(rows, exact_rows)
    np.testing.assert_allclose(scores, exact_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_default_search_settings_find_the_exact_top_10_on_a_random_catalogue(kind):
    items, users = _catalogue(20_000, n_users=200, seed=1)
    index = ItemIndex.build(items, _ids(len(items)), IndexParams(kind=kind))
    if kind == "ivf":
        assert index.params.ivf_nprobe < index.params.ivf_nlist  # not an exhaustive search in disguise
    else:
        assert index.params.hnsw_ef_search < len(items)
    assert index.recall(users, k=10) >= 0.95  # the index alone, top-10 asked
    assert index.recall(users, k=10, fetch=60) >= 0.97  # as the reader asks: 10 + seen items


def test_every_search_fills_k_rows_even_when_the_probed_cells_hold_fewer():
    items, users = _catalogue(1000)
    index = ItemIndex.build(items, _ids(1000), IndexParams(kind="ivf", ivf_nlist=64, ivf_nprobe=1))
    rows, scores = index.search(users, 100)  # one cell holds ~16 items
    assert (rows >= 0).all() and all(len(set(row)) == 100 for row in rows)
    assert np.all(np.diff(scores, axis=1) <= 0)
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", users, items[rows]), rtol=1e-5, atol=1e-5)


def test_auto_is_exact_below_the_threshold_and_approximate_from_it():
    items, _ = _catalogue(600)
    params = IndexParams(approximate_from=500)
    small = ItemIndex.build(items[:499], _ids(499), params)
    large = ItemIndex.build(items, _ids(600), params)
    assert small.params.kind == "flat" and isinstance(small.index, faiss.IndexFlatIP)
    assert large.params.kind == AUTO_APPROXIMATE and large.params.approximate
    np.testing.assert_array_equal(large.embeddings(), items)  # the item vectors, without the search coordinate
    assert large.dim == small.dim == items.shape[1]


@pytest.mark.parametrize(
    "params",
    [
        IndexParams(kind="hnsw", hnsw_m=12, hnsw_ef_construction=30, hnsw_ef_search=77),
        IndexParams(kind="ivf", ivf_nlist=16, ivf_nprobe=5),
        FLAT,
    ],
    ids=["hnsw", "ivf", "flat"],
)
def test_saved_index_loads_with_its_kind_and_search_parameters(tmp_path, params):
    items, users = _catalogue(1000)
    built = ItemIndex.build(items, _ids(1000), params)
    built.save(tmp_path)
    manifest = json.loads(json.dumps({"index": built.params.manifest_entry()}))  # as a manifest stores it
    loaded = ItemIndex.load(tmp_path, IndexParams.from_manifest(manifest))
    assert loaded.params.manifest_entry() == built.params.manifest_entry() == manifest["index"]
    if params.kind == "hnsw":
        assert loaded.index.hnsw.efSearch == 77
    if params.kind == "ivf":
        assert loaded.index.nprobe == 5
    np.testing.assert_array_equal(loaded.search(users, 10)[0], built.search(users, 10)[0])
    np.testing.assert_array_equal(loaded.embeddings(), items)


def test_a_manifest_without_the_index_entry_means_flat_and_a_wrong_kind_is_refused(tmp_path):
    assert IndexParams.from_manifest({"model": {"kind": "lm"}}) == FLAT
    items, _ = _catalogue(200)
    ItemIndex.build(items, _ids(200), FLAT).save(tmp_path)
    assert ItemIndex.load(tmp_path, IndexParams.from_manifest({})).params == FLAT
    with pytest.raises(ValueError, match=r"items\.faiss holds a FAISS IndexFlatIP but index\.kind is 'hnsw'"):
        ItemIndex.load(tmp_path, IndexParams(kind="hnsw"))
    with pytest.raises(ValueError, match="unknown fields"):
        IndexParams.from_manifest({"index": {"kind": "ivf", "ivf_nprobes": 3}})


def test_an_index_kind_that_does_not_exist_is_a_one_line_error_naming_the_setting():
    with pytest.raises(ValueError, match=re.escape("index.kind='annoy' is not one of 'auto', 'flat', 'hnsw', 'ivf'")):
        IndexParams(kind="annoy")
    with pytest.raises(ValueError, match=re.escape("index.hnsw_ef_search=0 must be an integer >= 1")):
        IndexParams(hnsw_ef_search=0)
    with pytest.raises(ValueError, match=re.escape("index.ivf_nlist=64 needs at least 64 items")):
        IndexParams(kind="ivf", ivf_nlist=64).resolve(10)


def test_an_old_bundle_without_the_index_entry_loads_as_flat(tiny_bundle, tmp_path):
    _, bundle_dir = tiny_bundle
    old = tmp_path / bundle_dir.name
    shutil.copytree(bundle_dir, old)
    manifest = json.loads((old / "manifest.json").read_text())
    assert manifest.pop("index") == {"kind": "flat"}  # the tiny catalogue is far below the threshold
    (old / "manifest.json").write_text(json.dumps(manifest))  # the manifest is not among its own checksums
    engine = BundleRecommender(old)
    assert engine.index.params == FLAT
    engine.smoke_check()


def _export(tiny_prepared, tiny_lm, root, params):
    from training import pipeline
    from training.export import export_bundle

    prepared, _ = tiny_prepared
    sequences = pipeline.build_sequences(prepared.events, prepared.vocab)
    return export_bundle(tiny_lm, sequences, root, prepared.catalogue, {"metrics": {}}, index=params)


def test_the_reader_leaves_seen_items_out_with_an_approximate_index(tiny_prepared, tiny_lm, tiny_split, tmp_path):
    # 8 cells of ~15 items and one probed: most searches for 10 + seen items come back short and are redone
    bundle_dir = _export(tiny_prepared, tiny_lm, tmp_path, IndexParams(kind="ivf", ivf_nlist=8, ivf_nprobe=1))
    assert bundle.verify(bundle_dir)["index"] == {"kind": "ivf", "ivf_nlist": 8, "ivf_nprobe": 1}
    engine = BundleRecommender(bundle_dir)
    assert engine.index.params.ivf_nprobe == 1 and engine.index.index.nprobe == 1
    histories = tiny_split.test.inputs[:200]
    items, scores = engine.recommend(histories, 10)
    assert (items >= 0).all()
    for history, row in zip(histories, items, strict=True):
        assert not set(history.tolist()) & set(row.tolist())
    exact = engine.score(histories)  # user vector · every item vector: the model's logits
    np.testing.assert_allclose(scores, np.take_along_axis(exact, items, axis=1), rtol=1e-5, atol=1e-5)
    engine.smoke_check()


def test_an_exhaustive_approximate_bundle_recommends_what_the_flat_bundle_does(
    tiny_prepared, tiny_lm, tiny_split, tiny_bundle, tmp_path
):
    _, flat_dir = tiny_bundle
    exhaustive = IndexParams(kind="hnsw", hnsw_ef_construction=200, hnsw_ef_search=512)  # 512 > the 120 items
    hnsw_dir = _export(tiny_prepared, tiny_lm, tmp_path, exhaustive)
    flat, hnsw = BundleRecommender(flat_dir), BundleRecommender(hnsw_dir)
    assert hnsw.index.params.kind == "hnsw" and hnsw.index.index.hnsw.efSearch == 512
    histories = tiny_split.test.inputs[:200]
    exclude = [history[:1] for history in histories]  # an explicit exclusion on top of the seen items
    for exclude_seen in (True, False):
        expected = flat.recommend(histories, 10, exclude_seen, exclude)
        got = hnsw.recommend(histories, 10, exclude_seen, exclude)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_allclose(got[1], expected[1], rtol=1e-5, atol=1e-5)
    user = next(iter(hnsw.histories))
    assert hnsw.recommend_for_user(user).item_ids == flat.recommend_for_user(user).item_ids
