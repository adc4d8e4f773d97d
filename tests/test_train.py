"""End-to-end jobs: metrics.json, the MLflow run, a -m sweep, and the MiniLM correctness anchor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, SMALL_STS_TEST, compose, tiny_overrides
from sbert_exp.job.run import run_job
from sbert_exp.model.precision import precision
from sbert_exp.tracking import uris
from sbert_exp.tracking.runs import flatten
from sbert_exp.tracking.store import LOCKS

# The documented metric names (README, "Metrics") of a job with phase=nli_sts.
NLI_STS_METRICS = {
    "sts_test/spearman_cosine", "sts_test/pearson_cosine",
    "before/sts_test/spearman_cosine", "before/sts_test/pearson_cosine",
    "after_nli/sts_test/spearman_cosine", "after_nli/sts_test/pearson_cosine",
    "after_sts/sts_test/spearman_cosine", "after_sts/sts_test/pearson_cosine",
    "nli_test/accuracy",
    "model/params_total", "model/params_embeddings", "model/params_encoder",
    "model/params_trainable",
    "model/num_layers", "model/size_mb", "model/vocab_size", "model/disk_mb",
    "base_model/sts_test/spearman_cosine", "base_model/sts_test/pearson_cosine",
    "base_model/disk_mb",
    "speed/sentences_per_s", "speed/sentences_per_s_unpruned", "speed/speedup_vs_unpruned",
    "train_nli/loss", "train_nli/seconds", "train_nli/pairs", "train_nli/pairs_per_s",
    "train_sts/loss", "train_sts/seconds", "train_sts/pairs", "train_sts/pairs_per_s",
    "time/total_s",
    # STSb Spearman's 95% interval after each evaluation and for the base, and its paired
    # difference from the base.
    *(f"{where}{bound}/sts_test/spearman_cosine" for bound in ("ci_low", "ci_high")
      for where in ("", "before/", "after_nli/", "after_sts/", "base_model/")),
    "vs_base/sts_test/spearman_cosine", "vs_base/ci_low/sts_test/spearman_cosine",
    "vs_base/ci_high/sts_test/spearman_cosine",
}


def _job(overrides: list[str], out: Path) -> dict[str, float]:
    cfg, dict_cfg = compose(overrides)
    from omegaconf import OmegaConf

    out.mkdir(parents=True, exist_ok=True)
    params = flatten(OmegaConf.to_container(dict_cfg, resolve=True))
    return run_job(cfg, out, params, {"overrides": " ".join(overrides)})


def _runs(db: Path, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    return client, client.search_runs([exp.experiment_id])


def test_tiny_job_writes_metrics_and_one_mlflow_run(tiny_bert, tmp_path):
    out = tmp_path / "job"
    metrics = _job([*tiny_overrides(tiny_bert, tmp_path), "pruning.keep=3",
                    "pruning.strategy=middle"], out)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert set(on_disk) == NLI_STS_METRICS
    assert on_disk == pytest.approx(metrics)
    assert on_disk["model/num_layers"] == 3
    from sbert_exp.model.modeling import disk_mb

    assert on_disk["base_model/disk_mb"] == pytest.approx(disk_mb(tiny_bert))  # what it loads
    assert on_disk["train_nli/pairs"] == 48 and on_disk["train_sts/pairs"] == 32
    assert -1 <= on_disk["sts_test/spearman_cosine"] <= 1
    assert on_disk["sts_test/spearman_cosine"] == on_disk["after_sts/sts_test/spearman_cosine"]
    assert 0 <= on_disk["nli_test/accuracy"] <= 1
    pooler = 32 * 32 + 32  # BERT's pooler (hidden x hidden + bias) counts in the total only
    assert on_disk["model/params_total"] == (on_disk["model/params_embeddings"]
                                             + on_disk["model/params_encoder"] + pooler)
    # How much faster is make bench's question; here: both variants timed, the ratio theirs.
    speed = [on_disk[f"speed/{k}"] for k in ("sentences_per_s", "sentences_per_s_unpruned")]
    assert all(0 < v < float("inf") for v in speed)
    assert on_disk["speed/speedup_vs_unpruned"] == pytest.approx(speed[0] / speed[1])
    assert (out / "model" / "modules.json").is_file()
    assert not list(out.glob(".model-*"))  # no temporary folder left

    client, runs = _runs(tmp_path / "mlflow.db", "tests")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "tiny_bert-middle-keep3"
    assert run.data.params["pruning.kept_layers"] == "0,1,11"
    assert run.data.params["pruning.keep"] == "3"
    assert run.data.params["pruning.strategy"] == "middle"
    assert run.data.params["phase.nli.max_pairs"] == "48"
    assert run.data.params["dataset.sts_test.location"] == str(tiny_bert / SMALL_STS_TEST)
    assert set(run.data.metrics) == NLI_STS_METRICS
    for name, value in on_disk.items():
        assert run.data.metrics[name] == pytest.approx(value)
    history = client.get_metric_history(run.info.run_id, "sts_test/spearman_cosine")
    assert sorted(m.step for m in history) == [0, 1, 3]  # before, after NLI, after STS
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "metrics.json" in artifacts


def test_failed_stage_marks_the_run_failed(tiny_bert, tmp_path, monkeypatch):
    from sbert_exp.training import stages as training

    def boom(*args, **kwargs):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(training, "train_sts", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        _job([*tiny_overrides(tiny_bert, tmp_path), "pruning.keep=2"], tmp_path / "job")
    assert not (tmp_path / "job" / "metrics.json").exists()
    _, runs = _runs(tmp_path / "mlflow.db", "tests")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert runs[0].data.tags["error"] == "RuntimeError: out of memory (simulated)"


def test_phase_none_logs_no_training_metrics(tiny_bert, tmp_path):
    metrics = _job([*tiny_overrides(tiny_bert, tmp_path, phase="none"), "pruning=unpruned",
                    "save_model=false"], tmp_path / "job")
    assert not any(k.startswith(("train_", "nli_test", "after_")) for k in metrics)
    assert metrics["sts_test/spearman_cosine"] == metrics["before/sts_test/spearman_cosine"]
    assert metrics["model/num_layers"] == 12
    assert not (tmp_path / "job" / "model").exists()
    # The base model's reference score, from the teacher's embeddings, is the unpruned
    # model's score: the same cosine Spearman, up to padding in other batches.
    reference = metrics["base_model/sts_test/spearman_cosine"]
    assert reference == pytest.approx(metrics["sts_test/spearman_cosine"], abs=1e-5)
    pruned = _job([*tiny_overrides(tiny_bert, tmp_path, phase="none"), "pruning.keep=3",
                   "save_model=false"], tmp_path / "pruned")
    assert pruned["base_model/sts_test/spearman_cosine"] == reference
    assert pruned["sts_test/spearman_cosine"] != pytest.approx(reference, abs=1e-3)


def test_frozen_embeddings_stay_as_loaded(tiny_bert, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "job"
    metrics = _job([*tiny_overrides(tiny_bert, tmp_path), "pruning.keep=2",
                    "phase.freeze_embeddings=true", "eval.speed_rounds=0"], out)
    assert metrics["model/params_trainable"] == (metrics["model/params_total"]
                                                 - metrics["model/params_embeddings"])
    base = load_file(tiny_bert / "model.safetensors")
    tuned = load_file(next(out.glob("model/**/model.safetensors")))
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        key = f"embeddings.{name}.weight"
        assert (tuned[key] == base[key]).all(), name
    # ... while the kept layers did train.
    key = "encoder.layer.0.attention.self.query.weight"
    assert not (tuned[key] == base[key]).all()


def test_final_evaluation_only(tiny_bert, tmp_path):
    """eval.every_stage=false eval.speed_rounds=0: one STS evaluation, no timing."""
    metrics = _job([*tiny_overrides(tiny_bert, tmp_path), "pruning.keep=2", "save_model=false",
                    "eval.every_stage=false", "eval.speed_rounds=0"], tmp_path / "job")
    assert set(NLI_STS_METRICS) - set(metrics) == {
        *(f"{stage}/{name}" for stage in ("before", "after_nli") for name in (
            "sts_test/spearman_cosine", "sts_test/pearson_cosine",
            "ci_low/sts_test/spearman_cosine", "ci_high/sts_test/spearman_cosine")),
        "speed/sentences_per_s", "speed/sentences_per_s_unpruned", "speed/speedup_vs_unpruned",
        "model/disk_mb"}  # save_model=false
    assert set(metrics) < NLI_STS_METRICS
    assert metrics["sts_test/spearman_cosine"] == metrics["after_sts/sts_test/spearman_cosine"]
    client, runs = _runs(tmp_path / "mlflow.db", "tests")
    history = client.get_metric_history(runs[0].info.run_id, "sts_test/spearman_cosine")
    assert [m.step for m in history] == [3]  # after STS


def _sweep(tmp_path: Path, name: str, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "sbert_exp.train", "-m", *overrides, "save_model=false",
         f"hydra.sweep.dir={tmp_path / name}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )


def _by_parent(runs):
    parents = [r for r in runs if r.data.tags.get("sbert_exp.sweep") == "parent"]
    children = {p.info.run_id: [r for r in runs
                                if r.data.tags.get("mlflow.parentRunId") == p.info.run_id]
                for p in parents}
    return parents, children


@pytest.mark.slow
def test_multirun_sweep_one_parent_dedupe_and_resume(tiny_bert, tmp_path):
    overrides = [*tiny_overrides(tiny_bert, tmp_path, phase="sts"), "phase.sts.max_pairs=16",
                 "pruning.keep=1,12", "pruning.strategy=top,bottom"]
    proc = _sweep(tmp_path, "sweep", *overrides)
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = sorted(p.name for p in (tmp_path / "sweep").glob("[0-9]*") if p.is_dir())
    assert jobs == ["0_tiny_bert_pretrained_top_keep1", "1_tiny_bert_pretrained_bottom_keep1",
                    "2_tiny_bert_pretrained_top_keep12", "3_tiny_bert_pretrained_bottom_keep12"]
    for job in jobs:
        metrics = json.loads((tmp_path / "sweep" / job / "metrics.json").read_text())
        assert metrics["model/num_layers"] == int(job.rsplit("keep", 1)[1])
    sweep_file = json.loads((tmp_path / "sweep" / "sweep.json").read_text())

    _, runs = _runs(tmp_path / "mlflow.db", "tests")
    parents, children = _by_parent(runs)
    assert [p.info.run_id for p in parents] == [sweep_file["parent_run_id"]]
    assert parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["overrides"].startswith("phase=sts")
    assert parents[0].data.metrics == {"sweep/jobs": 4, "sweep/failed_jobs": 0}
    kids = children[sweep_file["parent_run_id"]]
    assert len(kids) == 4 and len(runs) == 5  # every job is a child of the one parent
    assert sorted(r.data.params["pruning.kept_layers"] for r in kids) == [
        "0", "0,1,2,3,4,5,6,7,8,9,10,11", "0,1,2,3,4,5,6,7,8,9,10,11", "11"]
    # keep=12 is one model for every strategy: trained once, the other job reuses it.
    full = [r for r in kids if r.data.params["pruning.keep"] == "12"]
    reused = [r for r in full if "sbert_exp.reused_from" in r.data.tags]
    trained = [r for r in full if "sbert_exp.reused_from" not in r.data.tags]
    assert len(reused) == 1 and len(trained) == 1
    assert reused[0].data.tags["sbert_exp.reused_from"] == trained[0].info.run_id
    assert reused[0].data.metrics == trained[0].data.metrics
    assert "train_sts/seconds" in reused[0].data.metrics

    # Rerunning the same sweep trains nothing: every job reuses a finished run.
    again = _sweep(tmp_path, "sweep2", *overrides)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (again.stdout + again.stderr).count("reusing its results") == 4
    _, runs = _runs(tmp_path / "mlflow.db", "tests")
    parents, children = _by_parent(runs)
    second = json.loads((tmp_path / "sweep2" / "sweep.json").read_text())["parent_run_id"]
    assert len(parents) == 2 and len(children[second]) == 4
    assert all("sbert_exp.reused_from" in r.data.tags for r in children[second])

    # force=true trains again, but still once per config within the sweep.
    forced = _sweep(tmp_path, "sweep3", *[o for o in overrides if "keep" not in o],
                    "pruning.keep=12", "force=true")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert (forced.stdout + forced.stderr).count("reusing its results") == 1
    _, runs = _runs(tmp_path / "mlflow.db", "tests")
    parents, children = _by_parent(runs)
    third = json.loads((tmp_path / "sweep3" / "sweep.json").read_text())["parent_run_id"]
    kids = {r.info.run_id: r for r in children[third]}
    reused = [r for r in kids.values() if "sbert_exp.reused_from" in r.data.tags]
    assert len(kids) == 2 and len(reused) == 1
    assert reused[0].data.tags["sbert_exp.reused_from"] in kids  # this sweep's own run


@pytest.mark.slow
def test_parallel_jobs_with_one_config_train_it_once(tiny_bert, tmp_path):
    """With the joblib launcher both keep=12 jobs start at once; the config lock makes one wait."""
    proc = _sweep(tmp_path, "sweep", *tiny_overrides(tiny_bert, tmp_path, phase="sts"),
                  "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "pruning.keep=12",
                  "pruning.strategy=top,bottom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    _, runs = _runs(tmp_path / "mlflow.db", "tests")
    parents, children = _by_parent(runs)
    kids = children[parents[0].info.run_id]
    assert len(kids) == 2 and {r.info.status for r in kids} == {"FINISHED"}
    reused = [r for r in kids if "sbert_exp.reused_from" in r.data.tags]
    assert len(reused) == 1
    assert [r.info.run_id for r in kids if r not in reused] == [
        reused[0].data.tags["sbert_exp.reused_from"]]
    assert len(list((tmp_path / LOCKS).glob("*.lock"))) == 1  # beside the store


@pytest.mark.slow
def test_two_sweeps_started_together_in_two_folders_train_a_config_once(tiny_bert, tmp_path):
    """The config lock sits beside the store, not in a sweep's folder: two sweeps that log to
    one store, started at the same moment from different folders, train the config once."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    overrides = [*tiny_overrides(tiny_bert, tmp_path, phase="sts"), "pruning.keep=2",
                 "save_model=false"]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "sbert_exp.train", "-m", *overrides,
         f"hydra.sweep.dir={tmp_path / name}"], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    errors = [proc.communicate(timeout=600)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [e[-2000:] for e in errors]
    _, runs = _runs(tmp_path / "mlflow.db", "tests")
    parents, children = _by_parent(runs)
    jobs = [r for p in parents for r in children[p.info.run_id]]
    assert len(parents) == 2 and len(jobs) == 2
    trained = [r for r in jobs if "sbert_exp.reused_from" not in r.data.tags]
    assert len(trained) == 1
    assert [r.data.tags.get("sbert_exp.reused_from") for r in jobs if r not in trained] == [
        trained[0].info.run_id]


@pytest.mark.slow
def test_interrupted_sweep_resumes_with_what_is_missing(tiny_bert, tmp_path):
    import signal
    import time

    overrides = [*tiny_overrides(tiny_bert, tmp_path, phase="sts"), "pruning.keep=1,2,3,4"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sbert_exp.train", "-m", *overrides, "save_model=false",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        # As from a terminal: SIGINT not ignored, even where this process inherited it ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not list((tmp_path / "sweep").glob("1_*")):  # Hydra starts job 1 when job 0 is done
        assert proc.poll() is None and time.monotonic() < deadline, "first job did not finish"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)  # Ctrl-C while the next job runs
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == (
        "interrupted: run the same command again to finish; finished jobs are reused")
    _, runs = _runs(tmp_path / "mlflow.db", "tests")
    parents, children = _by_parent(runs)
    assert parents[0].info.status == "FAILED"
    assert parents[0].data.tags["failed_jobs"] == "sweep interrupted"
    kids = children[parents[0].info.run_id]
    done = [r for r in kids if r.info.status == "FINISHED"]
    assert 1 <= len(done) < 4
    # The job Ctrl-C hit, if its run had started, is FAILED and says why.
    assert [r.data.tags.get("error") for r in kids if r not in done] in (
        [], ["KeyboardInterrupt: "])

    again = _sweep(tmp_path, "sweep2", *overrides)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (again.stdout + again.stderr).count("reusing its results") == len(done)
    _, runs = _runs(tmp_path / "mlflow.db", "tests")
    parents, children = _by_parent(runs)
    second = json.loads((tmp_path / "sweep2" / "sweep.json").read_text())["parent_run_id"]
    kids = children[second]
    assert len(kids) == 4 and {r.info.status for r in kids} == {"FINISHED"}
    trained = [r for r in kids if "sbert_exp.reused_from" not in r.data.tags]
    assert len(trained) == 4 - len(done)


def test_exception_in_training_fails_only_that_job(tiny_bert, tmp_path, monkeypatch, capsys):
    """In-process sweep (basic launcher): the first job runs out of memory, the second runs."""
    import torch

    from sbert_exp import train
    from sbert_exp.training import stages as training

    real, calls = training.train_sts, []

    def oom_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train_sts", oom_once)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [
        "train", "-m", *tiny_overrides(tiny_bert, tmp_path, phase="sts"), "pruning.keep=1,2",
        "save_model=false", f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    with pytest.raises(SystemExit) as exit_info:
        train.cli()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: 1 of 2 jobs failed: #0 pruning.keep=1: OutOfMemoryError: CUDA out of memory "
        "(simulated)")
    assert len(calls) == 2
    _, runs = _runs(tmp_path / "mlflow.db", "tests")
    parents, children = _by_parent(runs)
    assert parents[0].info.status == "FAILED"
    assert parents[0].data.tags["failed_jobs"] == (
        "#0 pruning.keep=1: OutOfMemoryError: CUDA out of memory (simulated)")
    kids = sorted(children[parents[0].info.run_id], key=lambda r: r.data.params["pruning.keep"])
    assert [r.info.status for r in kids] == ["FAILED", "FINISHED"]
    assert kids[0].data.tags["error"] == "OutOfMemoryError: CUDA out of memory (simulated)"
    # The failed job keeps its folder, and its .log says what happened.
    failed_dir = tmp_path / "sweep" / "0_tiny_bert_pretrained_top_keep1"
    log_text = "".join(p.read_text() for p in failed_dir.glob("*.log"))
    assert "OutOfMemoryError: CUDA out of memory (simulated)" in log_text
    assert (tmp_path / "sweep" / "1_tiny_bert_pretrained_top_keep2" / "metrics.json").is_file()


@pytest.mark.slow
def test_sweep_with_a_job_that_fails_its_checks_runs_nothing(tiny_bert, tmp_path):
    """Every job is checked before the sweep writes or logs anything: one line, no parent run."""
    proc = _sweep(tmp_path, "sweep", *tiny_overrides(tiny_bert, tmp_path, phase="none"),
                  "pruning.keep=2,13")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: job #1 pruning.keep=13: pruning.keep=13 is out of range: the base model has 12 "
        "layers, choose pruning.keep between 1 and 12 (base_model=tiny_bert); nothing ran")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "sweep").exists()
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_wrong_depth_of_a_local_model_is_found_before_the_sweep(tiny_bert, tmp_path):
    proc = _sweep(tmp_path, "sweep", *tiny_overrides(tiny_bert, tmp_path, phase="none"),
                  "base_model.num_layers=6", "pruning.keep=2,3")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: job #0 pruning.keep=2: base_model.num_layers=6 but {tiny_bert} has 12 layers: "
        "set base_model.num_layers=12; nothing ran")
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_minilm_end_to_end_with_a_few_dozen_pairs(tmp_path):
    metrics = _job(["base_model=minilm_l6", "pruning.keep=3", "pruning.strategy=top",
                    "phase.nli.max_pairs=48", "phase.sts.max_pairs=32",
                    "eval.nli_test_max_pairs=200", "eval.speed_sentences=64",
                    f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                    "tracking.experiment=minilm"], tmp_path / "job")
    # The default precision: where the CPU computes in bf16, the job also built its bf16 form.
    bf16 = {k for k in metrics if k.startswith("bf16/")}
    assert set(metrics) - bf16 == NLI_STS_METRICS
    if precision("cpu") == "bf16":
        assert {"bf16/sts_test/spearman_cosine", "bf16/speedup_vs_unpruned",
                "bf16/disk_mb"} <= bf16
        assert metrics["bf16/sts_test/spearman_cosine"] == pytest.approx(
            metrics["sts_test/spearman_cosine"], abs=0.005)
        assert 0.4 < metrics["bf16/disk_mb"] / metrics["model/disk_mb"] < 0.6
    else:
        assert not bf16
    assert metrics["model/num_layers"] == 3
    assert metrics["model/params_embeddings"] == 11_918_592  # 30,522 x 384 + positions + types
    # Three of MiniLM's six layers, before any training, still rank STSb pairs well.
    assert 0.45 < metrics["before/sts_test/spearman_cosine"] < 0.75
    speed = [metrics[f"speed/{k}"] for k in ("sentences_per_s", "sentences_per_s_unpruned")]
    assert all(0 < v < float("inf") for v in speed)  # how much faster: make bench
    assert metrics["speed/speedup_vs_unpruned"] == pytest.approx(speed[0] / speed[1])
    _, runs = _runs(tmp_path / "mlflow.db", "minilm")
    assert len(runs) == 1 and runs[0].data.params["pruning.kept_layers"] == "0,1,2"


@pytest.mark.slow
def test_unpruned_minilm_matches_the_published_stsb_score(tmp_path):
    """Correctness anchor: all-MiniLM-L6-v2, STSb test, cosine Spearman 0.8203 (MTEB)."""
    metrics = _job(["base_model=minilm_l6", "pruning=unpruned", "phase=none", "save_model=false",
                    "tracking.enabled=false"], tmp_path / "job")
    assert metrics["sts_test/spearman_cosine"] == pytest.approx(0.8203, abs=5e-5)
    assert metrics["model/num_layers"] == 6


def test_log_model_fills_the_models_and_dataset_columns(tiny_bert, tmp_path):
    """tracking.log_model=true: the model loads back from MLflow and encodes as the saved one;
    the splits are the run's dataset inputs; the experiment opens in the model-training view."""
    import mlflow.sentence_transformers
    from sentence_transformers import SentenceTransformer

    from sbert_exp.tracking.tags import EXPERIMENT_KIND_TAG, LOGGED_MODEL_TAG

    _job([*tiny_overrides(tiny_bert, tmp_path, phase="none"), "pruning.keep=2",
          "eval.speed_rounds=0", "tracking.log_model=true"], tmp_path / "job")
    client, runs = _runs(tmp_path / "mlflow.db", "tests")
    [run] = runs
    assert run.info.status == "FINISHED"
    saved = SentenceTransformer(str(tmp_path / "job" / "model"), device="cpu")
    sentences = ["a man is playing a guitar", "two dogs run on the beach"]
    with uris.using(f"sqlite:///{tmp_path / 'mlflow.db'}"):
        for uri in (run.data.tags[LOGGED_MODEL_TAG], f"runs:/{run.info.run_id}/model"):
            logged = mlflow.sentence_transformers.load_model(uri)
            np.testing.assert_allclose(logged.encode(sentences), saved.encode(sentences),
                                       atol=1e-6)
    assert [m.source_run_id for m in client.search_logged_models(
        [run.info.experiment_id])] == [run.info.run_id]
    inputs = {(d.dataset.name, d.tags[0].value) for d in run.inputs.dataset_inputs}
    assert inputs == {("snli_stsb/sts_test", "evaluation")}
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    # The same config again is reused, and the reuse names the model its origin logged (so the
    # report can register it from a sweep made of reused runs).
    _job([*tiny_overrides(tiny_bert, tmp_path, phase="none"), "pruning.keep=2",
          "eval.speed_rounds=0", "tracking.log_model=true"], tmp_path / "again")
    _, runs = _runs(tmp_path / "mlflow.db", "tests")
    [reuse] = [r for r in runs if r.info.run_id != run.info.run_id]
    assert reuse.data.tags["sbert_exp.reused_from"] == run.info.run_id
    assert reuse.data.tags[LOGGED_MODEL_TAG] == run.data.tags[LOGGED_MODEL_TAG]
