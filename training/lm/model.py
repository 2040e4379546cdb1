"""The generative recommender: a Hugging Face causal LM whose vocabulary holds one token per item.

Read top to bottom: the config dataclass, how the HF model is built (from a config, or from a local
checkpoint), the user encoder (last hidden state at the last position: what ONNX exports), and the
`GenerativeRecommender` that implements the shared recommender interface.

Item scores are the user vector · the item token embeddings (input and output embeddings are tied), so a
FAISS inner-product search over those embeddings returns exactly the model's top-k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedModel
from transformers.utils import logging as hf_logging

from recsys.data.sequences import HoldoutSet, Sequences
from recsys.data.vocab import ItemVocab
from recsys.models.base import EmbeddingScorer, Recommender, read_card
from recsys.tokens import PAD_TOKEN_ID, left_pad

# TrainConfig.precision -> the dtype of the training step's matrix products
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
LOSSES = ("full", "sampled")  # TrainConfig.loss: see next_item_loss in training/lm/train.py
N_SPECIAL_TOKENS = 2  # <pad>, <bos>; item tokens follow (text tokens for ad copy come after the items)
VOCAB_FILE = "item_vocab.json"

hf_logging.disable_progress_bar()  # save_pretrained's shard bar is noise for a model of a few MB


@dataclass
class LMConfig:
    """Architecture of the from-scratch model (ignored when a base checkpoint is given)."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 256
    max_len: int = 50  # the history window: sizes the position embeddings and the ONNX input (presets set it)
    attention_dropout: float = 0.2
    embedding_dropout: float = 0.3  # Llama has no residual dropout; sparse ID data needs one on the inputs
    init_std: float = 0.02
    rope_theta: float = 10000.0


@dataclass
class TrainConfig:
    """Fine-tuning hyper-parameters (see training/lm/train.py)."""

    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    patience: int = 5  # evaluations without a better validation NDCG@10 before stopping
    eval_every: int = 1  # epochs between validation evaluations
    max_valid_users: int = 10000
    freeze_layers: int = 0  # freeze the lowest n transformer blocks (fine-tuning a base)
    seed: int = 0
    num_threads: int = 0  # 0: every core
    max_minutes: float = 0.0  # wall-clock budget, 0 = none
    # After early stopping picks the epoch count on validation, train again from scratch for that many
    # epochs on everything but the test events (the validation events included): the test-time model then
    # knows each user's most recent interaction, as a production model retrained nightly would.
    refit_with_valid: bool = False
    # With refit_with_valid: the epoch count a previous selection run chose (e.g. another seed's); the
    # selection fit is skipped and only the refit runs. None: select on validation first.
    selected_epochs: int | None = None
    # Exponential moving average of the weights over steps (Polyak averaging; 0 = off): validation, early
    # stopping and the trained model use the average, which is what a lower learning rate would reach
    # without paying for the slower progress. Decay 0.995 averages over roughly the last 200 steps.
    ema_decay: float = 0.0
    # "bf16": the decoder's and the loss's matrix products run in bfloat16 (autocast; weights, optimizer
    # state and softmax sums stay float32). ~1.4-1.65x the tokens/s on CPUs with AVX512-BF16; evaluation,
    # export and serving always run in float32.
    precision: str = "fp32"
    # "full": cross-entropy over every item (exact; its cost per token grows with the catalogue, affordable up
    # to ~100k items on CPU). "sampled": each target against the batch's other targets plus
    # `sampled_negatives` items drawn uniformly from the catalogue (shared by the batch), each candidate's
    # logit corrected by the log of its sampling probability (`logq_correction`): the cost per token no
    # longer grows with the catalogue (see sampled_cross_entropy in training/lm/train.py).
    loss: str = "full"
    sampled_negatives: int = 256  # uniform negatives per step with loss="sampled"; 0: in-batch negatives only
    logq_correction: bool = True
    # With logq_correction, correct each candidate by its probability of being among the candidates, from the
    # items' share of the training targets, instead of counting each in-batch item once (see
    # sampled_cross_entropy): popular items are then not pushed down more often than the full softmax does.
    logq_popularity: bool = False
    log_every: int = 20

    def __post_init__(self) -> None:  # a bad value fails where the config is read, before any training
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.sampled_negatives < 0:
            raise ValueError(
                f"sampled_negatives must be >= 0 (0: in-batch negatives only), got {self.sampled_negatives}"
            )
        if self.logq_popularity and not (self.loss == "sampled" and self.logq_correction):
            raise ValueError("logq_popularity needs loss='sampled' and logq_correction=true")
        if not (self.ema_decay == 0.0 or 0.0 < self.ema_decay < 1.0):
            raise ValueError(f"ema_decay must be in (0, 1) (or 0 for no averaging), got {self.ema_decay}")

    def check_catalogue(self, n_items: int) -> None:
        """The settings that depend on the catalogue, checked once its size is known (before any training)."""
        if self.loss == "sampled" and self.sampled_negatives > n_items:
            raise ValueError(
                f"train.sampled_negatives={self.sampled_negatives} is more than the catalogue's {n_items} items: "
                "lower it or use train.loss='full'"
            )


def build_hf_model(config: LMConfig, n_items: int) -> LlamaForCausalLM:
    """A small Llama-style causal LM built locally from a config object: nothing is downloaded."""
    hf_config = LlamaConfig(
        vocab_size=N_SPECIAL_TOKENS + n_items,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=max(config.max_len, 8),
        attention_dropout=config.attention_dropout,
        initializer_range=config.init_std,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        tie_word_embeddings=True,
        pad_token_id=PAD_TOKEN_ID,
        bos_token_id=1,
        eos_token_id=None,
    )
    return LlamaForCausalLM(hf_config)


class UserEncoder(nn.Module):
    """(left-padded item tokens, mask) -> user vector = final hidden state at the last position.

    Positions count real tokens only (cumsum of the mask), so left padding does not shift them: the same
    history gives the same vector at any padded length. This is the module exported to ONNX.
    """

    def __init__(self, lm: PreTrainedModel):
        super().__init__()
        self.backbone = lm.get_decoder() if hasattr(lm, "get_decoder") else lm.model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        return hidden[:, -1, :]


class GenerativeRecommender(Recommender, EmbeddingScorer):
    """The LM behind the shared interface: fit fine-tunes, score ranks every item for a history."""

    kind = "lm"

    def __init__(
        self,
        config: LMConfig | None = None,
        train_config: TrainConfig | None = None,
        base_model: str | Path | None = None,
    ) -> None:
        self.config = config or LMConfig()
        self.train_config = train_config or TrainConfig()
        self.base_model = Path(base_model) if base_model else None
        self.lm: PreTrainedModel | None = None
        self.vocab: ItemVocab | None = None
        self.token_offset = N_SPECIAL_TOKENS
        self.n_items = 0
        self.history: list[dict] = []  # per-evaluation training log, written to the model card
        self.stats: dict = {}  # wall time, tokens/s, epochs, params of the last fit

    # -- building ---------------------------------------------------------------------------------
    def init_model(self, vocab: ItemVocab) -> None:
        """Build the LM for this vocabulary: from scratch, warm-started from our checkpoint, or a HF base."""
        self.train_config.check_catalogue(len(vocab))  # ensemble members are all built before any trains
        torch.manual_seed(self.train_config.seed)
        self.vocab, self.n_items = vocab, len(vocab)
        if self.base_model is None:
            self.lm = build_hf_model(self.config, len(vocab))
            self.token_offset = N_SPECIAL_TOKENS
        elif (self.base_model / VOCAB_FILE).exists():
            self._warm_start(self.base_model, vocab)
        else:
            self._from_text_base(self.base_model, len(vocab))

    def _warm_start(self, path: Path, vocab: ItemVocab) -> None:
        """Start from a previous checkpoint; item rows are mapped by item ID, new items get fresh rows."""
        previous = GenerativeRecommender.load(path)
        assert previous.lm is not None and previous.vocab is not None
        self.config = previous.config
        self.token_offset = previous.token_offset
        lm = previous.lm
        old_rows = lm.get_input_embeddings().weight.data.clone()
        lm.resize_token_embeddings(self.token_offset + len(vocab), mean_resizing=False)
        new_rows = lm.get_input_embeddings().weight.data
        new_rows[self.token_offset :].normal_(0.0, self.config.init_std)
        new_rows[: self.token_offset] = old_rows[: self.token_offset]
        old_index = {item_id: i for i, item_id in enumerate(previous.vocab.item_ids)}
        for new_i, item_id in enumerate(vocab.item_ids):
            old_i = old_index.get(item_id)
            if old_i is not None:
                new_rows[self.token_offset + new_i] = old_rows[previous.token_offset + old_i]
        lm.tie_weights()
        self.lm = lm

    def _from_text_base(self, path: Path, n_items: int) -> None:
        """A local pretrained HF causal LM: item tokens are appended after its text vocabulary."""
        lm = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        text_vocab = lm.get_input_embeddings().weight.shape[0]
        lm.resize_token_embeddings(text_vocab + n_items, mean_resizing=False)
        lm.get_input_embeddings().weight.data[text_vocab:].normal_(0.0, self.config.init_std)
        self.config.hidden_size = lm.config.hidden_size
        self.token_offset = text_vocab
        self.lm = lm

    # -- the recommender interface ------------------------------------------------------------------
    @property
    def max_len(self) -> int:
        return self.config.max_len

    def user_encoder(self) -> nn.Module:
        """The module that maps (left-padded ids, mask) to user vectors: what user_vectors runs, ONNX exports."""
        assert self.lm is not None, "model is not initialised: fit() or load() first"
        self.lm.eval()
        return UserEncoder(self.lm).eval()

    def item_embeddings(self) -> torch.Tensor:
        """Output embedding rows of the item tokens, shape (n_items, hidden)."""
        assert self.lm is not None
        return self.lm.get_output_embeddings().weight[self.token_offset : self.token_offset + self.n_items]

    def fit(
        self, train: Sequences, n_items: int, valid: HoldoutSet | None = None, vocab: ItemVocab | None = None
    ) -> GenerativeRecommender:
        from training.lm.train import fine_tune  # the loop lives in its own module, read top to bottom

        if self.lm is None:
            self.init_model(vocab or ItemVocab([str(i) for i in range(n_items)]))
        fine_tune(self, train, valid)
        return self

    @torch.no_grad()
    def user_vectors(self, histories: Sequence[np.ndarray], batch_size: int = 512) -> np.ndarray:
        encoder = self.user_encoder()
        assert self.lm is not None
        device = self.lm.get_input_embeddings().weight.device  # the CPU, except while training on a GPU
        out = []
        for start in range(0, len(histories), batch_size):
            ids, mask = left_pad(histories[start : start + batch_size], self.config.max_len, self.token_offset)
            vectors = encoder(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device))
            out.append(vectors.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.config.hidden_size), dtype=np.float32)

    @torch.no_grad()
    def item_vectors(self) -> np.ndarray:
        return self.item_embeddings().detach().float().cpu().numpy()

    def save(self, path: str | Path) -> None:
        assert self.lm is not None and self.vocab is not None
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.lm.save_pretrained(path, safe_serialization=True)
        self.vocab.save(path / VOCAB_FILE)
        self._write_card(
            path,
            config=asdict(self.config),
            train_config=asdict(self.train_config),
            token_offset=self.token_offset,
            n_items=self.n_items,
            history=self.history,
            stats=self.stats,
        )

    @classmethod
    def load(cls, path: str | Path) -> GenerativeRecommender:
        path = Path(path)
        card = read_card(path)
        # cards written before TrainConfig lost its unused `extra` field still carry it: production
        # checkpoints must keep loading as warm-start bases
        train_config = {k: v for k, v in card["train_config"].items() if k != "extra"}
        model = cls(LMConfig(**card["config"]), TrainConfig(**train_config))
        model.lm = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        model.lm.eval()
        model.vocab = ItemVocab.load(path / VOCAB_FILE)
        model.token_offset = card["token_offset"]
        model.n_items = card["n_items"]
        model.history = card.get("history", [])
        model.stats = card.get("stats", {})
        return model
