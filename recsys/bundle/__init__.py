"""The bundle, the contract between the batch side and the service: write (staging, seal), verify, promote.

A directory per version under a bundles root, immutable once sealed, whose manifest lists the sha256 of every
other file; `CURRENT` names the version served and is replaced atomically to promote. File names live in
`recsys.bundle.layout`, the reader that answers from a bundle in `recsys.bundle.reader`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys.bundle.layout import CURRENT, FORMAT_VERSION, HISTORY, MANIFEST, REQUIRED
from recsys.durable import atomic_write_text, fsync_path


class BundleError(Exception):
    """A bundle is missing, partial or corrupt; the message names the bundle and the file."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def new_version() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def staging_dir(root: str | Path, version: str) -> Path:
    """Where a bundle is written before it is sealed: a hidden sibling that readers never look at."""
    path = Path(root) / f".staging-{version}"
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def seal(staging: Path, version: str, manifest_fields: dict[str, Any]) -> Path:
    """Write the manifest (checksums of every file), then move the directory into place in one rename."""
    files = {
        p.relative_to(staging).as_posix(): sha256_of(p)
        for p in sorted(staging.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    missing = [name for name in REQUIRED if name not in files]
    if missing:
        raise BundleError(f"cannot seal bundle {version}: missing {', '.join(missing)}")
    manifest = {
        "format_version": FORMAT_VERSION,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(),
        **manifest_fields,
        "files": files,
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    for p in staging.rglob("*"):
        if p.is_file():
            with p.open("rb") as f:
                os.fsync(f.fileno())
    final = staging.parent / version
    if final.exists():
        raise BundleError(f"bundle {final} already exists; bundles are immutable")
    os.rename(staging, final)
    fsync_path(staging.parent)
    return final


def verify(bundle_dir: str | Path) -> dict[str, Any]:
    """The manifest of a bundle whose every file is present and matches its checksum; BundleError otherwise."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise BundleError(f"bundle {bundle_dir} does not exist (build one with `recsys export`)")
    manifest_path = bundle_dir / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        files: dict[str, str] = manifest["files"]
    except FileNotFoundError:
        raise BundleError(f"bundle {bundle_dir} is partial: {MANIFEST} is missing") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise BundleError(f"bundle {bundle_dir}: {MANIFEST} is corrupt ({exc})") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"bundle {bundle_dir} has format {manifest.get('format_version')}, this code reads {FORMAT_VERSION}"
        )
    if manifest.get("version") != bundle_dir.name:
        # CURRENT names folders; a folder that says another version would be served under two names.
        raise BundleError(
            f"bundle {bundle_dir}: its manifest says version {manifest.get('version')!r}; "
            "a bundle's folder must be named after its version"
        )
    for name in REQUIRED:
        if name not in files:
            raise BundleError(f"bundle {bundle_dir} is partial: the manifest lists no {name}")
    for name, expected in files.items():
        path = bundle_dir / name
        if not path.is_file():
            raise BundleError(f"bundle {bundle_dir} is partial: {name} is missing")
        actual = sha256_of(path)
        if actual != expected:
            raise BundleError(
                f"bundle {bundle_dir} is corrupt: {name} has sha256 {actual[:12]}…, manifest says {expected[:12]}…"
            )
    return manifest


def promote(root: str | Path, version: str, action: str = "promote", **history_fields: Any) -> Path:
    """Verify the bundle, then point CURRENT at it with an atomic replace; the old pointer stays on failure.

    Every change of CURRENT is appended to HISTORY.jsonl *after* the replace: a crash in between leaves a
    promotion unrecorded (rollback then still finds the right previous bundle, see recsys.bundle.releases), never a
    recorded promotion that did not happen.
    """
    root = Path(root)
    bundle_dir = root / version
    verify(bundle_dir)
    previous = current_version(root)
    atomic_write_text(root / CURRENT, version + "\n")
    entry = {"at": datetime.now(UTC).isoformat(), "action": action, "version": version, "previous": previous}
    with (root / HISTORY).open("a") as f:
        f.write(json.dumps({**entry, **history_fields}, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return bundle_dir


def current_version(root: str | Path) -> str | None:
    pointer = Path(root) / CURRENT
    if not pointer.exists():
        return None
    return pointer.read_text().strip() or None


def resolve(path: str | Path) -> Path:
    """A bundle directory from either a bundle directory or a bundles root holding CURRENT."""
    path = Path(path)
    if (path / MANIFEST).exists():
        return path
    if (path / CURRENT).exists():
        version = current_version(path)
        if version is None:
            raise BundleError(f"{path / CURRENT} is empty: no bundle is promoted")
        return path / version
    if not path.exists():
        raise BundleError(f"{path} does not exist: no bundle there (run `recsys export` or `recsys demo`)")
    raise BundleError(
        f"{path} is neither a bundle (no {MANIFEST}: partial or not a bundle) nor a bundles root (no {CURRENT})"
    )
