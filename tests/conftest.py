"""Shared fixtures: a tiny synthetic dataset made by the project's own generator, prepared and split, and
one small LM trained on it once per test session (seconds on 2 cores)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory):
    from recsys.data.synthetic import write_synthetic
    from training import pipeline

    root: Path = tmp_path_factory.mktemp("tiny")
    events_csv, catalogue_csv = write_synthetic(root / "raw", "tiny", 0)
    prepared = pipeline.prepare(events_csv, "csv", root / "dataset", catalogue_path=catalogue_csv)
    return prepared, root / "dataset"


@pytest.fixture(scope="session")
def tiny_split(tiny_prepared):
    from training import pipeline

    prepared, _ = tiny_prepared
    return pipeline.split(prepared, 20)


@pytest.fixture(scope="session")
def tiny_lm(tiny_prepared, tiny_split):
    from training.lm.model import GenerativeRecommender, LMConfig, TrainConfig

    prepared, _ = tiny_prepared
    model = GenerativeRecommender(
        LMConfig(
            hidden_size=32,
            num_layers=2,
            num_heads=2,
            intermediate_size=64,
            max_len=20,
            attention_dropout=0.1,
            embedding_dropout=0.1,
        ),
        TrainConfig(epochs=15, batch_size=64, lr=3e-3, weight_decay=0.01, patience=4, log_every=1000),
    )
    model.fit(tiny_split.train, len(prepared.vocab), tiny_split.valid, vocab=prepared.vocab)
    return model


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_prepared, tiny_lm):
    """A bundles root with one promoted bundle built from the tiny LM."""
    from training import pipeline
    from training.export import export_bundle

    prepared, _ = tiny_prepared
    root = tmp_path_factory.mktemp("bundles")
    sequences = pipeline.build_sequences(prepared.events, prepared.vocab)
    bundle_dir = export_bundle(tiny_lm, sequences, root, prepared.catalogue, {"metrics": {}}, promote=True)
    return root, bundle_dir
