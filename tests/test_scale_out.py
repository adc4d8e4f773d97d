"""Scale-out: a sweep through a Hydra launcher against a tracking server on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, tiny_overrides

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tracking_server(tmp_path):
    """`mlflow server` on 127.0.0.1 over a fresh SQLite store, stopped by its own PID."""
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri",
         f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination",
         str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("mlflow server did not answer /health within 120 s")
    yield url
    server.terminate()
    server.wait(timeout=30)


def _api(url: str, path: str, payload: dict | None = None, **query: str) -> dict:
    """POST `payload` as JSON, or GET with `query` parameters."""
    full = f"{url}/api/2.0/mlflow/{path}"
    if payload is None:
        full += "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(full)
    else:
        request = urllib.request.Request(full, data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


def test_submitit_sweep_logs_both_children_under_one_parent(tiny_bert, tmp_path,
                                                            tracking_server):
    overrides = [o for o in tiny_overrides(tiny_bert, tmp_path, phase="none")
                 if not o.startswith("tracking.")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "sbert_exp.train", "-m", "hydra/launcher=submitit_local",
         "hydra.launcher.timeout_min=10", "tracking=server", f"tracking.uri={tracking_server}",
         "tracking.experiment=scale_out", *overrides, "pruning.keep=1,2", "save_model=false",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    parent_id = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["parent_run_id"]

    # Through the tracking server's REST API, as the UI sees it.
    experiment = _api(tracking_server, "experiments/get-by-name",
                      experiment_name="scale_out")["experiment"]
    runs = _api(tracking_server, "runs/search",
                {"experiment_ids": [experiment["experiment_id"]], "max_results": 100})["runs"]

    def tags(run):
        return {t["key"]: t["value"] for t in run["data"].get("tags", [])}

    parents = [r for r in runs if tags(r).get("sbert_exp.sweep") == "parent"]
    assert [p["info"]["run_id"] for p in parents] == [parent_id]
    assert parents[0]["info"]["status"] == "FINISHED"
    children = [r for r in runs if tags(r).get("mlflow.parentRunId") == parent_id]
    assert len(children) == 2 and len(runs) == 3
    kept = sorted({p["key"]: p["value"] for p in c["data"]["params"]}["pruning.kept_layers"]
                  for c in children)
    assert kept == ["0", "0,1"]
    assert {c["info"]["status"] for c in children} == {"FINISHED"}
    # Each job ran in its own process (submitit), not in the sweep's.
    assert len(list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))) == 2
