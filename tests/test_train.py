"""End-to-end jobs: metrics.json, the MLflow run, a -m sweep, and the MiniLM correctness anchor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, compose, tiny_overrides
from sbert_exp.pipeline import run_job
from sbert_exp.tracking import flatten

# The documented metric names (README, "Metrics") of a job with phase=nli_sts.
NLI_STS_METRICS = {
    "sts_test/spearman_cosine", "sts_test/pearson_cosine",
    "before/sts_test/spearman_cosine", "before/sts_test/pearson_cosine",
    "after_nli/sts_test/spearman_cosine", "after_nli/sts_test/pearson_cosine",
    "after_sts/sts_test/spearman_cosine", "after_sts/sts_test/pearson_cosine",
    "nli_test/accuracy",
    "model/params_total", "model/params_embeddings", "model/params_encoder",
    "model/num_layers", "model/size_mb",
    "speed/sentences_per_s", "speed/sentences_per_s_unpruned", "speed/speedup_vs_unpruned",
    "train_nli/loss", "train_nli/seconds", "train_nli/pairs", "train_nli/pairs_per_s",
    "train_sts/loss", "train_sts/seconds", "train_sts/pairs", "train_sts/pairs_per_s",
    "time/total_s",
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
    assert on_disk["train_nli/pairs"] == 48 and on_disk["train_sts/pairs"] == 32
    assert -1 <= on_disk["sts_test/spearman_cosine"] <= 1
    assert on_disk["sts_test/spearman_cosine"] == on_disk["after_sts/sts_test/spearman_cosine"]
    assert 0 <= on_disk["nli_test/accuracy"] <= 1
    pooler = 32 * 32 + 32  # BERT's pooler (hidden x hidden + bias) counts in the total only
    assert on_disk["model/params_total"] == (on_disk["model/params_embeddings"]
                                             + on_disk["model/params_encoder"] + pooler)
    assert on_disk["speed/speedup_vs_unpruned"] > 1.0  # 3 of 12 layers
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
    assert run.data.params["dataset.sts_test.location"] == "stsb/test"
    assert set(run.data.metrics) == NLI_STS_METRICS
    for name, value in on_disk.items():
        assert run.data.metrics[name] == pytest.approx(value)
    history = client.get_metric_history(run.info.run_id, "sts_test/spearman_cosine")
    assert sorted(m.step for m in history) == [0, 1, 2]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "metrics.json" in artifacts


def test_failed_stage_marks_the_run_failed(tiny_bert, tmp_path, monkeypatch):
    from sbert_exp import training

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


def test_multirun_sweep_runs_every_job(tiny_bert, tmp_path):
    overrides = tiny_overrides(tiny_bert, tmp_path, phase="sts")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "sbert_exp.train", "-m", "pruning.keep=1,3",
         "pruning.strategy=top,bottom", *overrides, "phase.sts.max_pairs=16",
         "save_model=false", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert jobs == ["0_tiny_bert_top_keep1", "1_tiny_bert_bottom_keep1",
                    "2_tiny_bert_top_keep3", "3_tiny_bert_bottom_keep3"]
    for job in jobs:
        metrics = json.loads((tmp_path / "sweep" / job / "metrics.json").read_text())
        assert metrics["model/num_layers"] == int(job[-1])
    _, runs = _runs(tmp_path / "mlflow.db", "tests")
    kept = sorted(r.data.params["pruning.kept_layers"] for r in runs)
    assert kept == ["0", "0,1,2", "11", "9,10,11"]
    assert {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.slow
def test_minilm_end_to_end_with_a_few_dozen_pairs(tmp_path):
    metrics = _job(["base_model=minilm_l6", "pruning.keep=3", "pruning.strategy=top",
                    "phase.nli.max_pairs=48", "phase.sts.max_pairs=32",
                    "eval.nli_test_max_pairs=200", "eval.speed_sentences=64",
                    f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                    "tracking.experiment=minilm"], tmp_path / "job")
    assert set(metrics) == NLI_STS_METRICS
    assert metrics["model/num_layers"] == 3
    assert metrics["model/params_embeddings"] == 11_918_592  # 30,522 x 384 + positions + types
    # Three of MiniLM's six layers, before any training, still rank STSb pairs well.
    assert 0.45 < metrics["before/sts_test/spearman_cosine"] < 0.75
    assert metrics["speed/speedup_vs_unpruned"] > 1.2
    _, runs = _runs(tmp_path / "mlflow.db", "minilm")
    assert len(runs) == 1 and runs[0].data.params["pruning.kept_layers"] == "0,1,2"


@pytest.mark.slow
def test_unpruned_minilm_matches_the_published_stsb_score(tmp_path):
    """Correctness anchor: all-MiniLM-L6-v2, STSb test, cosine Spearman 0.8203 (MTEB)."""
    metrics = _job(["base_model=minilm_l6", "pruning=unpruned", "phase=none", "save_model=false",
                    "tracking.enabled=false"], tmp_path / "job")
    assert metrics["sts_test/spearman_cosine"] == pytest.approx(0.8203, abs=5e-5)
    assert metrics["model/num_layers"] == 6
