"""Which bundle served before: the promotion history, `recsys rollback`, and retention pruning.

The history is `HISTORY.jsonl` in the bundles root: `recsys.bundle.promote` appends one line (`at`, `action`,
`version`, `previous`) each time CURRENT changes. Torch-free: the service side and the CLI use it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from recsys import bundle
from recsys.bundle import BundleError
from recsys.bundle.layout import CURRENT, HISTORY, MANIFEST


def history(root: str | Path) -> list[dict[str, Any]]:
    """The promotion history, oldest first; a torn last line (a crash mid-append) is skipped."""
    path = Path(root) / HISTORY
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("version"):
            entries.append(entry)
    return entries


def sealed_versions(root: str | Path) -> list[str]:
    """Versions of the complete (sealed) bundles under root, oldest first by creation time, then name."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if path.name.startswith(".") or not path.is_dir() or not (path / MANIFEST).exists():
            continue
        try:
            created = json.loads((path / MANIFEST).read_text()).get("created_at", "")
        except (OSError, json.JSONDecodeError):
            created = ""
        found.append((str(created), path.name))
    return [name for _, name in sorted(found)]


def _rolled_away(entries: list[dict[str, Any]]) -> set[str]:
    """Bundles taken out by a rollback and not promoted again since."""
    away: set[str] = set()
    for entry in entries:
        if entry.get("action") == "rollback" and entry.get("previous"):
            away.add(entry["previous"])
        else:
            away.discard(entry["version"])
    return away


def previous_version(root: str | Path) -> str | None:
    """The bundle a rollback would put back; None when there is none.

    That is the most recent bundle that was CURRENT before the current one and still exists, skipping bundles
    a rollback took out: rolling back twice goes two releases back, never forward onto the bundle just removed.
    """
    root = Path(root)
    current = bundle.current_version(root)
    entries = history(root)
    away = _rolled_away(entries)
    existing = set(sealed_versions(root))
    timeline: list[str] = []  # versions that were CURRENT, most recent first
    for entry in reversed(entries):
        timeline += [entry["version"], *([entry["previous"]] if entry.get("previous") else [])]
    if not timeline and current:
        # no history (bundles promoted before it existed): fall back to the creation order
        ordered = sealed_versions(root)
        timeline = list(reversed(ordered[: ordered.index(current)])) if current in ordered else []
    for version in timeline:
        if version != current and version not in away and version in existing:
            return version
    return None


def rollback(root: str | Path, to: str | None = None) -> tuple[str | None, str]:
    """Point CURRENT back at the previous bundle (or `to`); returns (old, new). BundleError when impossible."""
    root = Path(root)
    current = bundle.current_version(root)
    target = to or previous_version(root)
    if target is None:
        raise BundleError(
            f"no previous bundle to roll back to under {root}: the history lists none other than "
            f"{current or 'nothing'} that still exists"
        )
    if target == current:
        raise BundleError(f"{target} is already the current bundle")
    bundle.promote(root, target, action="rollback")
    return current, target


def prune(root: str | Path, keep: int, stale_staging_s: float = 86_400.0) -> list[str]:
    """Delete sealed bundles beyond the `keep` newest, never the current or previous one; returns them.

    A bundle is first renamed to a hidden `.trash-*` name and then deleted, so a crash half-way never leaves
    a half-deleted bundle under a version name. Leftover staging directories (an export that died) older than
    `stale_staging_s` go too; younger ones may belong to an export still running.
    """
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    root = Path(root)
    versions = sealed_versions(root)
    protected = {bundle.current_version(root), previous_version(root)} - {None}
    newest = set(versions[-keep:]) if keep else set()
    removed = []
    for version in versions:
        if version in protected or version in newest:
            continue
        trash = root / f".trash-{version}"
        os.rename(root / version, trash)
        shutil.rmtree(trash)
        removed.append(version)
    now = time.time()
    for path in root.glob(".trash-*"):
        shutil.rmtree(path, ignore_errors=True)
    for path in root.glob(".staging-*"):
        if now - path.stat().st_mtime > stale_staging_s:
            shutil.rmtree(path, ignore_errors=True)
    return removed


def describe(root: str | Path) -> list[dict[str, Any]]:
    """One row per sealed bundle for `recsys bundle list`: version, created_at, current/previous flags."""
    root = Path(root)
    current, previous = bundle.current_version(root), previous_version(root)
    rows = []
    for version in sealed_versions(root):
        manifest = json.loads((root / version / MANIFEST).read_text())
        metrics = manifest.get("metrics", {}) or {}
        test = metrics.get("test", metrics) if isinstance(metrics, dict) else {}
        rows.append(
            {
                "version": version,
                "created_at": manifest.get("created_at"),
                "current": version == current,
                "previous": version == previous,
                "NDCG@10": test.get("NDCG@10") if isinstance(test, dict) else None,
                "run_id": manifest.get("nightly", {}).get("run_id")
                if isinstance(manifest.get("nightly"), dict)
                else None,
            }
        )
    return rows


__all__ = ["CURRENT", "describe", "history", "previous_version", "prune", "rollback", "sealed_versions"]
