"""The pretrained model's copy path, end to end on a tiny Llama (the architecture of SmolLM2) with its own
byte-level tokenizer, trained here until it writes fixed copies: exported to ONNX, decoded by onnxruntime alone,
checked like the small model's copy. A learned copy that invents a number is refused; the template answers."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from recsys.adcopy import CatalogueFacts, Copy, ItemRecord, template_copy
from recsys.adcopy.chat import IM_END, IM_START, copy_target, parse_generated, record_prompt
from recsys.adcopy.chat_writer import FLOAT_DECODER, ChatCopyWriter
from recsys.adcopy.extractive import EXTRACTIVE_FALLBACK
from recsys.bundle.layout import ADCOPY_DIR, COPY_COPIES, COPY_DECODER
from training.adcopy.batch import write_adcopy_assets
from training.adcopy.evaluation import perplexity
from training.adcopy.llama import export_chat_writer
from training.adcopy.pretrained import (
    PretrainedCopyConfig,
    SmolTrainConfig,
    encode,
    fine_tune,
    harvest_opening,
    harvest_targets,
    train_pretrained_writer,
    training_pairs,
    vet,
)
from training.bench.adcopy_pretrained import REPEAT_PENALTIES, items_sha256, pretrained_systems, reusable_stats

RECORDS = [
    ItemRecord(
        "B01", "Kimble Glass Beaker", "Kimble", ("Lab Supplies", "Beakers"), 12.5,
        "Made of borosilicate glass, 250 ml capacity, graduated for heating solutions.",
    ),
    ItemRecord(
        "B02", "Nitrile Exam Gloves", "Medline", ("Lab Supplies", "Gloves"), 9.99,
        "Powder-free nitrile gloves in a box of 100, textured fingertips for grip.",
    ),
    ItemRecord(
        "B03", "Digital Pocket Scale", "Weighmax", ("Lab Supplies", "Scales"), 19.0,
        "Weighs up to 500 g in 0.1 g steps, with a tare button and a backlit display.",
    ),
]  # fmt: skip
TARGETS = {
    "B01": Copy("Kimble Glass Beaker", "Borosilicate glass that holds 250 ml, graduated for heating solutions."),
    "B02": Copy("Nitrile Exam Gloves", "Powder-free, textured fingertips, and 900 gloves in every box."),  # invented
    "B03": Copy("Digital Pocket Scale", "Weighs up to 500 g in 0.1 g steps, with a tare button."),
}


STEPS = 300  # at most; stops once the copies are memorised


def tiny_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def writer_dir(tmp_path_factory) -> tuple:
    prompts = [record_prompt(record, None) for record in RECORDS]
    targets = [copy_target(TARGETS[record.item_id]) for record in RECORDS]
    tokenizer = tiny_tokenizer(prompts + targets)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        tie_word_embeddings=True,
        max_position_embeddings=512,
    )
    model = LlamaForCausalLM(config)
    encoded = []
    for prompt, target in zip(prompts, targets, strict=True):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        t = tokenizer(target, add_special_tokens=False)["input_ids"]
        encoded.append((p + t, len(p)))
    width = max(len(ids) for ids, _ in encoded)
    ids = torch.zeros(len(encoded), width, dtype=torch.long)
    mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
    for row, (seq, begin) in enumerate(encoded):  # one right-padded batch; the loss on the copy only
        ids[row, : len(seq)], mask[row, : len(seq)] = torch.tensor(seq), 1
        labels[row, begin - 1 : len(seq) - 1] = torch.tensor(seq[begin:])
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    for _ in range(STEPS):  # memorise the three copies
        loss = F.cross_entropy(model(ids, attention_mask=mask).logits.flatten(0, 1), labels.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.01:
            break
    model.eval()
    directory = export_chat_writer(model, tokenizer, tmp_path_factory.mktemp("chat"), quantise=False, model_name="tiny")
    return directory, CatalogueFacts.from_records(RECORDS), model, tokenizer


def test_the_learned_grounded_copy_is_written_and_passes_the_checks(writer_dir) -> None:
    directory, facts, *_ = writer_dir
    writer = ChatCopyWriter(directory, facts)
    for item_id in ("B01", "B03"):
        record = next(r for r in RECORDS if r.item_id == item_id)
        result = writer.write(record, None, n=1)
        assert result.source == "generated", result.reasons
        assert result.copy == TARGETS[item_id]
        assert result.tokens > 10 and result.finished


def test_a_copy_that_invents_a_number_is_refused_and_a_checked_fallback_answers(writer_dir) -> None:
    directory, facts, *_ = writer_dir
    writer = ChatCopyWriter(directory, facts)
    gloves = RECORDS[1]
    result = writer.write(gloves, None, n=1)
    assert result.unchecked == TARGETS["B02"]  # the model did write the invented copy...
    assert result.source == "fallback"  # ...and it was refused
    assert any("unsupported number '900'" in reason for reason in result.reasons), result.reasons
    assert "900" not in f"{result.copy.headline} {result.copy.body}"


def test_a_batch_of_left_padded_prompts_writes_what_one_at_a_time_writes(writer_dir) -> None:
    directory, facts, *_ = writer_dir
    writer = ChatCopyWriter(directory, facts)
    one_by_one = [writer.write(record, None, n=1) for record in RECORDS]
    batched = writer.write_many([(record, None) for record in RECORDS], batch_size=3, n=1)
    assert [r.copy for r in batched] == [r.copy for r in one_by_one]
    assert [r.source for r in batched] == ["generated", "fallback", "generated"]


def test_of_the_candidates_that_pass_the_informative_one_is_kept_before_a_better_scored_empty_one(writer_dir) -> None:
    from recsys.adcopy.writer import CopyResult

    directory, facts, *_ = writer_dir
    writer, beaker = ChatCopyWriter(directory, facts), RECORDS[0]
    bare = dataclasses.replace(beaker, description=None)
    terse = dataclasses.replace(beaker, description="250 ml borosilicate")  # grounds the copy, too short to quote
    texts = [
        " Kimble Glass Beaker\nBody: A Kimble beaker, a beaker by Kimble." + IM_END,  # passes, says nothing
        " Kimble Glass Beaker\nBody: Holds 900 ml." + IM_END,  # says something false: refused
        " Kimble Glass Beaker\nBody: Borosilicate glass that holds 250 ml." + IM_END,  # passes, informative
    ]

    def chosen(candidates: list[str], scores: list[float], record: ItemRecord = beaker) -> CopyResult:
        fresh = CopyResult(template_copy(record, None), "fallback")
        return writer.choose(candidates, np.asarray(scores), record, fresh)

    best = chosen(texts, [-0.1, -0.2, -0.9], terse)  # no sentences of its own: the candidates alone compete
    assert best.source == "generated" and best.copy.body == "Borosilicate glass that holds 250 ml."
    assert best.rejected == 1 and any("unsupported number '900'" in r for r in best.reasons)
    # with no informative candidate, the record's own sentences say more than an empty copy; flagged fallback
    alone = chosen(texts[:1], [-0.1])
    assert alone.source == "fallback" and alone.reasons[-1] == EXTRACTIVE_FALLBACK
    assert alone.copy == Copy("Kimble Glass Beaker", beaker.description)
    assert chosen(texts[1:2], [-0.1]).copy == alone.copy  # the false one refused, the same sentences answer
    # beside an informative candidate the record's sentences compete on how the copy reads
    both = chosen(texts, [-0.1, -0.2, -0.9])
    options = [best.copy, alone.copy]
    assert both.copy == options[writer.most_readable(options, beaker)]
    # a record with no sentences to fall back on: a copy that passes still beats the template
    empty = chosen(texts[:1], [-0.1], bare)
    assert empty.source == "generated" and empty.copy.body.startswith("A Kimble beaker")
    assert chosen(texts[1:2], [-0.1], bare).copy == template_copy(bare, None)


def test_the_copy_that_reads_best_is_shipped_and_a_repeat_costs_what_the_penalty_says(writer_dir) -> None:
    from recsys.adcopy.quality import copy_quality
    from recsys.adcopy.writer import CopyResult

    directory, facts, *_ = writer_dir
    writer, beaker = ChatCopyWriter(directory, facts), RECORDS[0]
    bare = dataclasses.replace(beaker, description=None)
    echo = Copy("Kimble Glass Beaker", "Kimble Glass Beaker in borosilicate glass, holds 250 ml.")
    plain = Copy("Kimble Glass Beaker", "Borosilicate glass that holds 250 ml.")
    empty_echo = " Kimble Glass Beaker\nBody: A Kimble beaker, a Kimble beaker by Kimble." + IM_END
    reading = [float(nll.mean()) for nll in writer.reading_nlls([f"{c.headline}. {c.body}" for c in (echo, plain)])]
    share = copy_quality(echo, bare).repeated_ngram_rate
    assert share > 0 and copy_quality(plain, bare).repeated_ngram_rate == 0
    # no penalty set: a copy that repeats a phrase comes after every one that does not, however it reads
    assert writer.repeat_penalty is None and writer.most_readable([echo, plain], bare) == 1
    # with a penalty, the lower of reading + penalty x repeated share wins, at the penalty where they cross
    crossing = (reading[1] - reading[0]) / share
    writer.repeat_penalty = max(crossing, 0) + 1.0
    assert writer.most_readable([echo, plain], bare) == 1
    if crossing > 0:  # the echo reads better: below the crossing it is shipped
        writer.repeat_penalty = crossing / 2
        assert writer.most_readable([echo, plain], bare) == 0
    writer.repeat_penalty = None
    # a copy that repeats itself and says nothing concrete is never shipped: the template answers
    result = writer.choose([empty_echo], np.asarray([-0.1]), bare, CopyResult(template_copy(bare, None), "fallback"))
    assert result.copy == template_copy(bare, None)


def test_a_spent_time_budget_answers_with_the_template_flagged(writer_dir) -> None:
    directory, facts, *_ = writer_dir
    result = ChatCopyWriter(directory, facts).write(RECORDS[0], None, n=2, deadline_s=0.0)
    assert result.source == "fallback" and not result.finished
    assert any("time budget" in reason for reason in result.reasons)


def test_sampled_candidates_are_scored_and_the_greedy_one_is_among_them(writer_dir) -> None:
    directory, facts, *_ = writer_dir
    generation = ChatCopyWriter(directory, facts).generate(
        [record_prompt(RECORDS[0], None)], n=3, rng=np.random.default_rng(1)
    )
    assert len(generation.texts) == 3 and generation.finished
    assert generation.texts[0].startswith(" Kimble Glass Beaker\nBody:")
    assert np.all(generation.scores <= 0) and generation.prompt_ms > 0


def test_perplexity_under_the_onnx_graph_is_the_torch_models_and_padding_does_not_change_it(writer_dir) -> None:
    directory, facts, model, tokenizer = writer_dir
    judge = ChatCopyWriter(directory, facts)
    texts = ["Kimble Glass Beaker. Borosilicate glass that holds 250 ml.", "Nitrile gloves.", "Weighs up to 500 g."]
    nll, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
            nll += F.cross_entropy(model(ids).logits[0, :-1], ids[0, 1:], reduction="sum").item()
            count += ids.shape[1] - 1
    expected = float(np.exp(nll / count))
    assert perplexity(judge, texts, batch_size=3) == pytest.approx(expected, rel=1e-4)
    assert perplexity(judge, texts, batch_size=1) == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError, match="two tokens"):
        perplexity(judge, [""])


def test_rejection_sampling_keeps_only_checked_informative_copies_and_fills_in_record_targets(writer_dir) -> None:
    directory, facts, *_ = writer_dir
    writer = ChatCopyWriter(directory, facts)
    harvested, stats = harvest_targets(writer, [(record, None) for record in RECORDS], n=1, batch_size=2, log=str)
    assert {h.record.item_id: h.copy for h in harvested} == {"B01": TARGETS["B01"], "B03": TARGETS["B03"]}
    assert stats.as_dict()["refused"] == {"unsupported fact": 1} and stats.accepted == 2 and stats.candidates == 3
    pairs = training_pairs(harvested, RECORDS, facts, np.random.default_rng(0))
    targets = [target for _, target in pairs]
    assert copy_target(TARGETS["B01"]) in targets and copy_target(TARGETS["B03"]) in targets
    derived = [(prompt, target) for prompt, target in pairs[2:]]
    assert derived and all("Nitrile Exam Gloves" in prompt for prompt, _ in derived)  # the refused item's own
    assert all("900" not in target for _, target in pairs)  # the invented number never becomes a target
    assert not vet(" A\nBody: Category: Lab Supplies > Beakers, 250 ml.", RECORDS[0], facts)[0]


def test_partial_fine_tuning_trains_the_top_layers_only(writer_dir) -> None:
    _, _, model, tokenizer = writer_dir
    model = copy.deepcopy(model)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    pairs = [(record_prompt(record, None), copy_target(TARGETS[record.item_id])) for record in RECORDS]
    config = SmolTrainConfig(max_minutes=0.02, train_layers=1, batch_size=2, chunk=4, lr=1e-2)
    stats, _ = fine_tune(model, tokenizer, encode(tokenizer, pairs, config.max_tokens), config, log=str)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert stats["steps"] >= 1 and changed
    assert all(name.startswith(("model.layers.1.", "model.norm.")) for name in changed), changed
    assert stats["trained_params"] < stats["total_params"]


def test_the_nightly_batch_can_precompute_copy_with_the_pretrained_writer(writer_dir, tmp_path) -> None:
    directory, *_ = writer_dir
    catalogue = pl.DataFrame(
        {
            "item_id": [r.item_id for r in RECORDS],
            "title": [r.name for r in RECORDS],
            "brand": [r.brand for r in RECORDS],
            "category": [" > ".join(r.categories) for r in RECORDS],
            "price": [r.price for r in RECORDS],
            "description": [r.description for r in RECORDS],
        }
    )
    recommendations = {"u1": ["B01", "B02"], "u2": ["B01", "B03"], "u3": ["B01", "NOT-IN-CATALOGUE"]}
    stats = write_adcopy_assets(tmp_path, None, catalogue, {}, recommendations, batch_writer_dir=directory)
    copies = pl.read_parquet(tmp_path / ADCOPY_DIR / COPY_COPIES).sort("user_id", "item_id")
    assert stats["written_by"] == "pretrained: tiny" and stats["distinct"] == 3 and stats["copies"] == 5
    by_item = {row["item_id"]: row for row in copies.iter_rows(named=True)}
    assert by_item["B01"]["source"] == "generated" and by_item["B01"]["body"] == TARGETS["B01"].body
    assert by_item["B02"]["source"] == "fallback" and "900" not in by_item["B02"]["body"]
    assert copies.filter(pl.col("item_id") == "B01").height == 3  # written once, shared by its three users
    assert not (tmp_path / ADCOPY_DIR / COPY_DECODER).exists()  # no live model: the service answers with the template


def tiny_recipe(batch_size: int, minutes: float) -> PretrainedCopyConfig:
    """The rejection-sampling recipe at the tiny model's size: three items, one candidate each, seconds of tuning."""
    return PretrainedCopyConfig(
        harvest_items=3,
        harvest_candidates=1,
        batch_size=batch_size,
        interest_prob=0.0,
        train=SmolTrainConfig(max_minutes=minutes, train_layers=1, batch_size=2, chunk=4),
    )


def test_the_whole_recipe_harvests_fine_tunes_and_exports_int8_and_float_writers(writer_dir, tmp_path) -> None:
    _, facts, model, tokenizer = writer_dir
    config = tiny_recipe(batch_size=3, minutes=0.02)
    stats = train_pretrained_writer(copy.deepcopy(model), tokenizer, RECORDS, facts, tmp_path, config, "tiny", str)
    assert stats["harvest"]["accepted_items"] == 2 and stats["pairs"]["harvested"] == 4  # weight 2
    assert stats["pairs"]["total"] > 4  # plus the gloves' record-derived targets
    assert stats["training"]["steps"] >= 1
    for folder in (stats["base_dir"], stats["tuned_dir"]):
        for decoder in (COPY_DECODER, FLOAT_DECODER):
            result = ChatCopyWriter(folder, facts, decoder=decoder).write(RECORDS[0], None, n=1)
            assert result.tokens >= 1 and result.copy.headline


def test_the_benchmarks_pretrained_phase_scores_every_system_on_the_same_items(writer_dir, tmp_path) -> None:
    _, facts, model, tokenizer = writer_dir
    config = tiny_recipe(batch_size=2, minutes=0.01)
    pairs = [(record, None) for record in RECORDS]

    def phase(train_records: list[ItemRecord] = RECORDS, reuse: bool = False) -> dict:
        return pretrained_systems(
            model=copy.deepcopy(model),
            tokenizer=tokenizer,
            model_name="tiny",
            train_records=train_records,
            eval_pairs=pairs,
            references=[record.description for record in RECORDS],
            baseline_copies={
                "template": [template_copy(r, None) for r in RECORDS],
                "small_model": list(TARGETS.values()),
            },
            validation_pairs=pairs,
            validation_baselines={"small_model": list(TARGETS.values())},
            facts=facts,
            work_dir=tmp_path / "work",
            results_dir=tmp_path / "results",
            config=config,
            provenance={"date": "2026-12-04T00:00:00+00:00", "hardware": "test", "command": "pytest"},
            live_items=3,
            reuse=reuse,
            log=str,
        )

    added = phase()
    systems = added["systems"]
    assert set(systems) == {
        "template",
        "small_model",
        "pretrained_zero_shot",
        "pretrained_finetuned",
        "pretrained_finetuned_quantised",
    }
    assert all(s["items"] == 3 and s["perplexity"] > 1 for s in systems.values())
    assert systems["template"]["boilerplate_rate"] == 1.0
    for name in ("pretrained_zero_shot", "pretrained_finetuned", "pretrained_finetuned_quantised"):
        row = systems[name]  # the record's sentences are a part of the fallbacks; the model's own part is the rest
        assert 0 <= row["extractive_fallback_rate"] <= row["fallback_rate"] <= 1
        assert row["generated_informative_rate"] <= min(row["informative_rate"], 1 - row["fallback_rate"])
    assert (tmp_path / "results" / added["side_by_side"]["file"]).exists() and added["side_by_side"]["items"] == 3
    live = added["pretrained_live"]
    assert live["requests"] == 3 and live["p99_ms"] >= live["p50_ms"] > 0 and 0 <= live["in_budget_rate"] <= 1
    assert [e["item_id"] for e in added["examples_first_three"]] == ["B01", "B02", "B03"]
    # the repeat penalty is chosen on the validation items, among the grid, and the nightly batch's writer reads it
    chosen = added["repeat_penalty"]
    assert chosen["items"] == 3 and [row["repeat_penalty"] for row in chosen["grid"]] == list(REPEAT_PENALTIES)
    within = [row for row in chosen["grid"] if row["repeat_ngram_rate"] < chosen["repeat_limit"]]
    assert chosen["chosen"] == (min(within, key=lambda row: row["perplexity"])["repeat_penalty"] if within else None)
    tuned_config = json.loads((tmp_path / "work" / "tuned" / "chat.json").read_text())
    assert tuned_config["repeat_penalty"] == chosen["chosen"]
    assert ChatCopyWriter(tmp_path / "work" / "tuned", facts).repeat_penalty == chosen["chosen"]
    # reused: the same graphs scored again, not retrained; refused when the training items differ
    tuned = tmp_path / "work" / "tuned" / COPY_DECODER
    written = tuned.stat().st_mtime_ns
    again = phase(reuse=True)
    assert tuned.stat().st_mtime_ns == written and again["pretrained"] == added["pretrained"]
    scored, rescored = systems["pretrained_finetuned"], again["systems"]["pretrained_finetuned"]
    assert rescored.pop("perplexity") == pytest.approx(scored.pop("perplexity"), rel=1e-4) and rescored == scored
    with pytest.raises(ValueError, match="trained on other items"):
        phase(RECORDS[:2], reuse=True)


def test_a_saved_model_is_reused_only_for_the_items_it_was_trained_on(tmp_path) -> None:
    stats_file = tmp_path / "train_stats.json"
    assert reusable_stats(stats_file, RECORDS, "--reuse-model") is None  # nothing saved: train
    stats_file.write_text(json.dumps({"date": "then", "train_items_sha256": items_sha256(RECORDS[::-1])}))
    assert reusable_stats(stats_file, RECORDS, "--reuse-model")["date"] == "then"  # order does not matter
    with pytest.raises(ValueError, match="other items.*rerun without --reuse-model"):
        reusable_stats(stats_file, RECORDS[:2], "--reuse-model")  # another held-out share: would have seen them
    stats_file.write_text(json.dumps({"date": "long ago"}))
    with pytest.raises(ValueError, match="do not say which"):
        reusable_stats(stats_file, RECORDS, "--reuse-model")  # saved before the fingerprint was


def test_a_generated_turn_is_read_as_one_headline_line_and_one_body_line() -> None:
    # what a model writes past the body's line (its own `Brand:` field, a second `Body:`) is not copy
    copy, raw = parse_generated(" Kimble Glass Beaker\nBody: Holds 250 ml.\n\nBrand: Kimble\nBody: again" + IM_END)
    assert copy == Copy("Kimble Glass Beaker", "Holds 250 ml.") and raw.startswith("Kimble Glass Beaker Body:")
    assert parse_generated(" Kimble Glass Beaker\nBody: Holds 250 ml. Body: Holds")[0].body == "Holds 250 ml."
    assert parse_generated(" Kimble Glass Beaker, 250 ml, for the lab")[0] is None
    assert parse_generated("Body: Holds 250 ml.")[0] is None  # no headline


def test_the_harvest_asks_the_base_model_for_the_body_after_the_records_own_headline() -> None:
    opening = harvest_opening(RECORDS[0])
    assert opening == f" {template_copy(RECORDS[0]).headline}\nBody:"
    assert parse_generated(opening + " Borosilicate glass.")[0] == Copy(
        template_copy(RECORDS[0]).headline, "Borosilicate glass."
    )
