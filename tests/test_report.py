"""The sweep report: one row per config, read back from MLflow, as CSV, Markdown and plots."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT, tiny_overrides
from sbert_exp.errors import UserError
from sbert_exp.report import latest_sweep, main, write_report


@pytest.fixture(scope="module")
def sweep(tiny_bert, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "sbert_exp.train", "-m",
         *tiny_overrides(tiny_bert, tmp, phase="none"), "pruning.keep=2,12",
         "pruning.strategy=top,bottom", "base_model.init=pretrained,random",
         "save_model=false", f"hydra.sweep.dir={tmp / 'multirun' / 'day' / 'time'}"],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp


def test_report_rows_files_and_parent_artifacts(sweep):
    sweep_dir = latest_sweep(sweep / "multirun")
    assert sweep_dir == sweep / "multirun" / "day" / "time"
    paths = write_report(sweep_dir)
    assert [p.name for p in paths] == ["report.csv", "report.md", "spearman_vs_layers.png",
                                       "quality_vs_speedup.png"]
    df = pd.read_csv(sweep_dir / "report.csv")
    # 8 jobs, but keep=12 is one config per init: 2 x (top2, bottom2, unpruned) = 6 rows.
    assert len(df) == 6
    assert sorted(zip(df.init, df.strategy, df.keep, strict=True)) == sorted(
        [(init, s, k) for init in ("pretrained", "random")
         for s, k in (("top", 2), ("bottom", 2), ("none", 12))])
    assert set(df.kept_layers[df.strategy == "top"]) == {"0 1"}
    assert set(df.kept_layers[df.strategy == "bottom"]) == {"10 11"}
    unpruned = df[(df.strategy == "none") & (df.init == "pretrained")].iloc[0]
    assert unpruned.retained_pct == pytest.approx(100.0)
    assert unpruned.speedup == 1.0
    row = df[(df.strategy == "top") & (df.init == "random")].iloc[0]
    assert row.retained_pct == pytest.approx(100 * row.sts_final / unpruned.sts_final)
    assert (df.params_total > df.params_encoder).all()
    md = (sweep_dir / "report.md").read_text().splitlines()
    assert len(md) == 2 + 6 and md[0].startswith("| base | init | strategy | keep |")
    for png in paths[2:]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    import json

    from mlflow.tracking import MlflowClient
    info = json.loads((sweep_dir / "sweep.json").read_text())
    client = MlflowClient(tracking_uri=info["tracking_uri"])
    names = {a.path for a in client.list_artifacts(info["parent_run_id"], "report")}
    assert names == {f"report/{p.name}" for p in paths}


def test_report_without_sweep_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: no sweep with a sweep.json under multirun/: run a sweep first (make sweep), "
        "or pass --sweep DIR")
    with pytest.raises(UserError, match="has no sweep.json with a parent run"):
        write_report(tmp_path)
