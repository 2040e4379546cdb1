"""The README's result tables, rendered from the JSON files in benchmarks/results/.

Every figure the README quotes lives in a generated block between `<!-- results:NAME -->` and
`<!-- /results:NAME -->`; `update_readme` rewrites those blocks from the JSON, and with `check=True` only
reports the blocks that disagree (the test suite runs that). Torch-free and stdlib-only, so it runs anywhere.

    python -m training.bench.tables [--check] [--readme README.md] [--results benchmarks/results]
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recsys.durable import atomic_write
from training.bench.scale import BEAUTY_LOSS_RESULTS, beauty_loss_comparison

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
BLOCK = re.compile(r"<!-- results:([\w.-]+) -->\n(.*?)<!-- /results:\1 -->", re.DOTALL)
MERGED_LABEL = "**Hand-merged from two runs, to be re-measured.**"


# --- formatting -------------------------------------------------------------------------------------------


def num(value: Any, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def pct(value: Any, digits: int = 1) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}%"


def count(value: Any) -> str:
    return "—" if value is None else f"{value:,.0f}"


def secs(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def spread(mean: float, sd: float, n: int | None) -> str:
    return f"{num(mean)} ± {num(sd)}" + (f" (n={n})" if n else "")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def dig(doc: Any, *keys: str) -> Any:
    """doc[k1][k2]... or None when any level is missing (a missing figure renders as a dash)."""
    for key in keys:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def load(results_dir: Path, name: str) -> dict:
    return json.loads((results_dir / name).read_text(encoding="utf-8"))


def is_merged(command: str) -> bool:
    """A recorded command naming more than one invocation means figures of another run were merged in by hand."""
    return len(re.findall(r"\brecsys |python -m ", command)) > 1


def source(name: str, doc: dict, notes: list[str] | tuple[str, ...] = ()) -> str:
    """The caption under a table: the JSON file, its date, hardware and the command that wrote it."""
    command = doc.get("command", "?")
    line = f"Source: `benchmarks/results/{name}` — {doc.get('date', '?')}, {doc.get('hardware', '?')}; `{command}`."
    if is_merged(command):
        line += " " + MERGED_LABEL
    return " ".join([line, *notes])


# --- quality ----------------------------------------------------------------------------------------------


def seed_count(entry: dict) -> int | None:
    """How many seeds a mean ± sd is over: an explicit count when the JSON stores one, else the seeds list."""
    for key in ("n", "n_seeds", "seed_count"):
        if isinstance(entry.get(key), int):
            return entry[key]
    seeds = entry.get("seeds")
    if isinstance(seeds, int):
        return seeds
    return len(seeds) if isinstance(seeds, list) else None


def seed_runs(entry: dict) -> list[dict]:
    seeds = entry.get("seeds")
    return [s for s in seeds if isinstance(s, dict)] if isinstance(seeds, list) else []


def seed_ids(entry: dict) -> list:
    seeds = entry.get("seeds")
    if isinstance(seeds, list) and seeds:
        return [s.get("seed", "?") if isinstance(s, dict) else s for s in seeds]
    return [entry.get("seed", "?")]


def std_of(entry: dict, split: str) -> dict | None:
    return entry.get(f"{split}_std") or entry.get(f"{split}_sd")


def metric_cell(entry: dict, split: str, metric: str, with_spread: bool, digits: int = 4) -> str:
    value = dig(entry, split, metric)
    sd = dig(std_of(entry, split), metric)
    if with_spread and value is not None and sd is not None:
        return spread(value, sd, seed_count(entry))
    return num(value, digits)


def precision(entry: dict) -> str | None:
    hyper = entry.get("hyperparameters") or {}
    trains = [m.get("train", {}) for m in hyper.get("members", [])] or [hyper.get("train", {})]
    found = {t.get("precision") for t in trains if isinstance(t, dict)} - {None}
    return "/".join(sorted(found)) or None


def model_label(kind: str, entry: dict) -> str:
    members = entry.get("members")
    label = f"{kind}, ensemble of {len(members)}" if members else kind
    if kind != "lm":
        return label
    seeds = seed_ids(entry)
    details = [f"preset {entry['preset']}"] if entry.get("preset") else []
    details.append(f"seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else f"seed {seeds[0]}")
    return f"{label} ({'; '.join(details)})"


def valid_cell(entry: dict) -> str:
    """Held-out validation NDCG@10 of the fit that made the choices; figures of models that trained on the
    validation events are shown only under their own label."""
    selection = entry.get("selection_run")
    if isinstance(dig(selection, "valid"), dict):
        cell = f"{num(selection['valid'].get('NDCG@10'))} (selection run)"
    elif isinstance(entry.get("valid"), dict):
        cell = metric_cell(entry, "valid", "NDCG@10", with_spread=True)
    else:
        cell = "—"
    refit = entry.get("valid_refit_not_held_out")
    if refit is not None:
        value = refit.get("NDCG@10") if isinstance(refit, dict) else refit
        cell += f"; refit, not held out: {num(value)}"
    return cell


def wall_cell(entry: dict) -> str:
    runs = seed_runs(entry)
    walls = [r["train_wall_s"] for r in runs if "train_wall_s" in r]
    members = entry.get("members") or []
    if walls:
        cell = f"{secs(min(walls))}–{secs(max(walls))} per seed"
    elif members:
        cell = f"{secs(entry.get('train_wall_s'))} ({' + '.join(secs(m.get('train_wall_s')) for m in members)})"
    else:
        cell = secs(entry.get("train_wall_s"))
    selection_wall = dig(entry, "selection_run", "train_wall_s")
    return cell + (f"; selection run {secs(selection_wall)}" if selection_wall is not None else "")


def tokens_cell(entry: dict) -> str:
    rates = [r["tokens_per_s"] for r in seed_runs(entry) if "tokens_per_s" in r]
    members = entry.get("members") or []
    if rates:
        cell = f"{count(min(rates))}–{count(max(rates))}"
    elif members:
        cell = " / ".join(count(m.get("tokens_per_s")) for m in members)
    elif "tokens_per_s" in entry:
        cell = count(entry["tokens_per_s"])
    else:
        return ""
    mode = precision(entry)
    return cell + (f" ({mode})" if mode else "")


def quality_docs(results_dir: Path) -> list[tuple[str, dict]]:
    """quality-*.json by dataset, the dataset's own file (quality-<dataset>.json) first."""
    docs = [(p.name, json.loads(p.read_text(encoding="utf-8"))) for p in results_dir.glob("quality-*.json")]
    return sorted(docs, key=lambda d: (d[1].get("dataset", ""), d[0] != f"quality-{d[1].get('dataset')}.json", d[0]))


def members_table(rows: list[tuple[str, str, dict]]) -> str:
    body = []
    for ref, dataset, entry in rows:
        configs = (entry.get("hyperparameters") or {}).get("members", [])
        for i, member in enumerate(entry["members"]):
            lm = dig(configs[i], "lm") if i < len(configs) else None
            train = dig(configs[i], "train") if i < len(configs) else None
            body.append(
                [
                    f"{dataset} [{ref}]",
                    str(i),
                    str(dig(lm, "hidden_size") or "—"),
                    str(dig(lm, "attention_dropout") or "—"),
                    f"{dig(train, 'epochs') or '—'} / {member.get('epochs', '—')} / {member.get('best_epoch', '—')}",
                    num(member.get("best_valid_NDCG@10")),
                    secs(member.get("train_wall_s")),
                    count(member.get("tokens_per_s")),
                    str(dig(train, "precision") or "fp32"),
                ]
            )
    header = ["data", "member", "hidden", "dropout", "schedule / trained / best epochs", "best valid NDCG@10"]
    return table([*header, "train wall s", "real tokens/s", "precision"], body)


def quality(results_dir: Path) -> str:
    header = ["data", "model", "HR@10", "NDCG@10", "HR@50", "NDCG@200", "MRR", "coverage@10"]
    header += ["unmasked HR@10 / NDCG@10", "valid NDCG@10", "train wall s", "real tokens/s"]
    rows, captions, ensembles, seen = [], [], [], set()
    for ref, (name, doc) in enumerate(quality_docs(results_dir), start=1):
        dataset = doc.get("dataset", name)
        notes = []
        for kind, entry in doc.get("models", {}).items():
            key = (dataset, kind, json.dumps(entry.get("test"), sort_keys=True))
            if key in seen:
                continue
            seen.add(key)
            unmasked = f"{num(dig(entry, 'test_unmasked', 'HR@10'))} / {num(dig(entry, 'test_unmasked', 'NDCG@10'))}"
            rows.append(
                [
                    f"{dataset} [{ref}]",
                    model_label(kind, entry),
                    metric_cell(entry, "test", "HR@10", with_spread=True),
                    metric_cell(entry, "test", "NDCG@10", with_spread=True),
                    metric_cell(entry, "test", "HR@50", with_spread=False),
                    metric_cell(entry, "test", "NDCG@200", with_spread=False),
                    metric_cell(entry, "test", "MRR", with_spread=False),
                    metric_cell(entry, "test", "coverage@10", with_spread=False, digits=3),
                    unmasked,
                    valid_cell(entry),
                    wall_cell(entry),
                    tokens_cell(entry),
                ]
            )
            if entry.get("members"):
                ensembles.append((str(ref), dataset, entry))
            selection = entry.get("selection_run")
            if isinstance(selection, dict):
                what = f": {selection['what']}" if selection.get("what") else ""
                notes.append(
                    f"The {kind} selection run: `{selection.get('command', '?')}`, {selection.get('date')}{what}."
                )
            if entry.get("valid_note"):
                notes.append(f"Note on {kind}: {entry['valid_note']}.")
        captions.append(f"[{ref}] " + source(name, doc, notes))
    parts = [table(header, rows)]
    if ensembles:
        parts.append(
            "Ensemble members (each trained with early stopping on validation):\n\n" + members_table(ensembles)
        )
    notes = [
        "Test split, history items masked (the headline) unless marked unmasked. ± is the sd over seeds as the JSON "
        "stores it, n the number of seeds; without ± the row is one seed. Rows identical to one above (same data, "
        "model and test figures) are shown once."
    ]
    return "\n\n".join([*parts, *notes, "\n".join(f"- {c}" for c in captions)])


# --- ad copy ----------------------------------------------------------------------------------------------


def adcopy(results_dir: Path) -> str:
    doc = load(results_dir, "adcopy.json")
    systems = [
        ("generated (final copy)", "generated"),
        ("template", "template"),
        ("retrieval", "retrieval"),
        ("extractive rule", "extractive_rule"),
    ]
    unconstrained = doc.get("unconstrained_decoding", {})
    scores = table(
        ["", *(label for label, _ in systems), "same model, unconstrained"],
        [
            ["ROUGE-L F1 vs the item's description", *(num(dig(doc, "rougeL", k)) for _, k in systems)]
            + [num(unconstrained.get("rougeL"))],
            ["BLEU", *(num(dig(doc, "bleu", k), 2) for _, k in systems), "—"],
        ],
    )
    person, batch, lat = doc.get("personalisation", {}), doc.get("batch", {}), doc.get("latency_ms", {})
    sources = ", ".join(f"{v} {k}" for k, v in sorted((doc.get("live_sources") or {}).items()))
    figures = table(
        ["measure", "span-constrained (kept)", "same model, unconstrained"],
        [
            ["held-out items", count(doc.get("eval_items")), ""],
            ["fallback to the template", pct(doc.get("fallback_rate")), pct(unconstrained.get("fallback_rate"))],
            [
                "unsupported facts in the best raw candidate",
                pct(dig(doc, "unsupported_fact_rate", "before_filter")),
                pct(unconstrained.get("unsupported_fact_rate_before_filter")),
            ],
            [
                "unsupported facts after the checks",
                pct(dig(doc, "unsupported_fact_rate", "after_filter")),
                pct(unconstrained.get("unsupported_fact_rate_after_filter")),
            ],
            [
                "candidates refused: unsupported facts / non-record words / claims filter",
                " / ".join(
                    pct(doc.get(k), 2)
                    for k in ("unsupported_rejection_rate", "vocabulary_rejection_rate", "claims_rejection_rate")
                ),
                "",
            ],
            [
                "final copies passing every check / length compliance",
                f"{pct(doc.get('final_checks_pass_rate'))} / {pct(doc.get('length_compliance'))}",
                "",
            ],
            ["distinct-1 / distinct-2", f"{num(doc.get('distinct1'), 3)} / {num(doc.get('distinct2'), 3)}", ""],
        ],
    )
    personal = table(
        [
            "personalisation (each item for " + str(person.get("users_per_item", "?")) + " users)",
            "model",
            "history-blind (no interest)",
        ],
        [
            [
                "copy names an interest in that user's history",
                pct(person.get("model")),
                pct(person.get("history_blind")),
            ],
            [
                "copies differ across the users",
                pct(person.get("copies_differ_model")),
                pct(person.get("copies_differ_history_blind")),
            ],
        ],
    )
    bias = doc.get("bias", {})
    bias_rows = [
        [label, *(fmt(dig(bias, group, key)) for group in ("A", "B", "max_gap"))]
        for label, key, fmt in [
            ("raw claim rate", "raw_claim_rate", num),
            ("exclamation rate", "exclamation_rate", num),
            ("interest-hook rate", "hook_rate", num),
            ("fallback rate", "fallback_rate", num),
            ("mean body characters", "mean_body_chars", lambda v: num(v, 1)),
        ]
    ]
    bias_table = table(["bias (users split by a hash of their ID)", "group A", "group B", "largest gap"], bias_rows)
    serving = table(
        ["serving and batch", "value"],
        [
            [
                "`POST /v1/ad-copy`, precomputed, p50 / p99 ms",
                f"{num(lat.get('precomputed_p50'), 2)} / {num(lat.get('precomputed_p99'), 2)}",
            ],
            ["live generation, p50 / p99 ms", f"{num(lat.get('live_p50'), 0)} / {num(lat.get('live_p99'), 0)}"],
            ["live generation, ms per token", num(lat.get("live_ms_per_token"), 2)],
            [
                "live requests inside the budget (answers by source)",
                f"{pct(doc.get('live_within_budget'))} ({sources})",
            ],
            ["requests per phase (concurrency 1)", count(lat.get("requests_each"))],
            ["server process imported torch", {True: "yes", False: "no"}.get(doc.get("server_imported_torch"), "—")],
            [
                "batch: copies (distinct item + interest pairs)",
                f"{count(batch.get('copies'))} ({count(batch.get('distinct'))})",
            ],
            [
                "batch: generated share, seconds, distinct copies per second",
                f"{pct(batch.get('generated_share'))}, "
                f"{secs(batch.get('seconds'))}, {num(batch.get('distinct_per_s'), 1)}",
            ],
        ],
    )
    model = doc.get("copy_model", {})
    notes = [
        f"The copy model ({'reused, ' if model.get('reused') else ''}trained {model.get('date', '?')}): "
        f"{count(model.get('params'))} parameters, {model.get('epochs', '?')} epochs in "
        f"{secs(model.get('train_wall_s'))} s, "
        f"held-out loss {num(model.get('best_valid_loss'))}, {count(model.get('train_items'))} training items."
    ]
    if doc.get("latency_command"):
        notes.append(f"Latency rows: `{doc['latency_command']}`, {doc.get('latency_date', '?')}.")
    return "\n\n".join([scores, figures, personal, bias_table, serving, source("adcopy.json", doc, notes)])


SYSTEM_LABELS = {
    "template": "template",
    "extractive": "extractive rule",
    "retrieval": "retrieval (nearest training item)",
    "small_model": "small model, span-constrained",
    "pretrained_zero_shot": "SmolLM2-135M zero-shot",
    "pretrained_finetuned": "SmolLM2-135M fine-tuned, float",
    "pretrained_finetuned_quantised": "SmolLM2-135M fine-tuned, int8",
}


def quoted_copy(copy: dict | None) -> str:
    if not copy:
        return "—"
    return f"“{copy.get('headline', '')}” — {copy.get('body', '')}".replace("|", "/")


def fallback_cell(system: dict) -> str:
    """ "20.5%" (the template only) or "41.0% (36.2%)" (of which the record's own sentences); "—" for a rule."""
    if "fallback_rate" not in system:
        return "—"
    extractive = system.get("extractive_fallback_rate")
    return pct(system["fallback_rate"]) + ("" if extractive is None else f" ({pct(extractive)})")


def adcopy_systems(results_dir: Path) -> str:
    """Every copy system on the same held-out items (fluency, informativeness, boilerplate, safety), the live
    and precomputed latencies that decide which writer answers live, and the first three held-out items' copy."""
    doc = load(results_dir, "adcopy.json")
    systems = doc.get("systems") or {}
    if not systems:
        return "Not measured yet: `recsys benchmark adcopy --publish` writes this table."
    header = ["system", "items", "ROUGE-L", "BLEU", "perplexity (base model)", "repeated trigrams"]
    header += ["informative", "boilerplate", "unsupported after checks", "fallback (of it: record's sentences)"]
    header += ["written by the model and informative"]
    rows = [
        [
            SYSTEM_LABELS.get(name, name),
            count(s.get("items")),
            num(s.get("rougeL")),
            num(s.get("bleu"), 1),
            num(s.get("perplexity"), 1),
            pct(s.get("repeat_ngram_rate")),
            pct(s.get("informative_rate")),
            pct(s.get("boilerplate_rate")),
            pct(s.get("unsupported_after_checks")),
            fallback_cell(s),
            pct(s.get("generated_informative_rate")) if "generated_informative_rate" in s else "—",
        ]
        for name, s in systems.items()
    ]
    blocks = [table(header, rows)]
    live, pre, lat = doc.get("pretrained_live") or {}, doc.get("live") or {}, doc.get("latency_ms") or {}
    if live:
        small = ["small model (HTTP, live)", num(lat.get("live_p50"), 0), num(lat.get("live_p99"), 0)]
        small += [num(lat.get("live_ms_per_token"), 2), "—", pct(doc.get("live_within_budget"))]
        blocks.append(
            table(
                ["live path, batch 1", "p50 ms", "p99 ms", "ms per token", "prompt (prefill) ms", "inside budget"],
                [
                    [
                        f"{live.get('model', '?')} (in process, {count(live.get('requests'))} items)",
                        num(live.get("p50_ms"), 0),
                        num(live.get("p99_ms"), 0),
                        num(live.get("ms_per_token_p50"), 1),
                        num(live.get("prefill_ms_p50"), 0),
                        pct(live.get("in_budget_rate")),
                    ],
                    small,
                ],
            )
        )
    notes = [
        f"Live requests are answered by: {pre.get('model', '?')}. "
        f"Precomputed copy over HTTP: p99 {num(doc.get('precomputed_p99_ms'), 2)} ms."
    ]
    trained = doc.get("pretrained") or {}
    harvest, training = trained.get("harvest") or {}, trained.get("training") or {}
    if harvest:
        refused = ", ".join(f"{reason} {n}" for reason, n in (harvest.get("refused") or {}).items())
        notes.append(
            f"Targets: the base model wrote {count(harvest.get('candidates'))} candidates for "
            f"{count(harvest.get('items'))} training items in {secs(harvest.get('wall_s'))} s; "
            f"{pct(harvest.get('acceptance_rate'))} of the items kept one (refused: {refused or 'none'}); "
            f"{count(dig(trained, 'pairs', 'total'))} training pairs with the record-derived ones. "
            f"Fine-tuning: {count(training.get('trained_params'))} of {count(training.get('total_params'))} "
            f"parameters, {count(training.get('examples_seen'))} examples ({pct(training.get('epoch_share'), 0)} "
            f"of an epoch) in {secs(training.get('train_wall_s'))} s."
        )
    selection = doc.get("repeat_penalty") or {}
    if selection.get("grid"):
        grid = "; ".join(
            f"{'repeats last' if row['repeat_penalty'] is None else num(row['repeat_penalty'], 0)}: "
            f"{num(row['perplexity'], 1)}, {pct(row['repeat_ngram_rate'])}"
            for row in selection["grid"]
        )
        chosen = selection.get("chosen")
        baselines = ", ".join(
            f"{SYSTEM_LABELS.get(n, n)} {pct(r)}" for n, r in (selection.get("baselines") or {}).items()
        )
        notes.append(
            f"Repeat penalty: {'repeats last' if chosen is None else num(chosen, 0)}, chosen on "
            f"{count(selection.get('items'))} validation items (training items the fine-tune never saw) as the "
            f"lowest perplexity whose repeated trigrams stay below every baseline's there ({baselines}); "
            f"penalty: perplexity, repeats: {grid}."
        )
    examples = doc.get("examples_first_three") or []
    if examples:
        lines = ["The first three held-out items by item ID:"]
        for example in examples:
            lines.append(f"- **{example.get('name', '?')}** (`{example.get('item_id')}`)")
            for name in ("pretrained_finetuned", "small_model", "extractive"):
                if name in example:
                    lines.append(f"  - {SYSTEM_LABELS[name]}: {quoted_copy(example[name])}")
        blocks.append("\n".join(lines))
    return "\n\n".join([*blocks, source("adcopy.json", doc, notes)])


def adcopy_smollm2(results_dir: Path) -> str:
    doc = load(results_dir, "adcopy-smollm2.json")
    small = load(results_dir, "adcopy.json")
    tuned, zero = doc.get("fine_tuned", {}), doc.get("zero_shot", {})
    lat = small.get("latency_ms", {})
    fallback = small.get("fallback_rate")
    rows = [
        ["items evaluated", count(tuned.get("items")), count(zero.get("items")), count(small.get("eval_items"))],
        ["ROUGE-L F1", num(tuned.get("rougeL")), num(zero.get("rougeL")), num(dig(small, "rougeL", "generated"))],
        ["BLEU", num(tuned.get("bleu"), 1), num(zero.get("bleu"), 1), num(dig(small, "bleu", "generated"), 1)],
        [
            "copies that pass every check as generated",
            pct(tuned.get("checks_pass_rate")),
            pct(zero.get("checks_pass_rate")),
            pct(None if fallback is None else 1 - fallback),
        ],
        ["output in the headline/body format", pct(tuned.get("parsed_rate")), pct(zero.get("parsed_rate")), ""],
        [
            "length compliance",
            pct(tuned.get("length_compliance")),
            pct(zero.get("length_compliance")),
            pct(small.get("length_compliance")),
        ],
        [
            "ms per token (median)",
            num(tuned.get("ms_per_token_median"), 1),
            num(zero.get("ms_per_token_median"), 1),
            num(lat.get("live_ms_per_token"), 2),
        ],
        [
            "ms per copy, p99",
            count(tuned.get("copy_ms_p99")),
            count(zero.get("copy_ms_p99")),
            count(lat.get("live_p99")),
        ],
    ]
    header = ["", "SmolLM2-135M, fine-tuned", "SmolLM2-135M, zero-shot", "small model, span-constrained (adcopy.json)"]
    training = doc.get("training", {})
    notes = [
        f"Fine-tuning: {training.get('method', '?')}; {count(training.get('examples_seen'))} examples seen "
        f"({pct(training.get('epoch_share'), 0)} of an epoch) in {secs(training.get('train_wall_s'))} s. "
        "SmolLM2 runs in torch, greedy, batch 1, on items without an interest; the small model in onnxruntime with "
        "its KV cache, over all its held-out items (its ms rows are the live-generation latency of "
        "`benchmarks/results/adcopy.json`, captioned above)."
    ]
    return "\n\n".join([table(header, rows), source("adcopy-smollm2.json", doc, notes)])


# --- the other benchmarks ---------------------------------------------------------------------------------


def cold_start(results_dir: Path) -> str:
    doc = load(results_dir, "cold-start-scientific.json")
    results = doc.get("results", {})
    systems = list(dict.fromkeys(s for target in results.values() for s in target))
    rows = []
    for target, by_system in results.items():
        users = next((m.get("users") for m in by_system.values() if "users" in m), None)
        cells = [
            f"{num(dig(by_system, s, 'HR@10'))} / {num(dig(by_system, s, 'NDCG@10'))}" if s in by_system else "—"
            for s in systems
        ]
        rows.append([f"{target.replace('_', ' ')} ({count(users)} users)", *cells])
    header = ["test targets: HR@10 / NDCG@10", *systems]
    selection = doc.get("selection", {})
    chosen = dig(selection, "variants", selection.get("chosen", ""))
    notes = [
        f"{count(doc.get('cold_items'))} of {count(doc.get('items'))} items held out of training; text encoder "
        f"{doc.get('text_encoder', '?')}; projector `{doc.get('projector', '?')}`, chosen on the validation split "
        f"among {len(selection.get('variants', {}))} variants by {selection.get('criterion', '?')}"
        + (
            f" (its validation NDCG@10: all {num(chosen.get('all NDCG@10'))}, cold targets "
            f"{num(chosen.get('cold NDCG@10'))}, warm targets {num(chosen.get('warm NDCG@10'))})."
            if isinstance(chosen, dict)
            else "."
        )
    ]
    return "\n\n".join([table(header, rows), source("cold-start-scientific.json", doc, notes)])


def slates(results_dir: Path) -> str:
    doc = load(results_dir, "slates-ml-1m-half.json")
    n = doc.get("n", "?")
    keys = ["precision@", "ndcg@", "first_hit", "next_item_in_slate"]
    header = ["slate", f"precision@{n}", f"NDCG@{n}", "first item hit", "next item in the slate"]
    rows = []
    for name, metrics in doc.get("results", {}).items():
        values = [metrics.get(f"{k}{n}") if k.endswith("@") else metrics.get(k) for k in keys]
        rows.append([name.replace("_", " "), *(num(v) for v in values)])
    train = doc.get("train", {})
    notes = [
        f"{count(doc.get('users'))} users. Protocol: {doc.get('protocol', '?')}. "
        f"The model: {train.get('epochs', '?')} epochs "
        f"(best {train.get('best_epoch', '?')}, validation NDCG@10 {num(train.get('best_valid_NDCG@10'))}) in "
        f"{secs(train.get('train_wall_s'))} s."
    ]
    return "\n\n".join([table(header, rows), source("slates-ml-1m-half.json", doc, notes)])


def serving(results_dir: Path) -> str:
    doc = load(results_dir, "serving.json")
    header = ["bundle", "items", "max len", "in-process p50 / p99 ms (batch 1)", "HTTP c=1 p50 / p99 / p99.9 ms"]
    header += ["service req/s", "torch baseline req/s", "ratio", "errors (service / baseline)"]
    rows = []
    for name, b in doc.get("bundles", {}).items():
        rows.append(
            [
                name,
                count(b.get("items")),
                str(b.get("max_len", "—")),
                f"{num(b.get('inprocess_p50_ms'), 2)} / {num(b.get('inprocess_p99_ms'), 2)}",
                " / ".join(num(b.get(k), 2) for k in ("http_c1_p50_ms", "http_c1_p99_ms", "http_c1_p999_ms")),
                f"{count(b.get('http_rps'))} (c={b.get('http_concurrency', '?')})",
                count(b.get("baseline_rps")),
                f"{num(b.get('rps_ratio_vs_baseline'), 1)}x",
                f"{count(b.get('errors'))} / {count(b.get('baseline_errors'))}",
            ]
        )
    settings = doc.get("settings", {})
    start, end = doc.get("load_average_at_start"), doc.get("load_average_at_end")
    notes = [
        f"{settings.get('workers', '?')} workers, {settings.get('duration_s', '?')} s per phase, "
        f"`{settings.get('route', '?')}`; load average at start {start}, at end {end}."
    ]
    return "\n\n".join([table(header, rows), source("serving.json", doc, notes)])


def serving_scale(results_dir: Path) -> str:
    doc = load(results_dir, "serving-scale.json")
    header = ["setup", "replicas", "rate asked / achieved req/s", "p50 ms", "p99 ms", "reads p99 ms"]
    header += ["writes p99 ms", "errors", "events acknowledged", "lost"]
    rows = []
    for run in doc.get("runs", []):
        reads = dig(run, "by_request", "GET recommendations") or {}
        writes = dig(run, "by_request", "POST events") or {}
        rows.append(
            [
                str(run.get("setup", "—")),
                str(run.get("replicas", "—")),
                f"{count(run.get('rate_rps'))} / {num(run.get('achieved_rps'), 1)}",
                num(run.get("p50_ms"), 0),
                num(run.get("p99_ms"), 0),
                num(reads.get("p99_ms"), 0),
                num(writes.get("p99_ms"), 0),
                count(run.get("errors")),
                count(run.get("acked_events")),
                f"**{count(run.get('lost_events'))}**",
            ]
        )
    rss, reload_s = doc.get("histories_rss_per_worker_mb") or {}, doc.get("reload_s") or {}
    memory = table(
        ["histories of " + count(rss.get("users")) + " users", "before (dict of lists)", "after (memory-mapped)"],
        [
            ["private memory per worker, MB", num(rss.get("before"), 1), num(rss.get("after"), 1)],
            ["open at each reload, s", num(reload_s.get("before"), 3), num(reload_s.get("after"), 3)],
        ],
    )
    settings = doc.get("settings", {})
    notes = [
        f"Load tool {doc.get('load_tool', '?')}, {settings.get('clients', '?')}; store {doc.get('store', '?')} "
        f"({settings.get('redis', '?')}); {settings.get('workers_per_replica', '?')} worker per replica; "
        f"{settings.get('duration_s', '?')} s per rate; load average at start {doc.get('load_average_at_start')}, "
        f"at end {doc.get('load_average_at_end')}."
    ]
    return "\n\n".join([table(header, rows), memory, source("serving-scale.json", doc, notes)])


def growth(wall: tuple[Any, Any], events: tuple[Any, Any]) -> str:
    """How a stage's wall time grows with the events: the exponent b of wall ~ events^b between two sizes
    (1: linear, above: worse than linear, below: fixed costs still dominate)."""
    (small, large), (n_small, n_large) = wall, events
    if not all(isinstance(v, int | float) and v > 0 for v in (small, large, n_small, n_large)) or n_large == n_small:
        return "—"
    return f"{math.log(large / small) / math.log(n_large / n_small):.2f}"


def stage_cell(stage: dict | None) -> str:
    if not stage:
        return "—"
    if "error" in stage:
        return "timed out" if "timed out" in str(stage["error"]) else "failed"
    if stage.get("skipped"):
        return "skipped"
    return f"{secs(stage.get('wall_s'))} / {count(round(stage['peak_rss_mb'])) if stage.get('peak_rss_mb') else '—'}"


DEFAULT_EVAL_USERS = 20_000  # the nightly's --eval-users and the report's --backtest-users when not given


def scale(results_dir: Path) -> str:
    doc = load(results_dir, "scale.json")
    sizes = doc.get("sizes", [])
    labels = [
        f"{count(s.get('items'))} items, {count(s.get('users'))} users, {count(s.get('events'))} events" for s in sizes
    ]
    pairs = list(itertools.pairwise(range(len(sizes))))
    header = ["stage", *[f"{label}: wall s / peak MB" for label in labels]]
    header += [f"growth {count(sizes[a].get('items'))}→{count(sizes[b].get('items'))}" for a, b in pairs]
    names = list(doc.get("protocol", {}).get("stages") or [])
    for size in sizes:
        names += [name for name in size.get("stages", {}) if name not in names]
    rows = []
    for name in names:
        stages = [dig(size, "stages", name) for size in sizes]
        row = [name, *[stage_cell(stage) for stage in stages]]
        for a, b in pairs:
            ok = all(stages[i] and "error" not in stages[i] for i in (a, b))
            walls = (stages[a].get("wall_s"), stages[b].get("wall_s")) if ok else (None, None)
            row.append(growth(walls, (sizes[a].get("events"), sizes[b].get("events"))))
        rows.append(row)
    detail_header = ["size", "eval users", "index", "recall@10", "search p50 / p99 ms", "index build s", "bundle MB"]
    detail_header += ["bundle open s", "tokens/s sampled", "tokens/s full softmax", "nightly steps (s)"]
    details = []
    for label, size in zip(labels, sizes, strict=True):
        index, tokens = size.get("index") or {}, size.get("train_tokens_per_s") or {}
        steps = dig(size, "stages", "nightly", "steps") or {}
        details.append(
            [
                label,
                count(size.get("eval_users") or DEFAULT_EVAL_USERS),
                str(index.get("kind", "—")),
                num(index.get("recall_at_10"), 3),
                f"{num(index.get('search_p50_ms'), 2)} / {num(index.get('search_p99_ms'), 2)}",
                num(index.get("build_s"), 1),
                num(dig(size, "stages", "export", "bundle_mb"), 1),
                num(dig(size, "stages", "bundle_load", "open_s"), 2),
                count(tokens.get("sampled")),
                count(tokens.get("full")) if tokens.get("full") is not None else "not measured",
                ", ".join(f"{step} {value:g}" for step, value in steps.items()) or "—",
            ]
        )
    notes = []
    commands = {(size.get("command"), size.get("date")) for size in sizes if size.get("command")}
    if len(commands) > 1:  # sizes measured by different runs (--keep-sizes): each says which
        notes.append(
            "Measured by: "
            + "; ".join(
                f"{label.split(' items')[0]} items: `{size['command']}` ({size.get('date')})"
                for label, size in zip(labels, sizes, strict=True)
                if size.get("command")
            )
            + "."
        )
    # read from the two quality files themselves: they are measured apart, and a newer one must show here
    comparison = beauty_loss_comparison(results_dir)
    if comparison.get("full_ndcg10") or comparison.get("sampled_ndcg10"):
        notes.append(
            f"Beauty test NDCG@10 per seed ({', '.join(f'`{n}`' for n in BEAUTY_LOSS_RESULTS.values())}): full softmax "
            + (", ".join(num(v) for v in comparison.get("full_ndcg10") or []) or "not run")
            + "; sampled softmax "
            + (", ".join(num(v) for v in comparison.get("sampled_ndcg10") or []) or "not run")
            + (
                f"; sampled / full (means) = {comparison['sampled_over_full']:.3f}"
                if comparison.get("sampled_over_full") is not None
                else ""
            )
            + "."
        )
    return "\n\n".join([table(header, rows), table(detail_header, details), source("scale.json", doc, notes)])


def train_throughput(results_dir: Path) -> str:
    doc = load(results_dir, "train-throughput.json")
    header = ["step", "precision", "items", "max len", "batch", "real tokens/s", "median step ms", "padding"]
    rows = [
        [
            f"`{name}`",
            str(r.get("precision", "—")),
            count(r.get("n_items")),
            str(r.get("max_len", "—")),
            str(r.get("batch_size", "—")),
            f"**{count(r.get('real_tokens_per_s'))}**",
            num(r.get("median_step_ms"), 1),
            pct(r.get("padding_share")),
        ]
        for name, r in doc.get("results", {}).items()
    ]
    return "\n\n".join([table(header, rows), source("train-throughput.json", doc)])


def nightly_replay(results_dir: Path) -> str:
    doc = load(results_dir, "nightly-replay.json")
    header = ["run", "mode", "events added", "candidate NDCG@10", "production NDCG@10", "popularity NDCG@10"]
    header += ["status", "epochs (best)", "train s", "wall s"]
    rows = []
    for run in [doc.get("initial", {}), *doc.get("nights", [])]:
        rows.append(
            [
                str(run.get("run_id", "?")),
                str(run.get("mode", "?")),
                count(run.get("events_added")),
                num(run.get("ndcg10")),
                num(run.get("production_ndcg10")),
                num(run.get("popularity_ndcg10")),
                str(run.get("status", "?")),
                f"{run.get('epochs', '?')} ({run.get('best_epoch', '?')})",
                secs(run.get("train_wall_s")),
                secs(run.get("wall_s")),
            ]
        )
    replays = sorted(results_dir.glob("nightly-replay*.json"), key=lambda p: (p.name != "nightly-replay.json", p.name))
    versus, captions = [], []
    for path in replays:
        replay = doc if path.name == "nightly-replay.json" else json.loads(path.read_text(encoding="utf-8"))
        settings, w = replay.get("settings", {}), replay.get("warm_vs_scratch", {})
        shrink = settings.get("warm_shrink")
        recipe = f"shrink {shrink}" if shrink is not None else "no `warm_shrink` setting (earlier recipe)"
        versus.append(
            [
                f"`{path.name}`",
                f"{recipe}, warm budget {settings.get('warm_minutes', '?')} min",
                f"{num(w.get('warm_ndcg10'))} in {secs(w.get('warm_train_s'))} s ({w.get('warm_epochs', '?')} epochs)",
                f"{num(w.get('scratch_ndcg10'))} in {secs(w.get('scratch_train_s'))} s "
                f"({w.get('scratch_epochs', '?')} epochs, best {w.get('scratch_best_epoch', '?')})",
                f"**{pct(w.get('ndcg10_ratio'))}**",
                pct(w.get("time_ratio")),
            ]
        )
        captions.append("- " + source(path.name, replay))
    versus_table = table(
        ["replay", "warm start", "warm candidate, last night", "from scratch, same data", "quality", "time"], versus
    )
    drill, kills = doc.get("gate_drill", {}), doc.get("kill_tests", {})
    drills = table(
        ["drill", "result"],
        [
            [
                "candidate trained on shuffled sequences",
                f"{drill.get('status', '?')} ({num(drill.get('candidate'))} vs production "
                f"{num(drill.get('production'))}); CURRENT unchanged: {drill.get('current_unchanged')}",
            ],
            [
                f"SIGKILL at each step ({kills.get('dataset', '?')})",
                f"{kills.get('runs', '?')} runs, {kills.get('failures', '?')} failures",
            ],
        ],
    )
    return "\n\n".join([table(header, rows), versus_table, drills, "\n".join(captions)])


def ddp(results_dir: Path) -> str:
    doc = load(results_dir, "ddp.json")
    header = ["comparison", "processes", "train wall s", "tokens/s", "test NDCG@10", "largest weight difference"]
    rows = []
    for name, comparison in doc.get("comparisons", {}).items():
        for run in comparison.get("runs", {}).values():
            rows.append(
                [
                    name,
                    str(run.get("processes", "?")),
                    secs(run.get("train_wall_s")),
                    count(run.get("tokens_per_s")),
                    num(dig(run, "test", "NDCG@10")),
                    f"{comparison.get('max_abs_weight_diff', float('nan')):.1e} (of weights up to "
                    f"{num(comparison.get('max_abs_weight'), 2)})"
                    if run.get("processes", 1) > 1
                    else "",
                ]
            )
    notes = [doc["note"]] if doc.get("note") else []
    return "\n\n".join([table(header, rows), source("ddp.json", doc, notes)])


BLOCKS: dict[str, Callable[[Path], str]] = {
    "adcopy": adcopy,
    "adcopy-smollm2": adcopy_smollm2,
    "adcopy-systems": adcopy_systems,
    "quality": quality,
    "cold-start": cold_start,
    "slates": slates,
    "serving": serving,
    "serving-scale": serving_scale,
    "scale": scale,
    "train-throughput": train_throughput,
    "nightly-replay": nightly_replay,
    "ddp": ddp,
}


def render_blocks(results_dir: Path = RESULTS_DIR) -> dict[str, str]:
    return {name: render(Path(results_dir)) for name, render in BLOCKS.items()}


def update_readme(readme: Path, results_dir: Path, check: bool = False) -> list[str]:
    """Rewrite every results block of `readme` from the JSON in `results_dir`; return the names of the blocks
    that differed (with check=True nothing is written). A block the README lacks counts as differing."""
    text = Path(readme).read_text(encoding="utf-8")
    rendered = render_blocks(results_dir)
    present = {m.group(1) for m in BLOCK.finditer(text)}
    unknown = present - rendered.keys()
    if unknown:
        raise ValueError(f"{readme}: results blocks with no renderer: {', '.join(sorted(unknown))}")
    differing = [name for name in rendered if name not in present]
    if differing and not check:
        raise ValueError(
            f"{readme}: no markers for {', '.join(differing)}: add <!-- results:NAME --> ... <!-- /results:NAME -->"
        )

    def replace(match: re.Match) -> str:
        name, body = match.group(1), match.group(2)
        new_body = rendered[name].strip() + "\n"
        if body != new_body:
            differing.append(name)
        return f"<!-- results:{name} -->\n{new_body}<!-- /results:{name} -->"

    new_text = BLOCK.sub(replace, text)
    if not check and new_text != text:
        atomic_write(readme, lambda tmp: tmp.write_text(new_text, encoding="utf-8"))
    return differing
