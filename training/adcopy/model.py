"""The ad-copy language model: a small pre-norm GPT decoder with an explicit key/value cache, in one file.

Plain torch rather than the recommender's HF Llama: the live path runs it in onnxruntime one token at a time,
and with the cache as ordinary inputs and outputs `torch.onnx.export` traces one graph that serves both the
prompt (past length 0) and every decoding step; the HF cache objects do not export that way.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from recsys.bundle.layout import COPY_CONFIG

# the cache axes every decoder graph shares: (layers, 2, batch, heads, length, head_dim)
CACHE_AXES = {
    "past": {2: "batch", 4: "past_length"},
    "logits": {0: "batch", 1: "length"},
    "present": {2: "batch", 4: "total_length"},
}


def export_decoder(
    module: nn.Module, example: tuple[torch.Tensor, ...], path: str | Path, input_names: list[str], axes: dict
) -> Path:
    """Trace a decoder whose key/value cache is an input (`past`) and an output (`present`) into one ONNX graph
    (opset 18, TorchScript exporter) with dynamic batch and lengths; `axes` adds the other inputs' axes."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=input_names,
            output_names=["logits", "present"],
            dynamic_axes={**axes, **CACHE_AXES},
            opset_version=18,
            dynamo=False,
        )
    return Path(path)


@dataclass
class CopyModelConfig:
    vocab_size: int = 4096
    n_layer: int = 3
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 256  # longest prompt + copy, in tokens
    dropout: float = 0.1

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


class CausalSelfAttention(nn.Module):
    def __init__(self, config: CopyModelConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, past_kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))
        k = torch.cat([past_kv[0], k], dim=2)
        v = torch.cat([past_kv[1], v], dim=2)
        # new token i (at absolute position past + i) sees every cached key and the new keys up to itself
        past = k.shape[2] - length
        key_pos = torch.arange(k.shape[2], device=x.device)
        query_pos = torch.arange(length, device=x.device) + past
        mask = key_pos[None, :] <= query_pos[:, None]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(batch, length, width)
        return self.proj(y), torch.stack([k, v])


class Block(nn.Module):
    def __init__(self, config: CopyModelConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.norm2 = nn.LayerNorm(config.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(config.n_embd, 4 * config.n_embd, bias=False),
            nn.GELU(),
            nn.Linear(4 * config.n_embd, config.n_embd, bias=False),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: torch.Tensor, past_kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended, present = self.attn(self.norm1(x), past_kv)
        x = x + attended
        return x + self.mlp(self.norm2(x)), present


class CopyModel(nn.Module):
    def __init__(self, config: CopyModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tokens = nn.Embedding(config.vocab_size, config.n_embd)
        self.positions = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = nn.LayerNorm(config.n_embd)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, 0.0, 0.02)

    def empty_cache(self, batch: int) -> torch.Tensor:
        c = self.config
        return torch.zeros(c.n_layer, 2, batch, c.n_head, 0, c.head_dim)

    def forward(self, ids: torch.Tensor, past: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits for every new position (tied output embedding) and the grown cache.

        `past` stacks every layer's keys and values, shape (layers, 2, batch, heads, past_length, head_dim);
        the returned cache is the same with the new tokens appended.
        """
        start = past.shape[4]
        positions = torch.arange(ids.shape[1], device=ids.device) + start
        x = self.drop(self.tokens(ids) + self.positions(positions)[None])
        presents = []
        for layer, block in enumerate(self.blocks):
            x, present = block(x, past[layer])
            presents.append(present)
        logits = self.norm(x) @ self.tokens.weight.T
        return logits, torch.stack(presents)

    def hidden_and_weight(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training path: final hidden states (no cache) and the output weight, for a fused loss."""
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.drop(self.tokens(ids) + self.positions(positions)[None])
        empty = self.empty_cache(ids.shape[0]).to(x.dtype)
        for layer, block in enumerate(self.blocks):
            x, _ = block(x, empty[layer])
        return self.norm(x), self.tokens.weight

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, directory / "copy_model.safetensors")
        (directory / COPY_CONFIG).write_text(json.dumps(asdict(self.config), indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> CopyModel:
        directory = Path(directory)
        model = cls(CopyModelConfig(**json.loads((directory / COPY_CONFIG).read_text())))
        model.load_state_dict(load_file(directory / "copy_model.safetensors"))
        return model.eval()
