"""Faults: a sweep killed with SIGKILL at many points, concurrent sweeps on a new store, an
unreachable tracking server. Every config ends FINISHED once, nothing stays RUNNING."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import ROOT, tiny_overrides

pytestmark = pytest.mark.slow  # fault injection: killed processes, broken stores, sweeps

RUNNER = Path(__file__).with_name("fault_runner.py")


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def _run(tmp_path: Path, point: str, n: int, overrides: list[str], sweep_dir: Path):
    """One attempt of the sweep, in its own process group, killed at (point, n)."""
    return subprocess.run(
        [sys.executable, str(RUNNER), point, str(n), "-m", *overrides,
         f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600,
        start_new_session=True)


def _all_runs(db: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("tests")
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"],
                              max_results=1000)


def test_sigkill_at_any_point_then_rerun_finishes_every_config_once(tiny_bert, tmp_path):
    overrides = [*tiny_overrides(tiny_bert, tmp_path, phase="sts"), "phase.sts.max_pairs=64",
                 "eval.speed_rounds=0", "pruning.keep=1,2,3"]
    # (where the kill hits, at which occurrence, which sweep folder: the same one continues
    # its parent run; a new one is "the same command again")
    rng = random.Random(8)
    plan = [("after", rng.randint(4000, 9000), "a"), ("train_step", 2, "a"), ("save", 1, "a"),
            ("mlflow_write", 5, "a"), ("before_finished", 1, "b")]
    killed = 0
    for point, n, folder in plan:
        proc = _run(tmp_path, point, n, overrides, tmp_path / folder)
        if proc.returncode == -signal.SIGKILL:
            assert "fault: SIGKILL at" in proc.stderr
            killed += 1
        else:
            raise AssertionError(f"not killed at {point} {n}: {proc.stderr[-3000:]}")
    assert killed == 5
    final = _run(tmp_path, "none", 0, overrides, tmp_path / "a")
    assert final.returncode == 0, final.stderr[-3000:]

    runs = _all_runs(tmp_path / "mlflow.db")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    jobs = [r for r in runs if "sbert_exp.config_key" in r.data.tags]
    trained = [r for r in jobs if "sbert_exp.reused_from" not in r.data.tags]
    done = Counter(r.data.tags["sbert_exp.config_key"] for r in trained
                   if r.info.status == "FINISHED")
    assert len(done) == 3 and set(done.values()) == {1}  # every config trained to the end once
    for key in done:  # ... and never trained again after it had finished
        end = next(r.info.end_time for r in trained if r.data.tags["sbert_exp.config_key"] == key
                   and r.info.status == "FINISHED")
        assert not [r for r in trained if r.data.tags["sbert_exp.config_key"] == key
                    and r.info.start_time > end]
    assert {r.info.status for r in runs} <= {"FINISHED", "KILLED", "FAILED"}
    statuses = Counter(r.info.status for r in runs)
    assert statuses["KILLED"] >= killed  # at least the run each kill left open
    print(f"kills {killed}, runs {dict(statuses)}, trained {len(trained)}, "
          f"configs finished once {len(done)}")
    # Folder "a" was continued three times: one parent run, every job FINISHED in its folder.
    parents = [r for r in runs if r.data.tags.get("sbert_exp.sweep") == "parent"
               and r.data.tags["sweep_dir"] == str(tmp_path / "a")]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    for job in sorted((tmp_path / "a").glob("[0-9]_*")):
        assert (job / "metrics.json").is_file() and not list(job.glob(".model-*"))
    kids = [r for r in jobs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    by_job = Counter(r.data.tags["sbert_exp.job"] for r in kids if r.info.status == "FINISHED")
    assert by_job == {"0": 1, "1": 1, "2": 1}


def test_four_sweeps_at_once_on_a_new_store(tiny_bert, tmp_path):
    base = [*tiny_overrides(tiny_bert, tmp_path, phase="none"), "eval.speed_rounds=0",
            "save_model=false"]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "sbert_exp.train", "-m", *base, f"pruning.keep={a},{a + 1}",
         f"hydra.sweep.dir={tmp_path / f's{a}'}"],
        cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for a in (1, 3, 5, 7)]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [e[-2000:] for e in errors]
    runs = _all_runs(tmp_path / "mlflow.db")
    parents = [r for r in runs if r.data.tags.get("sbert_exp.sweep") == "parent"]
    children = [r for r in runs if "sbert_exp.config_key" in r.data.tags]
    assert len(parents) == 4 and len(children) == 8
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_unreachable_tracking_server_ends_in_one_line_and_leaves_nothing(tiny_bert, tmp_path):
    for mode in ([], ["-m"]):
        proc = subprocess.run(
            [sys.executable, "-m", "sbert_exp.train", *mode,
             *tiny_overrides(tiny_bert, tmp_path, phase="none"), "tracking.uri=http://127.0.0.1:9"],
            cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines() == [
            "error: tracking server http://127.0.0.1:9 does not answer: start it with make "
            "mlflow-server, or use tracking=sqlite"]
        assert sorted(p.name for p in tmp_path.iterdir()) == [], mode


def test_the_server_probe_is_one_bounded_request(monkeypatch):
    """No retries and a 5 s connect/read limit: bounded without timing anything."""
    import requests

    from sbert_exp.config.schema import TrackingConfig
    from sbert_exp.errors import ConfigError
    from sbert_exp.tracking.store import check_reachable

    calls = []

    def refuse(url, timeout):
        calls.append((url, timeout))
        raise requests.ConnectionError("refused")

    monkeypatch.setattr(requests, "get", refuse)
    with pytest.raises(ConfigError, match=r"^tracking server http://127.0.0.1:9/ does not answer"):
        check_reachable(TrackingConfig(uri="http://127.0.0.1:9/"))
    assert calls == [("http://127.0.0.1:9/health", (5.0, 5.0))]
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "3"


@pytest.mark.real_store_creation
def test_a_store_creation_cut_short_leaves_no_half_made_store(tmp_path, monkeypatch):
    """A process killed while it migrates a new SQLite store leaves a stray temporary file,
    which the next creator removes, and no store that later runs fail to open."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from sbert_exp.config.schema import TrackingConfig
    from sbert_exp.tracking import runs as tracking

    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    (tmp_path / ".mlflow.db.new-1").write_bytes(b"left by a killed creator")
    migrate = SqlAlchemyStore.__init__

    def cut_short(self, db_uri, *args, **kwargs):
        Path(db_uri.removeprefix("sqlite:///")).write_bytes(b"half migrated")
        raise RuntimeError("killed while migrating")

    monkeypatch.setattr(SqlAlchemyStore, "__init__", cut_short)
    with pytest.raises(RuntimeError, match="killed while migrating"):
        tracking.create_sqlite_store(uri)
    assert not db.exists()

    monkeypatch.setattr(SqlAlchemyStore, "__init__", migrate)
    client = tracking.Tracker(TrackingConfig(uri=uri, experiment="tests"))._client()
    assert [e.name for e in client.search_experiments()] == ["Default"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".mlflow")) == []
