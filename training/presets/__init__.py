"""Per-dataset configuration presets (JSON files in training/presets/), chosen on the validation split."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.lm.model import LMConfig, TrainConfig

PRESETS_DIR = Path(__file__).resolve().parent


@dataclass
class Preset:
    """One LM (`lm`, `train`) or, when `members` is given, an ensemble of LMs (training/lm/ensemble.py).

    A member's `lm` and `train` entries override the preset's own, which hold what members share.
    """

    name: str
    max_len: int
    lm: LMConfig
    train: TrainConfig
    als: dict[str, Any] = field(default_factory=dict)
    members: list[tuple[LMConfig, TrainConfig]] = field(default_factory=list)


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
    given = {k: v for k, v in (overrides or {}).items() if v is not None}

    def configs(lm: dict[str, Any], train: dict[str, Any]) -> tuple[LMConfig, TrainConfig]:
        return LMConfig(max_len=raw["max_len"], **lm), TrainConfig(**{**train, **given})

    try:
        lm, train = configs(raw.get("lm", {}), raw.get("train", {}))
        members = [
            configs({**raw.get("lm", {}), **m.get("lm", {})}, {**raw.get("train", {}), **m.get("train", {})})
            for m in raw.get("members", [])
        ]
    except (TypeError, ValueError) as exc:  # an unknown key or a bad value: name the file it is in
        raise ValueError(f"preset {path}: {exc}") from exc
    return Preset(name=path.stem, max_len=raw["max_len"], lm=lm, train=train, als=raw.get("als", {}), members=members)
