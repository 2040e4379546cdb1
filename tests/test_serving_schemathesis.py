"""schemathesis over the served OpenAPI document, against the real server: generated requests, valid and
invalid, must never get a 5xx; every response must match its documented status code, content type and schema;
and every schema-violating request must be refused.

The `st run` command in a subprocess rather than schemathesis' pytest plugin: the plugin (4.32) does not work
with pytest 9. Bounded by a fixed seed and number of examples per operation (~10 s here; no --max-time, which
is a budget the fuzzing phase fills rather than a cap), and loopback only.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from recsys.harness import ServerProcess

pytest.importorskip("schemathesis")

API_KEY = "schemathesis-key"
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    ]
)


def test_api_conforms_to_its_openapi_document(tiny_bundle, tmp_path):
    root, _ = tiny_bundle
    env = {"RECSYS_API_KEY": API_KEY, "RECSYS_ACCESS_LOG": "false"}
    with ServerProcess(root, tmp_path, env=env) as server:
        command = [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json"]
        command += ["--checks", CHECKS, "--max-examples", "30", "--seed", "1", "--workers", "1"]
        command += ["--request-timeout", "10", "-H", f"X-API-Key: {API_KEY}"]
        out = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    report = out.stdout[-6000:] + out.stderr[-2000:]
    assert out.returncode == 0, report
    assert "passed" in out.stdout and "failed" not in out.stdout.split("SUMMARY")[-1], report
    assert "Traceback" not in server.log(), server.log()[-3000:]
