"""The pretrained-decoder path for ad copy: a Llama-family model (built here from a tiny config; SmolLM2 has the
same architecture) re-expressed with a tensor cache must give Hugging Face's logits, with and without the cache
and with left padding, and so must its ONNX graph in onnxruntime; int8 quantisation's loss is measured."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from training.adcopy.llama import LlamaDecoder, export_onnx, quantise_int8


@pytest.fixture(scope="module")
def models() -> tuple[LlamaForCausalLM, LlamaDecoder]:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=320,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention, as in SmolLM2 (9 heads, 3 key/value heads)
        intermediate_size=128,
        tie_word_embeddings=True,
        rope_theta=100000.0,
        max_position_embeddings=128,
    )
    hf = LlamaForCausalLM(config).eval()
    return hf, LlamaDecoder.from_hf(hf)


IDS = torch.tensor([[11, 42, 7, 99, 3, 250, 17], [5, 8, 13, 21, 34, 55, 89]])


def test_the_decoder_gives_the_hugging_face_logits(models) -> None:
    hf, decoder = models
    with torch.no_grad():
        expected = hf(IDS).logits
        logits, present = decoder(IDS, torch.ones_like(IDS), decoder.empty_cache(2))
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-4)
    assert present.shape == (2, 2, 2, 2, IDS.shape[1], 16)  # layers, k/v, batch, kv heads, length, head dim


def test_decoding_with_the_cache_and_with_left_padding_gives_the_same_logits(models) -> None:
    hf, decoder = models
    with torch.no_grad():
        full = hf(IDS).logits
        # prompt of 4, then one token at a time through the cache
        mask = torch.ones_like(IDS)
        logits, past = decoder(IDS[:, :4], mask[:, :4], decoder.empty_cache(2))
        steps = [logits]
        for t in range(4, IDS.shape[1]):
            logits, past = decoder(IDS[:, t : t + 1], mask[:, : t + 1], past)
            steps.append(logits)
        torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)
        # a shorter row left-padded beside a full one: its real positions score as if alone
        short = IDS[1, 3:]
        padded = torch.stack([IDS[0], torch.cat([torch.zeros(3, dtype=torch.long), short])])
        pad_mask = torch.stack([torch.ones(7, dtype=torch.long), torch.tensor([0, 0, 0, 1, 1, 1, 1])])
        logits, _ = decoder(padded, pad_mask, decoder.empty_cache(2))
        alone = hf(short[None]).logits[0]
        assert torch.isfinite(logits).all()
        torch.testing.assert_close(logits[1, 3:], alone, atol=1e-5, rtol=1e-4)


def test_the_onnx_graph_matches_torch_for_the_prompt_and_the_next_token_and_int8_is_close(models, tmp_path) -> None:
    _, decoder = models
    path = export_onnx(decoder, tmp_path / "decoder.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids, mask = IDS.numpy(), np.ones_like(IDS.numpy())
    empty = decoder.empty_cache(2).numpy()
    prompt_logits, past = session.run(None, {"input_ids": ids[:, :5], "attention_mask": mask[:, :5], "past": empty})
    step_logits, _ = session.run(None, {"input_ids": ids[:, 5:6], "attention_mask": mask[:, :6], "past": past})
    with torch.no_grad():
        expected, _ = decoder(IDS[:, :6], torch.ones_like(IDS[:, :6]), decoder.empty_cache(2))
    np.testing.assert_allclose(prompt_logits, expected[:, :5].numpy(), atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(step_logits[:, 0], expected[:, 5].numpy(), atol=1e-4, rtol=1e-3)

    quantised = ort.InferenceSession(
        str(quantise_int8(path, tmp_path / "decoder-int8.onnx")), providers=["CPUExecutionProvider"]
    )
    q_logits, _ = quantised.run(None, {"input_ids": ids[:, :5], "attention_mask": mask[:, :5], "past": empty})
    assert (tmp_path / "decoder-int8.onnx").stat().st_size < 0.6 * path.stat().st_size
    # int8 moves the logits a little, not a lot: measured against their spread
    error = np.abs(q_logits - prompt_logits).max()
    assert 0 < error < 0.25 * prompt_logits.std(), (error, prompt_logits.std())
