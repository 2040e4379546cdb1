"""The serving-only install (`pip install -e '.[serve]'`, no torch) runs the service and the bundle commands.

The bundle is built with the full install (the shared fixtures); everything after that runs in `.venv-serve`,
which `make test` builds. Run without make, the test builds it the same way (about 40 s on 2 cores).
"""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

import httpx
import pytest

from recsys.harness import ServerProcess
from recsys.settings import REPO_ROOT

SERVE_VENV = REPO_ROOT / ".venv-serve"
SERVE_STAMP = SERVE_VENV / ".installed-stamp"  # the Makefile's stamp: make and this test share the environment
TRAIN_ONLY = ("torch", "transformers", "implicit", "scipy")


def _serve_python() -> Path:
    """`.venv-serve/bin/python`, installed as the Makefile does when missing or older than pyproject.toml."""
    python = SERVE_VENV / "bin" / "python"
    pyproject = REPO_ROOT / "pyproject.toml"
    if SERVE_STAMP.exists() and SERVE_STAMP.stat().st_mtime >= pyproject.stat().st_mtime:
        return python
    if not python.exists():
        venv.create(SERVE_VENV, with_pip=True)
    install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e", ".[serve]"]
    subprocess.run(install, cwd=REPO_ROOT, check=True, timeout=1200)
    SERVE_STAMP.touch()
    return python


@pytest.fixture(scope="module")
def serve_python() -> Path:
    return _serve_python()


@pytest.fixture(scope="module")
def known_user(tiny_bundle) -> str:
    from recsys.bundle.reader import BundleRecommender

    engine = BundleRecommender(tiny_bundle[1])
    return min(engine.histories, key=lambda u: len(engine.histories[u]))


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_training_packages_are_not_installed(serve_python, tmp_path):
    # Outside the repository, so only the environment's own packages can be found.
    probe = (
        "import importlib, json, sys\n"
        "found = {}\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "        found[name] = True\n"
        "    except ModuleNotFoundError:\n"
        "        found[name] = False\n"
        "print(json.dumps(found))\n"
    )
    result = _run([str(serve_python), "-c", probe, *TRAIN_ONLY], tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == dict.fromkeys(TRAIN_ONLY, False)


def test_service_answers_from_the_serving_install(serve_python, tiny_bundle, known_user, tmp_path):
    root, _ = tiny_bundle
    server = ServerProcess(root, tmp_path / "work", python=serve_python).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            response = client.get(f"/v1/users/{known_user}/recommendations", params={"k": 5})
    finally:
        code = server.stop()
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["items"]) == 5
    assert body["user_id"] == known_user and body["fallback"] is False  # the model answered, not popularity
    assert code == 0, server.log()[-3000:]
    assert server.torch_imported() is False
    assert "Traceback" not in server.log(), server.log()[-3000:]


def test_bundle_commands_from_the_serving_install(serve_python, tiny_bundle, known_user, tmp_path):
    root, bundle_dir = tiny_bundle
    recsys = str(serve_python.parent / "recsys")
    verify = _run([recsys, "bundle", "verify", str(bundle_dir)], tmp_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "verified" in verify.stdout

    command = [str(serve_python), "-m", "recsys.cli", "recommend", "--bundle", str(root), "--user", known_user]
    recommend = _run([*command, "-k", "5", "--json"], tmp_path)
    assert recommend.returncode == 0, recommend.stdout + recommend.stderr
    result = json.loads(recommend.stdout)
    assert len(result["item_ids"]) == 5 and result["fallback"] is False
