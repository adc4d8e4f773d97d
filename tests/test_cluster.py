"""Off one machine, for real: sweeps through SLURM (submitit_slurm, with accounting) tracked on
an MLflow server over PostgreSQL, all started by `make cluster-up`. Skipped, with the reason,
where that cluster is not up. Each test uses an experiment of its own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, tiny_overrides
from sbert_exp.tracking import uris
from sbert_exp.tracking.tags import (
    LOGGED_EXPORT_TAG,
    LOGGED_MODEL_TAG,
    PARENT_TAG,
    REUSED_TAG,
    SLURM_JOB_TAG,
)

pytestmark = pytest.mark.slow
STATE = Path(os.environ.get("CLUSTER_DIR", ROOT / ".cluster"))
SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug",
         "hydra.launcher.timeout_min=20", "tracking=server", "references=[]"]
# fp32: the int8 export is then the only form faster than every fp32 model (no bf16 form).
MINILM = ["base_model=minilm_l6", "precision=fp32", "eval.speed_rounds=1",
          "eval.speed_sentences=64"]


def _cluster_env() -> dict[str, str]:
    env_file = STATE / "env"
    if not env_file.is_file():
        pytest.skip(f"no local cluster ({env_file} missing): make cluster-up (root, apt-get)")
    found = dict(line.removeprefix("export ").split("=", 1)
                 for line in env_file.read_text().splitlines() if line.startswith("export "))
    try:
        import urllib.request
        urllib.request.urlopen(found["MLFLOW_TRACKING_URI"] + "/health", timeout=5).read()
    except OSError:
        pytest.skip(f"the cluster's MLflow server {found['MLFLOW_TRACKING_URI']} does not answer:"
                    " make cluster-up")
    if subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        pytest.skip("SLURM does not answer sinfo: make cluster-up")
    return found


@pytest.fixture(scope="module")
def cluster() -> dict[str, str]:
    return _cluster_env()


def _tiny(tiny_bert: Path, tmp_path: Path, *more: str) -> list[str]:
    """The tiny BERT's overrides (seconds a job), logging to the cluster's server."""
    return [o for o in tiny_overrides(tiny_bert, tmp_path, phase="none")
            if not o.startswith(("tracking.", "phase="))] + ["eval.speed_rounds=0", *more]


def _sweep(folder: Path, cluster: dict, experiment: str, *overrides: str,
           cache: Path | None = None, wait: bool = True):
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), **cluster}
    if cache is not None:
        env["SBERT_EXP_CACHE"] = str(cache)
    command = [sys.executable, "-m", "sbert_exp.train", "-m", *SLURM,
               f"tracking.experiment={experiment}", *overrides,
               f"hydra.sweep.dir={folder / 'sweep'}"]
    if not wait:
        return subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True,
                          timeout=900)


def _client(cluster):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=cluster["MLFLOW_TRACKING_URI"])


def _runs(cluster, experiment: str) -> list:
    client = _client(cluster)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def _postgres_statuses(cluster, experiment: str) -> dict[str, int]:
    """Run statuses of the experiment, read from PostgreSQL itself, not through MLflow."""
    import psycopg

    with psycopg.connect(cluster["SBERT_EXP_CLUSTER_POSTGRES"]) as db:
        rows = db.execute("select r.status, count(*) from runs r join experiments e on "
                          "r.experiment_id = e.experiment_id where e.name = %s and "
                          "r.lifecycle_stage = 'active' group by r.status",
                          (experiment,)).fetchall()
    return dict(rows)


def _new_experiment() -> str:
    return f"cluster-{uuid.uuid4().hex[:8]}"


def _separate_cache(folder: Path) -> Path:
    """The prepared assets as they are; every cache a job writes of its own."""
    from sbert_exp.utils.cache import cache_dir

    folder.mkdir(parents=True)
    for entry in cache_dir().iterdir():
        if entry.name not in ("references", "teacher_embeddings", "layer_scores", "locks"):
            (folder / entry.name).symlink_to(entry)
    return folder


def test_sweep_on_slurm_logged_on_postgres_reported_and_registered_from_anywhere(
        cluster, tmp_path, monkeypatch):
    import mlflow

    from conftest import compose
    from sbert_exp import evaluation, forms
    from sbert_exp.data.inputs import eval_batch_size
    from sbert_exp.job.checks import check
    from sbert_exp.job.sweeper import read_sweep_file
    from sbert_exp.report.cli import main

    experiment = _new_experiment()
    proc = _sweep(tmp_path, cluster, experiment, *MINILM, "pruning.keep=2,3", "phase=none,sts",
                  "export=onnx_int8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Bypassing sacct error" not in proc.stdout + proc.stderr  # accounting answers
    assert _postgres_statuses(cluster, experiment) == {"FINISHED": 5}  # parent + 4 jobs
    children = [r for r in _runs(cluster, experiment) if r.data.tags.get(PARENT_TAG)]
    assert len(children) == 4
    for run in children:  # every form on the server, each run made in a SLURM job
        assert run.data.tags[SLURM_JOB_TAG].startswith("local:")
        for tag in (LOGGED_MODEL_TAG, LOGGED_EXPORT_TAG):
            assert run.data.tags[tag].startswith(("models:/", "runs:/")), tag
        export = _client(cluster).get_logged_model(
            run.data.tags[LOGGED_EXPORT_TAG].removeprefix("models:/"))
        assert export.artifact_location.startswith("mlflow-artifacts:/")

    sweep_dir = tmp_path / "sweep"
    parent = read_sweep_file(sweep_dir)["parent_run_id"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cluster["MLFLOW_TRACKING_URI"])
    assert main(["--sweep", str(sweep_dir)]) == 0
    df = pd.read_csv(sweep_dir / "report.csv")
    assert df.export_speedup.max() > df.speedup.max() + 0.02  # int8 beats every fp32 model
    budget = ["--min-speedup", f"{df.speedup.max() + 0.01:.2f}", "--register", experiment]
    assert main(["--sweep", str(sweep_dir), *budget]) == 0
    names = ("report.csv", "report.md", "recommendation.json")
    from_folder = {name: (sweep_dir / name).read_text() for name in names}
    shutil.rmtree(sweep_dir)  # no job folder, no model folder left
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert main(["--run", parent, *budget]) == 0
    assert {name: (empty / name).read_text() for name in names} == from_folder

    chosen = json.loads(from_folder["recommendation.json"])
    assert chosen["form"] == "onnx_int8"
    with uris.using(cluster["MLFLOW_TRACKING_URI"]):
        folder = Path(mlflow.artifacts.download_artifacts(
            f"models:/{experiment}@recommended", dst_path=str(tmp_path / "download")))
    cfg, _ = compose(["base_model=minilm_l6", "references=[]", "tracking.enabled=false"])
    scores = evaluation.sts_scores(forms.load(folder), check(cfg).data.sts_test,
                                   eval_batch_size(cfg.eval.batch_size, "cpu"))
    assert scores["spearman_cosine"] == pytest.approx(chosen["sts"], abs=1e-4)


def test_two_sweeps_of_the_same_configs_at_once_train_each_config_once(cluster, tiny_bert,
                                                                       tmp_path):
    experiment = _new_experiment()
    sweeps = [_sweep(tmp_path / name, cluster, experiment,
                     *_tiny(tiny_bert, tmp_path, "pruning.keep=2,3", "phase=none",
                            "pruning.strategy=top,bottom"), wait=False,
                     cache=_separate_cache(tmp_path / f"{name}-cache")) for name in ("a", "b")]
    for proc in sweeps:
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, out[-3000:]
    children = [r for r in _runs(cluster, experiment) if r.data.tags.get(PARENT_TAG)]
    assert len(children) == 8 and {r.info.status for r in children} == {"FINISHED"}
    trained = [r for r in children if REUSED_TAG not in r.data.tags]
    assert len(trained) == 4  # not 8
    assert len({r.data.tags["sbert_exp.config_key"] for r in trained}) == 4


def _wait_for_running_child(cluster, experiment: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [r for r in _runs(cluster, experiment)
                   if r.data.tags.get(PARENT_TAG) and r.info.status == "RUNNING"]
        if running:
            return running[0]
        time.sleep(1)
    raise AssertionError(f"no job of {experiment} started within {timeout} s")


def _slow(tiny_bert: Path, tmp_path: Path) -> list[str]:
    """One job that trains long enough (about half a minute) to be caught RUNNING."""
    return _tiny(tiny_bert, tmp_path, "pruning.keep=2", "phase=sts", "phase.sts.max_pairs=null",
                 "phase.sts.epochs=3")


def test_a_cancelled_job_ends_killed_and_the_rerun_finishes_the_sweep(cluster, tiny_bert,
                                                                      tmp_path):
    experiment = _new_experiment()
    slow = _slow(tiny_bert, tmp_path)
    proc = _sweep(tmp_path, cluster, experiment, *slow, wait=False)
    run = _wait_for_running_child(cluster, experiment)
    job = run.data.tags[SLURM_JOB_TAG].split(":")[-1]
    subprocess.run(["scancel", job], check=True)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0, out[-2000:]

    again = _sweep(tmp_path, cluster, experiment, *slow)
    assert again.returncode == 0, again.stderr[-3000:]
    cancelled = _client(cluster).get_run(run.info.run_id)
    assert cancelled.info.status == "KILLED"
    assert cancelled.data.tags["error"] == (f"killed: SLURM job {run.data.tags[SLURM_JOB_TAG]} "
                                            "ended without closing this run")
    statuses = _postgres_statuses(cluster, experiment)
    assert statuses == {"FINISHED": 2, "KILLED": 1}  # the parent, the rerun job; the cancelled


def _mlflow_pid() -> int:
    return int((STATE / "mlflow.pid").read_text())


def test_the_server_stopped_mid_sweep_fails_jobs_in_one_line_and_a_rerun_completes(
        cluster, tiny_bert, tmp_path):
    experiment = _new_experiment()
    slow = _slow(tiny_bert, tmp_path)
    proc = _sweep(tmp_path, cluster, experiment, *slow, wait=False)
    run = _wait_for_running_child(cluster, experiment)
    os.kill(_mlflow_pid(), signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 2
        line = (f"error: tracking server {cluster['MLFLOW_TRACKING_URI']} stopped answering "
                "during the run: restart it (make mlflow-server, or make cluster-up), then run "
                "the same command again: finished jobs are reused, and a run it left RUNNING is "
                "marked KILLED")
        assert out.strip().splitlines()[-1] == line, out[-3000:]
        # The job, in SLURM, ended with the same line in its log (no traceback: not a bug).
        logs = [p.read_text() for p in (tmp_path / "sweep").rglob("*.log")]
        assert any(line in text and "Traceback" not in text for text in logs), logs
    finally:
        subprocess.run(["bash", str(ROOT / "cluster" / "up.sh")], check=True,
                       capture_output=True, timeout=300)
    assert _client(cluster).get_run(run.info.run_id).info.status != "FINISHED"
    again = _sweep(tmp_path, cluster, experiment, *slow)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _client(cluster).get_run(run.info.run_id).info.status in ("KILLED", "FAILED")
    finished = [r for r in _runs(cluster, experiment)
                if r.data.tags.get(PARENT_TAG) and r.info.status == "FINISHED"]
    assert len(finished) == 1


def test_postgres_restarted_between_two_sweeps_loses_nothing(cluster, tiny_bert, tmp_path):
    experiment = _new_experiment()
    jobs = _tiny(tiny_bert, tmp_path, "pruning.keep=2,3", "phase=none")
    first = _sweep(tmp_path / "a", cluster, experiment, *jobs)
    assert first.returncode == 0, first.stderr[-3000:]
    before = _postgres_statuses(cluster, experiment)
    data = STATE / "postgres"
    bin_dir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    subprocess.run(["runuser", "-u", "postgres", "--", str(bin_dir / "pg_ctl"), "-D", str(data),
                    "-m", "fast", "-w", "restart", "-l", str(STATE / "log" / "postgres.log")],
                   check=True, capture_output=True, timeout=120)
    assert _postgres_statuses(cluster, experiment) == before == {"FINISHED": 3}
    second = _sweep(tmp_path / "b", cluster, experiment, *jobs)
    assert second.returncode == 0, second.stderr[-3000:]
    children = [r for r in _runs(cluster, experiment) if r.data.tags.get(PARENT_TAG)]
    assert len(children) == 4 and sum(REUSED_TAG in r.data.tags for r in children) == 2
