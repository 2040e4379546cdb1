"""A pretrained Llama-family decoder (SmolLM2) with an explicit key/value cache, exportable to ONNX as one graph.

Why not export `transformers`' `LlamaForCausalLM` as it is: its cache is a `Cache` object, which
`torch.onnx.export` cannot take as a graph input, so the prompt and the decoding steps would need separate
graphs and the cache would be rebuilt in Python at every token. Here the same weights (the module names match
the Hugging Face checkpoint, so its state dict loads as it is) run in a few plain modules whose cache is one
tensor in and one tensor out, as in the small copy model (`training/adcopy/model.py`): one traced graph serves
the prompt (past length 0) and every step, batched, with left padding.

Inputs of the graph: `input_ids` (batch, new), `attention_mask` (batch, past + new; 1 for real tokens, 0 for
left padding) and `past` (layers, 2, batch, kv_heads, past, head_dim). Outputs: `logits` (batch, new, vocab)
and `present` (the cache with the new tokens appended). Positions come from the mask (count of real tokens
before each one), as Hugging Face's `generate` computes them for left-padded batches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training.adcopy.model import export_decoder

__all__ = ["LlamaDecoder", "LlamaDecoderConfig", "export_chat_writer", "export_onnx", "quantise_int8"]


@dataclass(frozen=True)
class LlamaDecoderConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rms_norm_eps: float
    tie_word_embeddings: bool

    @classmethod
    def from_hf(cls, config: Any) -> LlamaDecoderConfig:
        """From a `transformers.LlamaConfig` (rope parameters come with the weights' `inv_freq`)."""
        return cls(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            num_layers=config.num_hidden_layers,
            num_heads=config.num_attention_heads,
            num_kv_heads=config.num_key_value_heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
            intermediate_size=config.intermediate_size,
            rms_norm_eps=config.rms_norm_eps,
            tie_word_embeddings=bool(config.tie_word_embeddings),
        )


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, config: LlamaDecoderConfig) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, config.num_heads * config.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, config.num_kv_heads * config.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, config.num_kv_heads * config.head_dim, bias=False)
        self.o_proj = nn.Linear(config.num_heads * config.head_dim, config.hidden_size, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, allowed: torch.Tensor, past_kv: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length, _ = x.shape

        def heads(t: torch.Tensor, n: int) -> torch.Tensor:
            return t.view(batch, length, n, self.head_dim).transpose(1, 2)

        q, k, v = (
            heads(self.q_proj(x), self.heads),
            heads(self.k_proj(x), self.kv_heads),
            heads(self.v_proj(x), self.kv_heads),
        )
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k = torch.cat([past_kv[0], k], dim=2)
        v = torch.cat([past_kv[1], v], dim=2)
        group = self.heads // self.kv_heads  # grouped-query attention: each key/value head serves `group` heads
        y = F.scaled_dot_product_attention(
            q, k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1), attn_mask=allowed
        )
        return self.o_proj(y.transpose(1, 2).reshape(batch, length, -1)), torch.stack([k, v])


class MLP(nn.Module):
    def __init__(self, config: LlamaDecoderConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: LlamaDecoderConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, allowed, past_kv):  # noqa: ANN001, ANN201 (same as Attention.forward)
        attended, present = self.self_attn(self.input_layernorm(x), cos, sin, allowed, past_kv)
        x = x + attended
        return x + self.mlp(self.post_attention_layernorm(x)), present


class Body(nn.Module):
    """`model.*` of the Hugging Face checkpoint: embeddings, layers, final norm."""

    def __init__(self, config: LlamaDecoderConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class LlamaDecoder(nn.Module):
    def __init__(self, config: LlamaDecoderConfig, inv_freq: torch.Tensor) -> None:
        super().__init__()
        self.config = config
        self.model = Body(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.register_buffer("inv_freq", inv_freq.float().clone(), persistent=False)

    @classmethod
    def from_hf(cls, hf_model: Any) -> LlamaDecoder:
        """The same weights as a `transformers` Llama causal LM (SmolLM2 is one), in eval mode."""
        rotary = hf_model.model.rotary_emb
        if getattr(rotary, "attention_scaling", 1.0) != 1.0:
            raise ValueError("rope scaling with an attention factor is not supported: use a default-rope checkpoint")
        decoder = cls(LlamaDecoderConfig.from_hf(hf_model.config), rotary.inv_freq)
        decoder.load_state_dict(hf_model.state_dict(), strict=False)
        missing = {name for name, _ in decoder.named_parameters()} - set(hf_model.state_dict())
        if missing:
            raise ValueError(f"the checkpoint lacks {sorted(missing)[:3]}...: not a Llama causal LM")
        return decoder.eval()

    def empty_cache(self, batch: int) -> torch.Tensor:
        c = self.config
        return torch.zeros(c.num_layers, 2, batch, c.num_kv_heads, 0, c.head_dim)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, past: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits for the new tokens and the grown cache (see the module docstring for the shapes)."""
        length, total = input_ids.shape[1], attention_mask.shape[1]
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, total - length :]
        freqs = positions[..., None].float() * self.inv_freq
        angles = torch.cat((freqs, freqs), dim=-1)[:, None]  # (batch, 1, new, head_dim)
        cos, sin = angles.cos(), angles.sin()
        # new token i (absolute position total - length + i) sees real keys up to itself, and always itself, so
        # a padding row attends to something and stays finite
        key_pos = torch.arange(total)
        query_pos = torch.arange(length) + (total - length)
        causal = key_pos[None, :] <= query_pos[:, None]
        allowed = (causal[None] & attention_mask.bool()[:, None, :]) | (key_pos[None, :] == query_pos[:, None])[None]
        x = self.model.embed_tokens(input_ids)
        presents = []
        for layer, block in enumerate(self.model.layers):
            x, present = block(x, cos, sin, allowed[:, None], past[layer])
            presents.append(present)
        return self.lm_head(self.model.norm(x)), torch.stack(presents)


def export_onnx(decoder: LlamaDecoder, path: str | Path) -> Path:
    """Trace the decoder once (two past tokens, one new) into an ONNX graph with dynamic batch and lengths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = torch.tensor([[5, 6, 7], [5, 6, 8]], dtype=torch.long)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        _, past = decoder(ids[:, :2], mask[:, :2], decoder.empty_cache(2))
    axes = {"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "total_length"}}
    export_decoder(decoder, (ids[:, 2:], mask, past), path, ["input_ids", "attention_mask", "past"], axes)
    return path


def quantise_int8(source: str | Path, target: str | Path) -> Path:
    """Dynamic int8 quantisation of the graph's matrix multiplications (weights int8, activations quantised
    per call): the usual CPU recipe for transformer decoders; quality loss is measured, not assumed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    return Path(target)


def export_chat_writer(
    hf_model: Any, tokenizer: Any, directory: str | Path, *, quantise: bool = True, model_name: str = ""
) -> Path:
    """A folder `recsys.adcopy.chat_writer.ChatCopyWriter` loads: the decoder graph (int8 when `quantise`; the
    float graph stays beside it as `FLOAT_DECODER`, for measuring what int8 costs and for judging fluency), the
    tokenizer (a `transformers` fast tokenizer's `tokenizers` backend) and `chat.json`."""
    from recsys.adcopy.chat import IM_END
    from recsys.adcopy.chat_writer import CHAT_CONFIG, FLOAT_DECODER
    from recsys.bundle.layout import COPY_DECODER, COPY_TOKENIZER

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    end = tokenizer.convert_tokens_to_ids(IM_END)
    if end is None or end == tokenizer.unk_token_id:
        raise ValueError(f"the tokenizer has no {IM_END} token: not a chat model's tokenizer")
    float_path = export_onnx(LlamaDecoder.from_hf(hf_model), directory / FLOAT_DECODER)
    if quantise:
        quantise_int8(float_path, directory / COPY_DECODER)
    else:
        float_path.replace(directory / COPY_DECODER)
    tokenizer.backend_tokenizer.save(str(directory / COPY_TOKENIZER))
    stop_ids = sorted({end, *([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])})
    config = {"format": "chat", "stop_ids": stop_ids, "pad_id": end, "model": model_name, "quantised": quantise}
    (directory / CHAT_CONFIG).write_text(json.dumps(config, indent=1) + "\n")
    return directory
