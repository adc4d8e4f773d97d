"""The sweep report: one row per config, read back from MLflow, as CSV, Markdown and plots."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT, tiny_overrides
from sbert_exp.errors import UserError
from sbert_exp.report import latest_sweep, main, table, write_report


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


def test_unpruned_reference_from_an_earlier_sweep(sweep, tiny_bert):
    """A sweep without keep=all divides by the unpruned run of the same setup from before."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    later = sweep / "multirun" / "day" / "later"
    proc = subprocess.run(
        [sys.executable, "-m", "sbert_exp.train", "-m",
         *tiny_overrides(tiny_bert, sweep, phase="none"), "pruning.keep=3", "save_model=false",
         f"hydra.sweep.dir={later}"],
        cwd=sweep, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    write_report(later)
    df = pd.read_csv(later / "report.csv")
    earlier = pd.read_csv(sweep / "multirun" / "day" / "time" / "report.csv")
    unpruned = earlier[(earlier.strategy == "none") & (earlier.init == "pretrained")].iloc[0]
    assert len(df) == 1 and df.keep[0] == 3
    assert df.unpruned_sts[0] == pytest.approx(unpruned.sts_final)
    assert df.retained_pct[0] == pytest.approx(100 * df.sts_final[0] / unpruned.sts_final)
    assert df.unpruned_run[0] == unpruned.unpruned_run
    assert (later / "report.md").read_text().splitlines()[-1] == (
        f"% of unpruned for tiny_bert: against the unpruned run {unpruned.unpruned_run} "
        f"(STSb {unpruned.sts_final:.4f}), which is not part of this sweep.")


def _run(run_id: str, kept: str, spearman: float, **params: str) -> dict:
    base = {"base_model.name": "m", "base_model.num_layers": "4", "base_model.init": "pretrained",
            "pruning.strategy": "top", "pruning.kept_layers": kept, "phase.sts.max_pairs": "32",
            "tracking.uri": "sqlite:///x.db"}
    return {"run_id": run_id, "status": "FINISHED", "params": {**base, **params},
            "metrics": {"sts_test/spearman_cosine": spearman}, "tags": {}}


def test_reference_needs_the_same_setup():
    """Only an unpruned run with the same data, phase and eval settings is a reference."""
    pruned = _run("p", "0,1", 0.6)
    other_budget = _run("u1", "0,1,2,3", 0.9, **{"phase.sts.max_pairs": "64"})
    random_init = _run("u2", "0,1,2,3", 0.3, **{"base_model.init": "random"})
    other_tracking = _run("u3", "0,1,2,3", 0.8, **{"tracking.uri": "sqlite:///y.db"})
    assert pd.isna(table([pruned], [other_budget, random_init]).retained_pct[0])
    df = table([pruned], [other_budget, random_init, other_tracking, _run("u4", "0,1,2,3", 0.1)])
    assert df.unpruned_run[0] == "u3"  # the earliest match; tracking does not change results
    assert df.retained_pct[0] == pytest.approx(75.0)
    # The sweep's own unpruned run wins over earlier ones.
    own = table([pruned, _run("u5", "0,1,2,3", 0.5)], [other_tracking])
    assert list(own.unpruned_run) == ["u5", "u5"]
    assert own.retained_pct[own.keep == 2].iloc[0] == pytest.approx(120.0)
