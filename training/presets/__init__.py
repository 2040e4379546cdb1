"""Per-dataset configuration presets (JSON files in training/presets/), chosen on the validation split.

A preset file holds `max_len` (the history window: read once into the LM's config, which owns it), `lm`,
`train`, `als`, optionally `members` (an ensemble) and `nightly` (the nightly job's fine-tuning recipe).

The training loss is `train.loss` (TrainConfig in training/lm/model.py):
- `"full"` (the default): exact cross-entropy over every item. Its cost per token grows with the catalogue;
  use it where affordable, catalogues up to ~100k items on CPU.
- `"sampled"`: each target against the batch's other targets plus `train.sampled_negatives` (default 256)
  items drawn uniformly, with the log-Q correction (`train.logq_correction`, default true). The loss's cost
  per token does not grow with the catalogue (the dense embedding gradient and AdamW update still do): use it
  past ~100k items. More negatives than the catalogue has items is refused before training.
  `train.logq_popularity` (default false) corrects each candidate by its probability of being a candidate,
  from the items' share of the training targets, instead of counting each in-batch item once.
  `amazon-beauty-34-sampled-4096` is `amazon-beauty-34` with 4096 negatives and the popularity correction,
  chosen on validation over 1024 and 2048 (its description gives the figures), to compare the two losses on
  Beauty; `amazon-beauty-34-sampled` is the same at 1024 negatives (an earlier published comparison).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.lm.model import LMConfig, TrainConfig

PRESETS_DIR = Path(__file__).resolve().parent


@dataclass
class NightlyRecipe:
    """How `recsys nightly` trains: a warm-started fine-tune from production, or from scratch without one.

    The defaults are the recipe of the published nightly replay (movielens preset); a preset's `nightly`
    section overrides them, and `recsys nightly` options override the preset.
    """

    warm_epochs: int = 12  # epochs of the warm-started fine-tune (early stopping within)
    # Shrink and perturb (Ash & Adams, 2020): a model fine-tuned night after night from its own weights
    # generalises worse than one trained from scratch (measured: 96% of scratch NDCG@10 after a week).
    # Scaling the production weights by this factor and adding a little noise before fine-tuning keeps what
    # was learnt but restores plasticity: the fine-tune then runs at the from-scratch learning rate.
    warm_shrink: float = 0.5  # 1.0: plain warm start
    warm_lr_scale: float = 1.0  # the fine-tune's learning rate = the preset's lr times this
    warm_warmup_ratio: float = 0.05
    warm_patience: int = 4
    warm_max_minutes: float | None = None  # budget of the fine-tune; None: none (the epochs bound it)
    scratch_max_minutes: float | None = None  # budget without a production model; None: the preset's train budget

    def __post_init__(self) -> None:  # a bad value fails where the preset is read, before any training
        if self.warm_epochs < 1:
            raise ValueError(f"warm_epochs must be >= 1, got {self.warm_epochs}")
        if not 0.0 < self.warm_shrink <= 1.0:
            raise ValueError(f"warm_shrink must be in (0, 1] (1: plain warm start), got {self.warm_shrink}")


@dataclass
class Preset:
    """One LM (`lm`, `train`) or, when `members` is given, an ensemble of LMs (training/lm/ensemble.py).

    A member's `lm` and `train` entries override the preset's own, which hold what members share.
    """

    name: str
    lm: LMConfig
    train: TrainConfig
    als: dict[str, Any] = field(default_factory=dict)
    members: list[tuple[LMConfig, TrainConfig]] = field(default_factory=list)
    nightly: NightlyRecipe = field(default_factory=NightlyRecipe)

    @property
    def max_len(self) -> int:
        """The history window every split and model input uses (members share it: one value in the file)."""
        return self.lm.max_len

    def check_catalogue(self, n_items: int) -> None:
        """Refuse, before anything trains, the settings the catalogue cannot satisfy (e.g. more sampled
        negatives than it has items). Building each model checks it too; this lets a command that trains
        baselines first fail up front."""
        for train in [self.train, *(train for _, train in self.members)]:
            train.check_catalogue(n_items)


def available() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.json"))


def load_preset(name_or_path: str, overrides: dict[str, Any] | None = None) -> Preset:
    """A preset by name (training/presets/<name>.json) or path; `overrides` replace train fields."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESETS_DIR / f"{name_or_path}.json"
    if not path.exists():
        raise FileNotFoundError(f"no preset {name_or_path!r}; available: {', '.join(available())} or a JSON path")
    raw = json.loads(path.read_text())
    if "max_len" not in raw:
        raise ValueError(f"preset {path}: no max_len (the history window the model reads)")
    given = {k: v for k, v in (overrides or {}).items() if v is not None}

    def configs(lm: dict[str, Any], train: dict[str, Any]) -> tuple[LMConfig, TrainConfig]:
        return LMConfig(max_len=raw["max_len"], **lm), TrainConfig(**{**train, **given})

    try:
        lm, train = configs(raw.get("lm", {}), raw.get("train", {}))
        members = [
            configs({**raw.get("lm", {}), **m.get("lm", {})}, {**raw.get("train", {}), **m.get("train", {})})
            for m in raw.get("members", [])
        ]
        nightly = NightlyRecipe(**raw.get("nightly", {}))
    except (TypeError, ValueError) as exc:  # an unknown key or a bad value: name the file it is in
        raise ValueError(f"preset {path}: {exc}") from exc
    return Preset(name=path.stem, lm=lm, train=train, als=raw.get("als", {}), members=members, nightly=nightly)
