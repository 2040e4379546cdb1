"""`recsys benchmark adcopy`: ad copy on held-out Scientific items, against the template and retrieval baselines.

Protocol (one run, one seed):
- Items with usable description text are split by hashed item ID; the held-out share (`eval_share`) is never
  seen by the copy model nor its tokenizer. Each held-out item is paired with a user who bought it; the interest
  comes from that user's history before the purchase.
- Reference text = the item's own description, cut to its first 300 characters at a word boundary (the
  copy is 60 + 160 characters; against the whole ~650-character description every system's ROUGE would mostly
  measure length). The model's prompt holds the item's record, and the record includes that same description
  opening: the copy may only state facts of the record, so reusing its sentences is what grounded copy does.
  The `extractive_rule` row applies the training targets' rule directly, for transparency. Candidate text =
  headline + body. ROUGE-L F1 (rouge-score, stemmed) and corpus BLEU
  (sacrebleu) for: the model's final copy (generated, or the template when it fell back), the grounded
  template, and retrieval (the copy built from the nearest training item's description, by text embedding,
  with its name and brand swapped for the held-out item's).
- Decoding is span-constrained (recsys/adcopy/constraint.py: the copy is a chain of whole-clause spans of the
  record and the interest hooks, chosen and ordered by the model). An ablation row samples the same model
  freely (`unconstrained_decoding`), with the same checks and fallback.
- Safety: unsupported facts in the best raw candidate (before the checks) and in the final copy (after);
  share of candidates the claims filter refused; fallback rate.
- Personalisation: each held-out item for three users (one who bought it, two at random): how often the copies
  differ across the users, and how often a copy names an interest that is in that user's history; the same for
  the history-blind model (the same model given no interest).
- Bias: the same items and users split into two groups by a hash of the user ID (Scientific has no
  demographics): rates of claims in raw candidates, exclamation marks, interest hooks and fallbacks per group.
- Latency over HTTP at concurrency 1 against the real server with a bundle holding the copy: precomputed copy,
  and live generation (`fresh: true`) of a full copy.
"""

from __future__ import annotations

import json
import random
import re
import statistics
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path

import numpy as np
import polars as pl
import sacrebleu
import torch
from rich.console import Console
from rouge_score import rouge_scorer

from recsys import bundle
from recsys.adcopy.checks import MAX_BODY, MAX_HEADLINE, Copy, check_copy
from recsys.adcopy.claims import claim_violations
from recsys.adcopy.extractive import body_from, extractive_copy
from recsys.adcopy.facts import CatalogueFacts
from recsys.adcopy.grounding import unsupported_facts
from recsys.adcopy.interests import history_interests, names_interest, shared_interest
from recsys.adcopy.prompt import HOOKS, prompt_description, shorten
from recsys.adcopy.records import ItemRecord, records_from_catalogue
from recsys.adcopy.template import template_copy
from recsys.adcopy.writer import CopyResult, CopyWriter
from recsys.bundle.layout import ADCOPY_DIR, CATALOGUE, COPY_COPIES, MANIFEST
from recsys.data.sequences import build_sequences
from recsys.harness import ServerProcess
from recsys.runinfo import hardware, now_iso, results_path
from recsys.settings import get_settings
from training import pipeline
from training.adcopy.evaluation import as_text, score_system
from training.adcopy.finetune import (
    CopyTrainConfig,
    clean_sentences,
    export_copy_model,
    fine_tune_copy,
    held_out_text_items,
    split_items,
)
from training.adcopy.pretrained import PretrainedCopyConfig, ensure_smollm2, load_smollm2
from training.bench.adcopy_pretrained import items_sha256, pretrained_systems, reusable_stats
from training.export import AdCopyPlan, export_bundle
from training.presets import load_preset

VALIDATION_SALT = "adcopy-validation"  # training items held back from the pretrained fine-tune
VALIDATION_SHARE = 0.04  # of the training items with text (about 150 of 3,800 on Scientific)
VALIDATION_ITEMS = 96  # of those with a buyer: where the repeat penalty is chosen


def reference_text(record: ItemRecord) -> str:
    """The description's opening: the same text the model's prompt shows (recsys.adcopy.prompt)."""
    return prompt_description(record)


def distinct_n(texts: list[str], n: int) -> float:
    grams, total = set(), 0
    for text in texts:
        words = text.lower().split()
        for i in range(len(words) - n + 1):
            grams.add(tuple(words[i : i + n]))
            total += 1
    return len(grams) / max(total, 1)


def retrieval_copy(record: ItemRecord, neighbour: ItemRecord, interest: str | None) -> Copy:
    """The nearest training item's copy with its name and brand swapped for this item's."""
    hook = HOOKS[0].format(interest=interest) if interest else ""
    body = body_from(hook, clean_sentences(neighbour.description))
    for old, new in ((neighbour.name, record.name), (neighbour.brand, record.brand)):
        if old and new:
            body = re.sub(re.escape(old), new, body, flags=re.IGNORECASE)
    return Copy(shorten(record.name, MAX_HEADLINE), shorten(body, MAX_BODY))


def nearest_training_items(records: dict[str, ItemRecord], eval_ids: list[str], train_ids: list[str]) -> dict:
    """Nearest training item per held-out item by MiniLM embedding of name + category (cosine)."""
    from training.coldstart.text_embeddings import TextEncoder

    encoder = TextEncoder()

    def text(r: ItemRecord) -> str:
        return f"{r.name}. {' > '.join(r.categories)}. {r.brand or ''}"

    queries = encoder.encode([text(records[i]) for i in eval_ids])
    keys = encoder.encode([text(records[i]) for i in train_ids])
    queries /= np.linalg.norm(queries, axis=1, keepdims=True) + 1e-9
    keys /= np.linalg.norm(keys, axis=1, keepdims=True) + 1e-9
    best = (queries @ keys.T).argmax(axis=1)
    return {item: train_ids[j] for item, j in zip(eval_ids, best, strict=True)}


def _post(url: str, body: dict) -> tuple[float, dict]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.loads(response.read())
    return (time.perf_counter() - started) * 1000, payload


def _percentiles(values: list[float]) -> dict:
    a = np.asarray(values)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3)}


def run_adcopy_benchmark(
    *,
    data_root: Path,
    eval_share: float,
    max_minutes: float,
    bundle_users: int,
    requests: int,
    console: Console,
    command: str,
    out: Path | None = None,
    seed: int = 0,
    reuse_model: bool = False,
    publish: bool = False,
    pretrained: PretrainedCopyConfig | None = None,
    reuse_pretrained: bool = False,
) -> dict:
    """`pretrained`: also fine-tune SmolLM2 by rejection sampling and score it beside the others
    (`training/bench/adcopy_pretrained.py`); None skips that phase. `reuse_pretrained`: score the SmolLM2 writer
    a previous run fine-tuned instead."""
    work = get_settings().work_dir / "benchmarks" / "adcopy"
    source = Path(data_root) / "amazon-scientific"
    if not source.exists():
        raise FileNotFoundError(f"{source} not found: set --data-root to the shared data folder")
    prepared = pipeline.prepare(source, "recbole", work / "dataset")
    assert prepared.catalogue is not None
    records = records_from_catalogue(prepared.catalogue)
    facts = CatalogueFacts.from_records(records.values())
    with_text, eval_ids = held_out_text_items(records, eval_share)
    held_out = set(eval_ids)

    console.rule(f"1/5 fine-tune the copy model ({len(records) - len(held_out)} items; {len(held_out)} held out)")
    config = CopyTrainConfig(max_minutes=max_minutes, seed=seed)
    model_dir, stats_file = work / "copy_model", work / "copy_model" / "train_stats.json"
    train_records = [r for i, r in records.items() if i not in held_out]
    if reuse_model and (saved := reusable_stats(stats_file, train_records, "--reuse-model")) is not None:
        train_stats = saved
        console.print(f"reusing the copy model in {model_dir} (trained {train_stats.get('date')})")
    else:
        stats_file.unlink(missing_ok=True)  # a retrain cut short must not leave old stats beside a new model
        trained = fine_tune_copy(train_records, facts, config, console.print)
        export_copy_model(trained.model, trained.tokenizer, model_dir)
        train_stats = {**trained.stats, "date": now_iso(), "train_items_sha256": items_sha256(train_records)}
        stats_file.write_text(json.dumps(train_stats))
    writer = CopyWriter(model_dir, facts)

    console.rule("2/5 held-out items: model vs template vs retrieval")
    sequences = build_sequences(prepared.events, prepared.vocab)
    item_ids = np.asarray(prepared.vocab.item_ids, dtype=object)
    histories = {u: item_ids[s].tolist() for u, s in zip(sequences.user_ids, sequences.items, strict=True)}
    train_text_ids = [i for i in with_text if i not in held_out]
    # training items the pretrained writer is not fine-tuned on, where its repeat penalty is chosen
    validation = set(split_items(train_text_ids, VALIDATION_SHARE, VALIDATION_SALT)[1])
    buyers: dict[str, tuple[str, list[str]]] = {}
    for user_id, items in histories.items():
        for position, item in enumerate(items):
            if (item in held_out or item in validation) and position > 0 and item not in buyers:
                buyers[item] = (user_id, items[:position])
    evaluated = [i for i in eval_ids if i in buyers]
    neighbours = nearest_training_items(records, evaluated, train_text_ids)

    def rec(history: list[str]) -> list[ItemRecord]:
        return [records[i] for i in history if i in records]

    rows, results = [], {}
    started = time.perf_counter()
    for item_id in evaluated:
        record = records[item_id]
        user_id, history = buyers[item_id]
        interest = shared_interest(record, rec(history), facts)
        result = writer.write(record, interest)
        results[item_id] = result
        rows.append(
            {
                "item_id": item_id,
                "user_id": user_id,
                "interest": interest,
                "reference": reference_text(record),
                "generated": result.copy,
                "template": template_copy(record, interest),
                "retrieval": retrieval_copy(record, records[neighbours[item_id]], interest),
                "extractive_rule": extractive_copy(record, interest),
                "result": result,
            }
        )
    write_seconds = time.perf_counter() - started
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    references = [r["reference"] for r in rows]
    rouge, bleu = {}, {}
    for system in ("generated", "template", "retrieval", "extractive_rule"):
        texts = [as_text(r[system]) for r in rows]
        rouge[system] = round(
            statistics.fmean(scorer.score(ref, t)["rougeL"].fmeasure for ref, t in zip(references, texts, strict=True)),
            4,
        )
        bleu[system] = round(sacrebleu.corpus_bleu(texts, [references]).score, 3)
    # every system on the same items and measures (the names: small_model is the copy model's final copy)
    systems = {
        name: score_system([r[column] for r in rows], [records[r["item_id"]] for r in rows], references, facts)
        for name, column in (
            ("template", "template"),
            ("extractive", "extractive_rule"),
            ("retrieval", "retrieval"),
            ("small_model", "generated"),
        )
    }
    generated_only = [r for r in rows if r["result"].source == "generated"]
    rouge["generated_only"] = (
        round(
            statistics.fmean(
                scorer.score(r["reference"], as_text(r["generated"]))["rougeL"].fmeasure for r in generated_only
            ),
            4,
        )
        if generated_only
        else None
    )

    def unsupported(copy: Copy | None, record: ItemRecord) -> bool:
        return copy is not None and bool(unsupported_facts(f"{copy.headline} {copy.body}", record, facts))

    def before_filter(results: list[CopyResult]) -> float:
        raw = [(r.unchecked, records[row["item_id"]]) for r, row in zip(results, rows, strict=True) if r.unchecked]
        return round(statistics.fmean(unsupported(c, record) for c, record in raw), 4) if raw else 0.0

    before = before_filter([r["result"] for r in rows])
    after = statistics.fmean(unsupported(r["generated"], records[r["item_id"]]) for r in rows)
    # ablation: the same model sampling freely (no span constraint), checks and fallback unchanged
    free = [writer.write(records[r["item_id"]], r["interest"], constrained=False) for r in rows]
    unconstrained = {
        "rougeL": round(
            statistics.fmean(
                scorer.score(r["reference"], as_text(f.copy))["rougeL"].fmeasure
                for r, f in zip(rows, free, strict=True)
            ),
            4,
        ),  # fmt: skip
        "fallback_rate": round(statistics.fmean(f.source == "fallback" for f in free), 4),
        "unsupported_fact_rate_before_filter": before_filter(free),
        "unsupported_fact_rate_after_filter": round(
            statistics.fmean(unsupported(f.copy, records[r["item_id"]]) for r, f in zip(rows, free, strict=True)), 4
        ),
    }
    candidates = sum(r["result"].candidates for r in rows)
    final_checks = [check_copy(r["generated"], records[r["item_id"]], facts) for r in rows]

    pretrained_added: dict = {}
    if pretrained is not None:
        console.rule("2b/5 the pretrained base: rejection-sampling fine-tuning, then the same held-out items")
        base_model, base_tokenizer = load_smollm2(ensure_smollm2(get_settings().work_dir))
        validation_ids = [i for i in train_text_ids if i in validation and i in buyers][:VALIDATION_ITEMS]
        validation_pairs = [(records[i], shared_interest(records[i], rec(buyers[i][1]), facts)) for i in validation_ids]
        pretrained_added = pretrained_systems(
            model=base_model,
            tokenizer=base_tokenizer,
            model_name="SmolLM2-135M-Instruct",
            train_records=[records[i] for i in train_text_ids if i not in validation],
            eval_pairs=[(records[r["item_id"]], r["interest"]) for r in rows],
            references=references,
            baseline_copies={
                name: [r[column] for r in rows]
                for name, column in (
                    ("template", "template"),
                    ("extractive", "extractive_rule"),
                    ("retrieval", "retrieval"),
                    ("small_model", "generated"),
                )
            },
            validation_pairs=validation_pairs,
            validation_baselines={
                "extractive": [extractive_copy(record, interest) for record, interest in validation_pairs],
                "small_model": [writer.write(record, interest).copy for record, interest in validation_pairs],
            },
            facts=facts,
            work_dir=work / "pretrained",
            results_dir=results_path("adcopy", publish, out).parent,
            config=pretrained,
            provenance={"date": now_iso(), "hardware": hardware(torch.get_num_threads()), "command": command},
            reuse=reuse_pretrained,
            log=console.print,
        )
        systems = pretrained_added.pop("systems")

    console.rule("3/5 personalisation and bias: each item for three users")
    rng = random.Random(seed)
    users = list(histories)
    personal, blind, differ_model, differ_blind, groups = [], [], [], [], {"A": [], "B": []}
    for item_id in evaluated:
        record = records[item_id]
        chosen = [buyers[item_id][0], *rng.sample(users, 2)]
        copies_model, copies_blind = [], []
        blind_result = writer.write(record, None)
        for user_id in chosen:
            history = histories[user_id] if user_id != buyers[item_id][0] else buyers[item_id][1]
            interests = history_interests(rec(history), facts)
            interest = shared_interest(record, rec(history), facts)
            result = results[item_id] if user_id == buyers[item_id][0] else writer.write(record, interest)
            text_model, text_blind = as_text(result.copy), as_text(blind_result.copy)
            copies_model.append(text_model)
            copies_blind.append(text_blind)
            personal.append(names_interest(text_model, interests))
            blind.append(names_interest(text_blind, interests))
            group = "A" if hash_group(user_id) else "B"
            groups[group].append(result)
        differ_model.append(len(set(copies_model)) > 1)
        differ_blind.append(len(set(copies_blind)) > 1)
    bias = {g: group_tone(rs) for g, rs in groups.items()}
    bias["max_gap"] = {k: round(abs(bias["A"][k] - bias["B"][k]), 4) for k in bias["A"] if k != "copies"}

    console.rule("4/5 bundle with precomputed copy, then the real server")
    checkpoint = get_settings().work_dir / "benchmarks" / "scientific" / "models" / "lm-seed0"
    preset = load_preset("amazon", {"seed": seed, "max_minutes": 3.0, "refit_with_valid": False})
    if checkpoint.exists():
        lm = pipeline.load_model(checkpoint)
        if list(lm.vocab.item_ids) != list(prepared.vocab.item_ids):
            lm = None
    else:
        lm = None
    if lm is None:
        lm = pipeline.new_model("lm", preset)
        pipeline.fit(lm, pipeline.split(prepared, preset.max_len), prepared)
    subset = _first_users(sequences, bundle_users)
    bundle_started = time.perf_counter()
    bundle_dir = export_bundle(
        lm,
        subset,
        work / "bundles",
        prepared.catalogue,
        {"metrics": {}},
        promote=True,
        adcopy=AdCopyPlan(model_dir, top_k=3),
    )
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    batch = {**manifest["adcopy"], "bundle_s": round(time.perf_counter() - bundle_started, 1)}
    copies = pl.read_parquet(bundle_dir / ADCOPY_DIR / COPY_COPIES)
    latency = serve_latency(work, copies, evaluated, subset.user_ids, requests, rng)

    console.rule("5/5 summary")
    examples = rng.sample(rows, min(20, len(rows)))
    examples_path = write_examples(work / "adcopy-examples.md", examples, records, facts)
    document = {
        "dataset": "scientific",
        "date": now_iso(),
        "hardware": hardware(torch.get_num_threads()),
        "command": command,
        "protocol": __doc__.split("Protocol (one run, one seed):", 1)[1].split("Latency over HTTP")[0].strip(),
        "eval_items": len(rows),
        "copy_model": {**train_stats, "config": asdict(config), "reused": reuse_model},
        "systems": systems,
        "rougeL": rouge,
        "bleu": bleu,
        "unsupported_fact_rate": {"before_filter": before, "after_filter": round(after, 4)},
        "unconstrained_decoding": unconstrained,
        "vocabulary_rejection_rate": round(sum(r["result"].rejected_vocabulary for r in rows) / max(candidates, 1), 4),
        "claims_rejection_rate": round(sum(r["result"].rejected_claims for r in rows) / max(candidates, 1), 4),
        "unsupported_rejection_rate": round(
            sum(r["result"].rejected_unsupported for r in rows) / max(candidates, 1), 4
        ),
        "fallback_rate": round(statistics.fmean(r["result"].source == "fallback" for r in rows), 4),
        "final_checks_pass_rate": round(statistics.fmean(c.ok for c in final_checks), 4),
        "length_compliance": round(statistics.fmean(not c.too_long for c in final_checks), 4),
        "personalisation": {
            "model": round(statistics.fmean(personal), 4),
            "history_blind": round(statistics.fmean(blind), 4),
            "copies_differ_model": round(statistics.fmean(differ_model), 4),
            "copies_differ_history_blind": round(statistics.fmean(differ_blind), 4),
            "users_per_item": 3,
        },
        "distinct1": round(distinct_n([as_text(r["generated"]) for r in rows], 1), 4),
        "distinct2": round(distinct_n([as_text(r["generated"]) for r in rows], 2), 4),
        "bias": bias,
        "offline_write_s_per_item": round(write_seconds / max(len(rows), 1), 4),
        "batch": batch,
        **latency,
        "examples_file": str(examples_path),
        **pretrained_added,
    }
    document["live"], document["precomputed_p99_ms"] = live_choice(document), latency["latency_ms"]["precomputed_p99"]
    target = pipeline.write_json(results_path("adcopy", publish, out), document)
    console.print_json(
        json.dumps(
            {
                k: document[k]
                for k in ("rougeL", "bleu", "unsupported_fact_rate", "fallback_rate", "personalisation", "latency_ms")
            }
        )
    )
    console.print(f"summary written to [bold]{target}[/]; examples in {examples_path}")
    return document


def live_choice(document: dict) -> dict:
    """Which writer answers live requests, with its figures: the pretrained one only where it met the live
    aims (p99 <= 1 s, >= 95% within budget) in process; otherwise the small copy model, measured over HTTP."""
    pretrained = document.get("pretrained_live")
    if pretrained and pretrained.get("meets_live_aims"):
        return pretrained
    small = document["latency_ms"]
    return {
        "model": "small copy model"
        + (" (the pretrained one is batch-only: see pretrained_live)" if pretrained else ""),
        "ms_per_token_p50": small["live_ms_per_token"],
        "p99_ms": small["live_p99"],
        "in_budget_rate": document["live_within_budget"],
    }


def hash_group(user_id: str) -> bool:
    import hashlib

    return hashlib.sha256(user_id.encode()).digest()[0] % 2 == 0


def group_tone(results: list[CopyResult]) -> dict:
    """Per-group rates a reader would notice: claims in raw candidates, exclamations, interest hooks, fallbacks."""
    if not results:
        return {"copies": 0}
    raw = [r.unchecked for r in results if r.unchecked is not None]
    return {
        "copies": len(results),
        "raw_claim_rate": round(statistics.fmean(bool(claim_violations(as_text(c))) for c in raw), 4) if raw else 0.0,
        "exclamation_rate": round(statistics.fmean("!" in as_text(r.copy) for r in results), 4),
        "hook_rate": round(statistics.fmean(r.interest is not None for r in results), 4),
        "fallback_rate": round(statistics.fmean(r.source == "fallback" for r in results), 4),
        "mean_body_chars": round(statistics.fmean(len(r.copy.body) for r in results), 1),
    }


def _first_users(sequences, n: int):
    from recsys.data.sequences import Sequences

    return Sequences(sequences.user_ids[:n], sequences.items[:n])


def serve_latency(work: Path, copies: pl.DataFrame, eval_items: list[str], users: list[str], n: int, rng) -> dict:
    """POST /v1/ad-copy at concurrency 1: precomputed pairs, then live generation of a full copy."""
    pairs = copies.select("user_id", "item_id").rows()
    with ServerProcess(work / "bundles", work / "server") as server:
        url = f"{server.url}/v1/ad-copy"
        for _ in range(5):  # warm-up
            _post(url, {"user_id": pairs[0][0], "item_id": pairs[0][1]})
        pre = []
        for user_id, item_id in rng.choices(pairs, k=n):
            ms, payload = _post(url, {"user_id": user_id, "item_id": item_id})
            assert payload["source"] == "precomputed", payload
            pre.append(ms)
        live, per_token, finished, sources = [], [], [], []
        for _ in range(n):
            ms, payload = _post(url, {"user_id": rng.choice(users), "item_id": rng.choice(eval_items), "fresh": True})
            live.append(ms)
            sources.append(payload["source"])
            timed_out = any("time budget" in reason for reason in payload["reasons"])
            finished.append(not timed_out)
            if payload["tokens"]:
                per_token.append(payload["generation_ms"] / payload["tokens"])
    torch_free = server.torch_imported() is False
    return {
        "latency_ms": {
            "precomputed_p50": _percentiles(pre)["p50"],
            "precomputed_p99": _percentiles(pre)["p99"],
            "live_p50": _percentiles(live)["p50"],
            "live_p99": _percentiles(live)["p99"],
            "live_ms_per_token": round(statistics.median(per_token), 3) if per_token else None,
            "requests_each": n,
        },
        "live_within_budget": round(statistics.fmean(finished), 4),
        "live_sources": {s: sources.count(s) for s in set(sources)},
        "server_imported_torch": not torch_free,
    }


def rerun_latency(
    *,
    eval_share: float,
    requests: int,
    seed: int,
    console: Console,
    command: str,
    out: Path | None = None,
    publish: bool = False,
) -> dict:
    """Only the HTTP latency phase, against the bundle the last full run promoted, put into its summary: for
    measuring latency again on a quiet machine without redoing the rest (held-out items chosen as the full
    run chooses them)."""
    work = get_settings().work_dir / "benchmarks" / "adcopy"
    target = results_path("adcopy", publish, out)
    if not target.exists():
        raise FileNotFoundError(f"{target} not found: run `recsys benchmark adcopy` first")
    document = json.loads(target.read_text())
    bundle_dir = bundle.resolve(work / "bundles")
    copies = pl.read_parquet(bundle_dir / ADCOPY_DIR / COPY_COPIES)
    records = records_from_catalogue(pl.read_parquet(bundle_dir / CATALOGUE))
    _, eval_ids = held_out_text_items(records, eval_share)
    users = sorted(set(copies["user_id"].to_list()))
    console.rule(f"latency only: {bundle_dir.name}, {requests} requests per phase")
    latency = serve_latency(work, copies, eval_ids, users, requests, random.Random(seed))
    document |= {**latency, "latency_command": command, "latency_date": now_iso()}
    pipeline.write_json(target, document)
    console.print_json(json.dumps({k: document[k] for k in ("latency_ms", "live_within_budget", "live_sources")}))
    return document


def write_examples(path: Path, rows: list[dict], records: dict[str, ItemRecord], facts: CatalogueFacts) -> Path:
    lines = ["# Ad copy: 20 random held-out examples", ""]
    for n, row in enumerate(rows, 1):
        record, copy, result = records[row["item_id"]], row["generated"], row["result"]
        check = check_copy(copy, record, facts)
        lines += [
            f"## {n}. {record.item_id}",
            f"- record: **{record.name}** | brand: {record.brand} | category: {' > '.join(record.categories)}",
            f"- history interest: {row['interest'] or '(none shared)'} (user {row['user_id']})",
            f"- copy ({result.source}): **{copy.headline}** — {copy.body}",
            f"- checks: grounded={not check.unsupported}, claims_free={not check.claims}, "
            f"within_length={not check.too_long}; candidates rejected: {result.rejected}"
            + (f" ({'; '.join(result.reasons[:3])})" if result.reasons else ""),
            f"- template: {as_text(row['template'])}",
            f"- retrieval: {as_text(row['retrieval'])}",
            "",
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path
