"""Export: ONNX matches torch, FAISS returns the model's own top-k, bundles verify and promote atomically."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from recsys import bundle
from recsys.bundle.reader import BundleRecommender
from recsys.metrics import top_k


def _users(tiny_split, n=100):
    return tiny_split.test.inputs[:n]


def test_onnx_user_vectors_match_torch(tiny_bundle, tiny_split, tiny_lm):
    _, bundle_dir = tiny_bundle
    engine = BundleRecommender(bundle_dir)
    histories = _users(tiny_split)
    assert len(histories) == 100
    onnx_vectors = engine.user_vectors(histories)
    torch_vectors = tiny_lm.user_vectors(histories)
    assert np.abs(onnx_vectors - torch_vectors).max() <= 1e-4
    np.testing.assert_array_equal(top_k(engine.score(histories), 10), top_k(tiny_lm.score(histories), 10))


def test_onnx_handles_lengths_and_batches_it_was_not_traced_with(tiny_bundle, tiny_lm):
    _, bundle_dir = tiny_bundle
    engine = BundleRecommender(bundle_dir)
    histories = [np.array([1]), np.arange(40) % tiny_lm.n_items, np.array([3, 4, 5])]  # 40 > max_len: cut
    assert np.abs(engine.user_vectors(histories) - tiny_lm.user_vectors(histories)).max() <= 1e-4
    single = engine.user_vectors(histories[2:])
    assert np.abs(single[0] - engine.user_vectors(histories)[2]).max() <= 1e-5  # padding does not leak


def test_faiss_top_k_equals_full_softmax_top_k(tiny_bundle, tiny_split, tiny_lm):
    _, bundle_dir = tiny_bundle
    engine = BundleRecommender(bundle_dir)
    histories = _users(tiny_split)
    vectors = torch.from_numpy(tiny_lm.user_vectors(histories))
    logits = vectors @ tiny_lm.item_embeddings().detach().T  # the LM's full softmax logits over items
    expected = torch.topk(logits, 20, dim=1)
    rows, scores = engine.index.search(vectors.numpy(), 20)
    np.testing.assert_allclose(scores, expected.values.numpy(), rtol=1e-4, atol=1e-4)
    mismatch = rows != expected.indices.numpy()
    # rows may differ only where two items tie
    assert np.all(np.abs(scores[mismatch] - expected.values.numpy()[mismatch]) < 1e-4)


def test_bundle_manifest_lists_every_file_with_its_checksum(tiny_bundle):
    root, bundle_dir = tiny_bundle
    manifest = bundle.verify(bundle_dir)
    on_disk = {p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    assert {"version", "created_at", "metrics", "model", "files"} <= set(manifest)
    assert bundle.current_version(root) == manifest["version"]


def _copy_bundle(bundle_dir, tmp_path):
    import shutil

    copy = tmp_path / bundle_dir.name
    shutil.copytree(bundle_dir, copy)
    return copy


def test_one_flipped_byte_is_refused_and_the_file_named(tiny_bundle, tmp_path):
    _, bundle_dir = tiny_bundle
    for name in ("items.faiss", "user_encoder.onnx", "histories.parquet"):
        copy = _copy_bundle(bundle_dir, tmp_path / name)
        data = bytearray((copy / name).read_bytes())
        data[len(data) // 2] ^= 0x01
        (copy / name).write_bytes(bytes(data))
        with pytest.raises(bundle.BundleError, match=name.replace(".", r"\.")):
            BundleRecommender(copy)


def test_partial_and_missing_bundles_give_clear_errors(tiny_bundle, tmp_path):
    _, bundle_dir = tiny_bundle
    copy = _copy_bundle(bundle_dir, tmp_path / "a")
    (copy / "items.faiss").unlink()
    with pytest.raises(bundle.BundleError, match="partial: items.faiss is missing"):
        bundle.verify(copy)
    copy = _copy_bundle(bundle_dir, tmp_path / "b")
    (copy / "manifest.json").unlink()
    with pytest.raises(bundle.BundleError, match="manifest.json is missing"):
        bundle.verify(copy)
    with pytest.raises(bundle.BundleError, match="does not exist"):
        BundleRecommender(tmp_path / "nowhere")
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(bundle.BundleError, match="corrupt"):
        bundle.verify(copy)


def test_a_bundle_whose_folder_is_not_its_version_is_refused(tiny_bundle, tmp_path):
    _, bundle_dir = tiny_bundle
    renamed = tmp_path / "not-the-version"
    shutil.copytree(bundle_dir, renamed)
    with pytest.raises(bundle.BundleError, match="must be named after its version"):
        bundle.verify(renamed)


def test_promote_refuses_a_corrupt_bundle_and_keeps_current(tiny_bundle, tmp_path):
    root, bundle_dir = tiny_bundle
    import shutil

    local_root = tmp_path / "root"
    shutil.copytree(root, local_root)
    good = bundle.current_version(local_root)
    bad = local_root / "bad-version"
    shutil.copytree(bundle_dir, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["version"] = "bad-version"
    (bad / "manifest.json").write_text(json.dumps(manifest))
    (bad / "popularity.json").write_text("{}")
    with pytest.raises(bundle.BundleError, match="popularity.json"):
        bundle.promote(local_root, "bad-version")
    assert bundle.current_version(local_root) == good


RECOMMEND_WITHOUT_TORCH = """
import sys
from recsys.cli import app
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    assert "torch" not in sys.modules, "torch was imported on the recommend path"
    print("TORCH_NOT_IMPORTED")
"""


def test_recommend_path_never_imports_torch(tiny_bundle, tiny_split):
    root, _ = tiny_bundle
    user = tiny_split.test.user_ids[0]
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            RECOMMEND_WITHOUT_TORCH,
            "recommend",
            "--bundle",
            str(root),
            "--user",
            user,
            "-k",
            "5",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "TORCH_NOT_IMPORTED" in out.stdout
    payload = json.loads(out.stdout.split("TORCH_NOT_IMPORTED")[0])
    assert payload["user_id"] == user and len(payload["item_ids"]) == 5 and payload["fallback"] is False


def _recommend_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "recsys.cli", "recommend", *args], capture_output=True, text=True, timeout=120
    )


def test_recommend_cli_bad_input_gives_clear_errors(tiny_bundle, tmp_path):
    root, _ = tiny_bundle
    for k in ("0", "-3", "100000"):
        out = _recommend_cli("--bundle", str(root), "--user", "x", "-k", k)
        assert out.returncode != 0 and "k must be an integer between 1 and 1000" in out.stderr
        assert "Traceback" not in out.stdout + out.stderr
    out = _recommend_cli("--bundle", str(tmp_path / "missing"), "--user", "x")
    assert out.returncode != 0 and "does not exist" in out.stderr and "Traceback" not in out.stderr
    out = _recommend_cli("--bundle", str(root), "--user", "no-such-user", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["fallback"] is True
    out = _recommend_cli("--bundle", str(root), "--history", "NOPE-1,NOPE-2", "--json")
    assert out.returncode == 0
    payload = json.loads(out.stdout)
    assert payload["fallback"] is True and payload["unknown_items"] == ["NOPE-1", "NOPE-2"]
