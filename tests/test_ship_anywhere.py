"""Shipping without the job folders: every form a logged model, the report by parent run id
from an empty folder, and the registry holding the form the report recommends."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, compose
from sbert_exp.errors import UserError
from sbert_exp.job.sweeper import read_sweep_file
from sbert_exp.report.cli import Sweep, main, write_report
from sbert_exp.tracking import uris


def test_a_run_id_that_is_no_sweep_parent_ends_in_one_line(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    job = client.create_run(client.create_experiment("tests")).info.run_id
    for run_id in (job, "0" * 32):
        with pytest.raises(UserError) as e:
            Sweep.from_run(uri, run_id, tmp_path / "out")
        assert str(e.value) == (
            f"{uri} has no sweep parent run {run_id}: pass the run id of a sweep's parent (its "
            "MLflow page, or sweep.json's parent_run_id), and --tracking-uri of the store that "
            "holds it")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_report_by_run_id_without_job_folders_registers_the_recommended_export(
        tmp_path, monkeypatch):
    """On minilm_l6 (the tiny model's int8 export is no smaller than its fp32 folder)."""
    import mlflow

    from sbert_exp import evaluation, forms
    from sbert_exp.data.inputs import eval_batch_size
    from sbert_exp.job.checks import check

    # fp32: the int8 export is then the only form faster than every fp32 model (no bf16 form).
    job = ["base_model=minilm_l6", "precision=fp32", "phase=none", "references=[]",
           "eval.speed_sentences=64",
           "eval.speed_rounds=1", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
           "tracking.experiment=tests", "export=onnx_int8", "save_model=true",
           "tracking.log_model=true"]
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "sbert_exp.train", "-m", *job, "pruning.keep=2,3",
         f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = read_sweep_file(sweep_dir)
    uri, parent = info["tracking_uri"], info["parent_run_id"]

    # From the sweep folder, with a budget only an int8 export meets (faster than every fp32
    # model): the export is recommended.
    write_report(sweep_dir)
    df = pd.read_csv(sweep_dir / "report.csv")
    assert df.export_speedup.max() > df.speedup.max() + 0.02
    budget = ["--min-speedup", f"{df.speedup.max() + 0.01:.2f}", "--register", "tiny"]
    assert main(["--sweep", str(sweep_dir), *budget]) == 0
    from_folder = {name: (sweep_dir / name).read_text()
                   for name in ("report.csv", "report.md", "recommendation.json")}
    chosen = json.loads(from_folder["recommendation.json"])
    assert chosen["form"] == "onnx_int8" and chosen["registered"]["name"] == "tiny"
    assert chosen["logged_model"].startswith("models:/m-")

    # No job folder left: the report by parent run id, from an empty folder, is the same.
    shutil.rmtree(sweep_dir)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert main(["--run", parent, "--tracking-uri", uri, *budget]) == 0
    assert {name: (empty / name).read_text() for name in from_folder} == from_folder

    # The registered version is the int8 export: downloaded into an empty folder, it loads,
    # encodes and scores what the report says.
    with uris.using(uri):
        folder = Path(mlflow.artifacts.download_artifacts(
            "models:/tiny@recommended", dst_path=str(tmp_path / "download")))
    version = uris.client(uri).get_model_version_by_alias("tiny", "recommended")
    assert any(folder.rglob("*.onnx"))
    assert version.tags["form"] == "onnx_int8"
    assert float(version.tags["sts"]) == pytest.approx(chosen["sts"], abs=1e-4)
    # At the job's batch size: int8 ONNX quantizes activations per batch, so the batches'
    # make-up moves the score by up to about 1e-3.
    cfg, _ = compose(job)
    scores = evaluation.sts_scores(forms.load(folder), check(cfg).data.sts_test,
                                   eval_batch_size(cfg.eval.batch_size, "cpu"))
    assert scores["spearman_cosine"] == pytest.approx(chosen["sts"], abs=1e-4)
