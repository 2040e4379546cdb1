"""The pretrained model's copy path, end to end on a tiny Llama (the architecture of SmolLM2) with its own
byte-level tokenizer, trained here until it writes fixed copies: exported to ONNX, decoded by onnxruntime alone,
checked like the small model's copy. A learned copy that invents a number is refused; the template answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from recsys.adcopy import CatalogueFacts, Copy, ItemRecord
from recsys.adcopy.chat import IM_END, IM_START, copy_target, record_prompt
from recsys.adcopy.chat_writer import ChatCopyWriter
from training.adcopy.llama import export_chat_writer

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
    return directory, CatalogueFacts.from_records(RECORDS)


def test_the_learned_grounded_copy_is_written_and_passes_the_checks(writer_dir) -> None:
    directory, facts = writer_dir
    writer = ChatCopyWriter(directory, facts)
    for item_id in ("B01", "B03"):
        record = next(r for r in RECORDS if r.item_id == item_id)
        result = writer.write(record, None, n=1)
        assert result.source == "generated", result.reasons
        assert result.copy == TARGETS[item_id]
        assert result.tokens > 10 and result.finished


def test_a_copy_that_invents_a_number_is_refused_and_the_template_answers(writer_dir) -> None:
    directory, facts = writer_dir
    writer = ChatCopyWriter(directory, facts)
    gloves = RECORDS[1]
    result = writer.write(gloves, None, n=1)
    assert result.unchecked == TARGETS["B02"]  # the model did write the invented copy...
    assert result.source == "fallback"  # ...and it was refused
    assert any("unsupported number '900'" in reason for reason in result.reasons), result.reasons
    assert "900" not in f"{result.copy.headline} {result.copy.body}"


def test_a_batch_of_left_padded_prompts_writes_what_one_at_a_time_writes(writer_dir) -> None:
    directory, facts = writer_dir
    writer = ChatCopyWriter(directory, facts)
    one_by_one = [writer.write(record, None, n=1) for record in RECORDS]
    batched = writer.write_many([(record, None) for record in RECORDS], batch_size=3)
    assert [r.copy for r in batched] == [r.copy for r in one_by_one]
    assert [r.source for r in batched] == ["generated", "fallback", "generated"]


def test_a_spent_time_budget_answers_with_the_template_flagged(writer_dir) -> None:
    directory, facts = writer_dir
    result = ChatCopyWriter(directory, facts).write(RECORDS[0], None, n=2, deadline_s=0.0)
    assert result.source == "fallback" and not result.finished
    assert any("time budget" in reason for reason in result.reasons)


def test_sampled_candidates_are_scored_and_the_greedy_one_is_among_them(writer_dir) -> None:
    directory, facts = writer_dir
    generation = ChatCopyWriter(directory, facts).generate(
        [record_prompt(RECORDS[0], None)], n=3, rng=np.random.default_rng(1)
    )
    assert len(generation.texts) == 3 and generation.finished
    assert generation.texts[0].startswith(" Kimble Glass Beaker\nBody:")
    assert np.all(generation.scores <= 0) and generation.prompt_ms > 0
