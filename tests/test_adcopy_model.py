"""The copy model end to end on the synthetic catalogue: training, the ONNX decoder with its cache, the checked
writer and its fallback, the bundle's precomputed copy, and POST /v1/ad-copy through the real server."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import polars as pl
import pytest
import torch

from recsys.adcopy.checks import check_copy
from recsys.adcopy.facts import CatalogueFacts
from recsys.adcopy.prompt import build_prompt, parse_copy
from recsys.adcopy.records import records_from_catalogue


@pytest.fixture(scope="module")
def catalogue(tiny_prepared):
    prepared, _ = tiny_prepared
    return prepared.catalogue


@pytest.fixture(scope="module")
def records(catalogue):
    return records_from_catalogue(catalogue)


@pytest.fixture(scope="module")
def facts(records):
    return CatalogueFacts.from_records(records.values())


@pytest.fixture(scope="module")
def copy_model_dir(tmp_path_factory, records, facts):
    from training.adcopy.finetune import CopyTrainConfig, export_copy_model, fine_tune_copy
    from training.adcopy.model import CopyModelConfig

    config = CopyTrainConfig(
        epochs=40,
        lr=3e-3,
        vocab_size=400,
        patience=40,
        max_minutes=2.0,
        model=CopyModelConfig(n_layer=2, n_head=2, n_embd=64, block_size=128, dropout=0.0),
    )
    trained = fine_tune_copy(list(records.values()), facts, config, log=lambda _: None)
    assert trained.history[-1]["valid_loss"] < trained.history[0]["valid_loss"]  # it learned something
    return export_copy_model(trained.model, trained.tokenizer, tmp_path_factory.mktemp("copy_model"))


def test_onnx_decoder_with_cache_matches_torch_step_by_step(copy_model_dir, records):
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from training.adcopy.model import CopyModel

    model = CopyModel.load(copy_model_dir)
    tokenizer = Tokenizer.from_file(str(copy_model_dir / "tokenizer.json"))
    record = next(iter(records.values()))
    ids = torch.tensor([tokenizer.encode(build_prompt(record, None)).ids])
    session = ort.InferenceSession(str(copy_model_dir / "copy_decoder.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        full_logits, _ = model(ids, model.empty_cache(1))
    # the prompt minus 3 tokens at once, then one token at a time through the cache
    logits, past = session.run(None, {"input_ids": ids[:, :-3].numpy(), "past": model.empty_cache(1).numpy()})
    np.testing.assert_allclose(logits[0], full_logits[0, :-3].numpy(), atol=1e-4)
    for t in range(ids.shape[1] - 3, ids.shape[1]):
        logits, past = session.run(None, {"input_ids": ids[:, t : t + 1].numpy(), "past": past})
        np.testing.assert_allclose(logits[0, 0], full_logits[0, t].numpy(), atol=1e-4)
    assert past.shape[4] == ids.shape[1]


def test_writer_output_always_passes_the_checks_and_says_its_source(copy_model_dir, records, facts):
    from recsys.adcopy.quality import boilerplate
    from recsys.adcopy.writer import CopyWriter

    writer = CopyWriter(copy_model_dir, facts)
    sources = []
    for record in list(records.values())[:12]:
        interest = record.categories[-1] if record.categories else None
        result = writer.write(record, interest)
        assert check_copy(result.copy, record, facts).ok, (result.copy, result.reasons)
        assert result.source in ("generated", "fallback")
        if result.source == "fallback":
            assert result.reasons
        else:  # the synthetic descriptions carry "Category: ... > ..." and "Price: ..."; copy never repeats them
            assert boilerplate(f"{result.copy.headline}. {result.copy.body}", record) == [], result.copy
        assert result.copy == writer.write(record, interest).copy  # deterministic for the same inputs
        sources.append(result.source)
    assert "generated" in sources  # the model writes copy, not only the template
    short = writer.write(record, interest, max_body=60)
    assert len(short.copy.body) <= 60 and len(short.copy.headline) <= 60


def test_span_constraint_only_lets_whole_spans_of_the_record_through(records):
    """Random walks through the constraint (any allowed token, no model): the output is made of the record's
    whole words, each text position at most once, hooks only as the body's opening, both parts ended."""
    from recsys.adcopy.constraint import SpanConstraint
    from recsys.adcopy.prompt import BODY, EOS, HOOKS
    from recsys.adcopy.writer import CopyWriter
    from training.adcopy.finetune import train_tokenizer

    texts = [" ".join([r.name, r.brand or "", *r.categories, r.description or ""]) for r in records.values()]
    tokenizer = train_tokenizer(texts, 300)  # small: most words are several tokens, so gluing is possible
    body, eos = tokenizer.token_to_id(BODY), tokenizer.token_to_id(EOS)
    rng = np.random.default_rng(0)
    for record in list(records.values())[:8]:
        interest = record.categories[-1] if record.categories else "tools"
        hooks = [h.format(interest=interest) for h in HOOKS]
        sources = CopyWriter.sources(record)
        constraint = SpanConstraint(tokenizer, sources, body, eos, openers=hooks)
        allowed_words = set(" ".join(sources + hooks).split())
        state, out = constraint.initial(3), [[], [], []]
        for _ in range(200):
            mask = constraint.mask(state)
            chosen = np.array([rng.choice(np.flatnonzero(row)) for row in mask])
            constraint.advance(state, chosen)
            for row, token in enumerate(chosen):
                if not out[row] or out[row][-1] != eos:
                    out[row].append(int(token))
        for ids in out:
            text = tokenizer.decode(ids, skip_special_tokens=False)
            assert text.count(BODY) == 1 and text.endswith(EOS), text
            headline, rest = text.split(BODY)
            words = [w.strip(",.;:!()") for w in (headline + " " + rest[: -len(EOS)]).split()]
            glued = [w for w in words if w and not any(w in a for a in allowed_words)]
            assert not glued, (text, glued)
            assert not any(h in headline for h in hooks)


def test_span_constraint_keeps_a_label_with_its_own_value(records):
    """A span never ends at a colon: "Net weight:" is followed by its own value, not one from elsewhere."""
    from recsys.adcopy.constraint import SpanConstraint
    from recsys.adcopy.prompt import BODY, EOS
    from training.adcopy.finetune import train_tokenizer

    texts = [" ".join([r.name, r.categories[-1] if r.categories else ""]) for r in records.values()]
    tokenizer = train_tokenizer([*texts, "Net weight: 6g. Size: 20mm. Color: red"], 300)
    body, eos = tokenizer.token_to_id(BODY), tokenizer.token_to_id(EOS)
    sources = ["Steel Bracket", "Net weight: 6g, Size: 20mm, Color: red"]
    constraint = SpanConstraint(tokenizer, sources, body, eos)
    rng = np.random.default_rng(1)
    state, out = constraint.initial(64), [[] for _ in range(64)]
    for _ in range(60):
        chosen = np.array([rng.choice(np.flatnonzero(row)) for row in constraint.mask(state)])
        constraint.advance(state, chosen)
        for row, token in enumerate(chosen):
            out[row].append(int(token))
    pairs = {"weight:": "6g", "Size:": "20mm", "Color:": "red"}
    for ids in out:
        text = tokenizer.decode(ids, skip_special_tokens=False)
        words = text.replace(BODY, " ").replace(EOS, " ").split()
        for label, value in zip(words, words[1:], strict=False):
            if label in pairs:
                assert value.rstrip(",.") == pairs[label], words


def test_a_tiny_time_budget_gives_the_flagged_template(copy_model_dir, records, facts):
    from recsys.adcopy.writer import CopyWriter

    record = next(iter(records.values()))
    result = CopyWriter(copy_model_dir, facts).write(record, None, deadline_s=1e-6)
    assert result.source == "fallback" and not result.finished
    assert any("time budget" in reason for reason in result.reasons)
    assert check_copy(result.copy, record, facts).ok


def test_parse_copy_refuses_incomplete_output():
    assert parse_copy("Only a headline<eos>") is None
    assert parse_copy("<body>no headline<eos>") is None
    copy = parse_copy("Headline here<body>Body text.<eos>trailing")
    assert copy is not None and copy.headline == "Headline here" and copy.body == "Body text."


@pytest.fixture(scope="module")
def adcopy_bundle(tmp_path_factory, tiny_prepared, tiny_lm, copy_model_dir):
    from training import pipeline
    from training.export import AdCopyPlan, export_bundle

    prepared, _ = tiny_prepared
    root = tmp_path_factory.mktemp("adcopy-bundles")
    sequences = pipeline.build_sequences(prepared.events, prepared.vocab)
    sequences = type(sequences)(sequences.user_ids[:20], sequences.items[:20])
    bundle_dir = export_bundle(
        tiny_lm,
        sequences,
        root,
        prepared.catalogue,
        {"metrics": {}},
        promote=True,
        adcopy=AdCopyPlan(copy_model_dir, top_k=2),
    )
    return root, bundle_dir


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_bundle_carries_copy_for_each_users_top_k(adcopy_bundle):
    _, bundle_dir = adcopy_bundle
    copies = pl.read_parquet(bundle_dir / "adcopy" / "copies.parquet")
    assert copies.height == 20 * 2
    assert set(copies["source"].unique()) <= {"generated", "fallback"}
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["adcopy"]["copies"] == 40 and "adcopy/copy_decoder.onnx" in json.dumps(manifest)


def test_ad_copy_through_the_real_server(adcopy_bundle, tmp_path, catalogue, records, facts):
    from recsys.harness import ServerProcess

    root, bundle_dir = adcopy_bundle
    copies = pl.read_parquet(bundle_dir / "adcopy" / "copies.parquet")
    user_id, item_id = copies.row(0)[:2]
    with ServerProcess(root, tmp_path) as server:
        url = f"{server.url}/v1/ad-copy"
        status, body = _post(url, {"user_id": user_id, "item_id": item_id})
        assert status == 200 and body["source"] == "precomputed"
        assert body["generated"] == (copies["source"][0] == "generated")  # a batch fallback is not model-written
        assert body["headline"] == copies.row(0)[2]
        status, body = _post(url, {"user_id": user_id, "item_id": item_id, "fresh": True})
        assert status == 200 and body["source"] in ("generated", "fallback")
        assert all(body["checks"].values()) and body["tokens"] > 0
        record = records[item_id]
        from recsys.adcopy.checks import Copy

        assert check_copy(Copy(body["headline"], body["body"]), record, facts).ok
        # an empty history: copy still comes, flagged as not personalised
        status, body = _post(url, {"item_id": item_id, "history": []})
        assert status == 200 and not body["personalised"] and any("no history" in r for r in body["reasons"])
        # a history sharing the item's category personalises it
        same_category = [i for i, r in records.items() if r.categories == record.categories and i != item_id][:3]
        status, body = _post(url, {"item_id": item_id, "history": [*same_category, "no-such-item"]})
        assert status == 200 and body["personalised"] and body["interest"]
        assert body["unknown_items"] == ["no-such-item"]
        # bad input: unknown item, absurd length, wrong types
        assert _post(url, {"item_id": "no-such-item"})[0] == 404
        assert _post(url, {"item_id": item_id, "max_body_chars": 100000})[0] == 422
        assert _post(url, {"item_id": item_id, "max_body_chars": -1})[0] == 422
        assert _post(url, {"item_id": item_id, "history": "not a list"})[0] == 422
        assert _post(url, {"item": item_id})[0] == 422
        status, body = _post(url, {"item_id": item_id, "max_body_chars": 40, "fresh": True})
        assert status == 200 and len(body["body"]) <= 40
    assert server.torch_imported() is False
