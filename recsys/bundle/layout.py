"""Every name in a bundle and what its manifest says about the model: the batch side writes these, the service
reads them, and neither spells a file name anywhere else."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

FORMAT_VERSION = 1  # bumped when a reader of the old format could not read the new one

# -- in the bundles root ---------------------------------------------------------------------------------
CURRENT = "CURRENT"  # one line: the version being served; replaced atomically to promote
HISTORY = "HISTORY.jsonl"  # one line per change of CURRENT, oldest first (releases reads it)

# -- in a bundle directory (one per version, immutable once sealed) --------------------------------------
MANIFEST = "manifest.json"  # version, created_at, model (EncoderSpec), data snapshot, metrics, sha256 of each file
INDEX_ENTRY = "index"  # the manifest's index kind and parameters (recsys.index.IndexParams); absent: flat
ENCODER = "user_encoder.onnx"  # (input_ids, attention_mask), left-padded -> user_vector
INDEX = "items.faiss"  # item vectors for inner-product search; row = dense item index
ITEM_IDS = "item_ids.json"  # row -> item ID
HISTORIES = "histories.parquet"  # user_id, item_ids: each known user's last max_len items
HISTORY_DIR = "user_histories"  # the same histories as arrays the service memory-maps (recsys.bundle.histories):
HISTORY_KEYS = "keys.npy"  # uint64 hash of each user ID, ascending
HISTORY_ID_OFFSETS = "id_offsets.npy"  # int64: user i's ID is id_bytes[offsets[i]:offsets[i + 1]] (UTF-8)
HISTORY_ID_BYTES = "id_bytes.bin"
HISTORY_INDPTR = "indptr.npy"  # int64: user i's item rows are items[indptr[i]:indptr[i + 1]]
HISTORY_ITEMS = "items.npy"  # int32 item rows (row = dense item index, as in the index)
POPULARITY = "popularity.json"  # {"counts": [...]} per row: the fallback for users without a known history
CATALOGUE = "catalogue.parquet"  # optional: the item records (titles, ad copy)
REQUIRED = (ENCODER, INDEX, ITEM_IDS, HISTORIES, POPULARITY)

# -- ad copy: a copy-model folder holds the first three; a bundle's ADCOPY_DIR holds all five ----------------
ADCOPY_DIR = "adcopy"
COPY_DECODER = "copy_decoder.onnx"  # the copy model with its key/value cache as inputs and outputs
COPY_TOKENIZER = "tokenizer.json"
COPY_CONFIG = "copy_model.json"  # the copy model's sizes; a reader needs block_size (the longest sequence)
COPY_FACTS = "facts.json"  # the catalogue's brands and product nouns, what grounding checks against
COPY_COPIES = "copies.parquet"  # the batch's copy for each user's top-k items


@dataclass(frozen=True)
class EncoderSpec:
    """The manifest's `model` entry: what a reader needs to feed the encoder and trust the index."""

    kind: str
    max_len: int
    token_offset: int
    pad_token_id: int
    hidden_size: int
    n_items: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> EncoderSpec:
        model = manifest["model"]
        return cls(**{**model, "pad_token_id": model.get("pad_token_id", 0)})
