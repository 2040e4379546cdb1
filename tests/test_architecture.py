"""The import contracts of pyproject.toml ([tool.importlinter]) catch what they are meant to catch.

Each case copies recsys/, training/ and serving/ (.py files only) and pyproject.toml into a temporary
directory, appends one import that breaks one contract, and runs `lint-imports` there with PYTHONPATH on the
copy. The report must name the broken contract and the added import at the line it was appended: the
installed packages have no such line, so the copy is what was analysed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from recsys.settings import REPO_ROOT

PACKAGES = ("recsys", "training", "serving")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONTRACTS = {
    contract["id"]: contract["name"]
    for contract in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
}

# (contract id, file, module whose import is appended to it)
BREAKS = [
    ("serving-lean", "serving/app.py", "training.lm.model"),
    ("core-torch-free", "recsys/evaluate.py", "serving.app"),
    ("core-torch-free", "recsys/index.py", "torch"),
    ("cli-is-the-root", "recsys/evaluate.py", "recsys.cli.models"),
    ("training-without-serving", "training/export.py", "serving.app"),
    ("bench-entry-only", "training/pipeline.py", "training.bench.quality"),
]


def _python_only(directory: str, names: list[str]) -> list[str]:
    """copytree's ignore: everything but packages and .py files (grimp reads nothing else)."""
    return [n for n in names if n == "__pycache__" or not (n.endswith(".py") or Path(directory, n).is_dir())]


def _copy_tree(root: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, root / package, ignore=_python_only)
    shutil.copy2(REPO_ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def _lint(root: Path) -> tuple[int, str]:
    # COLUMNS: contract names on one line each, so they can be found in the summary.
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "400"}
    command = [str(LINT_IMPORTS), "--no-logo", "--no-cache"]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=120)
    return result.returncode, result.stdout + result.stderr


def _append_import(path: Path, module: str) -> int:
    """Append `import module` to a file; the line number it lands on."""
    text = path.read_text()
    if not text.endswith("\n"):
        text += "\n"
    text += f"import {module}\n"
    path.write_text(text)
    return text.count("\n")


def test_every_contract_has_a_breaking_case():
    assert {case[0] for case in BREAKS} == set(CONTRACTS)


def test_the_tree_keeps_every_contract(tmp_path):
    code, output = _lint(_copy_tree(tmp_path))
    assert code == 0, output
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in output


@pytest.mark.parametrize(("contract", "file", "module"), BREAKS, ids=[f"{c[0]}:{c[1]}" for c in BREAKS])
def test_an_added_import_breaks_its_contract(tmp_path, contract, file, module):
    root = _copy_tree(tmp_path)
    line = _append_import(root / file, module)
    code, output = _lint(root)
    assert code != 0, output
    assert f"{CONTRACTS[contract]} BROKEN" in output
    importer = file.removesuffix(".py").replace("/", ".")
    assert f"{importer} -> {module} (l.{line})" in output
