"""The sweep report: one row per config, read back from MLflow, as CSV, Markdown and plots."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, tiny_overrides
from sbert_exp import report
from sbert_exp.errors import UserError
from sbert_exp.report import latest_sweep, main, table, write_report
from sbert_exp.schema import TrackingConfig
from sbert_exp.sweeper import SWEEP_FILE
from sbert_exp.tracking import Tracker


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
    assert len(md) == 2 + 6 + 2 and md[0].startswith("| base | init | strategy | keep |")
    # The base model untrained, every layer: its reference score is its own score.
    assert unpruned.base_pct == pytest.approx(100.0, abs=1e-3)
    assert md[-1] == ("% of unpruned: against the unpruned model with the same training; % of "
                      f"base: against the base model as it is, no training (tiny_bert "
                      f"{unpruned.base_sts:.4f}).")
    for png in paths[2:]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

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
    assert (later / "report.md").read_text().splitlines()[-3] == (
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


def test_explicit_layers_and_every_layer_are_named_for_what_ran(sweep, tiny_bert):
    """Job folders, MLflow run names and report rows say `layers` and `keepall`, not `top`."""
    from mlflow.tracking import MlflowClient

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sweep_dir = sweep / "labels"
    proc = subprocess.run(
        [sys.executable, "-m", "sbert_exp.train", "-m",
         *tiny_overrides(tiny_bert, sweep, phase="none"), "pruning=by_strategy,unpruned",
         "pruning.layers=null,[0,5]", "save_model=false", f"hydra.sweep.dir={sweep_dir}"],
        cwd=sweep, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in sweep_dir.glob("[0-9]*") if p.is_dir()) == [
        "0_tiny_bert_pretrained_top_keep6", "1_tiny_bert_pretrained_layers_keep2",
        "2_tiny_bert_pretrained_keepall", "3_tiny_bert_pretrained_layers_keep2"]

    info = json.loads((sweep_dir / SWEEP_FILE).read_text())
    client = MlflowClient(tracking_uri=info["tracking_uri"])
    parent = client.get_run(info["parent_run_id"])
    kids = client.search_runs([parent.info.experiment_id],
                              f"tags.`mlflow.parentRunId` = '{info['parent_run_id']}'")
    assert sorted((r.info.run_name, r.data.params["pruning.kept_layers"]) for r in kids) == [
        ("tiny_bert-keepall", ",".join(map(str, range(12)))),
        ("tiny_bert-layers-keep2", "0,5"), ("tiny_bert-layers-keep2", "0,5"),
        ("tiny_bert-top-keep6", "0,1,2,3,4,5")]

    write_report(sweep_dir)
    df = pd.read_csv(sweep_dir / "report.csv", dtype={"kept_layers": str})
    assert list(zip(df.strategy, df.keep, df.kept_layers, strict=True)) == [
        ("layers", 2, "0 5"), ("top", 6, "0 1 2 3 4 5"),
        ("none", 12, " ".join(map(str, range(12))))]


def _with_speed(run: dict, speedup: float) -> dict:
    run["metrics"].update({"speed/speedup_vs_unpruned": speedup, "model/params_total": 3e6,
                           "model/params_embeddings": 1e6, "model/params_encoder": 1e6})
    return run


def test_layers_rows_sort_apart_and_plot_as_points(tmp_path, monkeypatch):
    """Explicit layers are their own strategy: own sort place, own colour, points off the lines."""
    runs = [_with_speed(r, s) for r, s in (
        (_run("u", "0,1,2,3", 0.8, **{"pruning.keep": "null"}), 1.0),
        (_run("l2", "1,3", 0.5, **{"pruning.layers": "[1, 3]"}), 1.9),
        (_run("t2", "0,1", 0.6, **{"pruning.layers": "null"}), 2.0),
        (_run("l2b", "0,3", 0.55, **{"pruning.layers": "[0, 3]"}), 1.9),
        (_run("b3", "1,2,3", 0.7, **{"pruning.strategy": "bottom"}), 1.3))]
    df = table(runs)
    assert list(zip(df.strategy, df.keep, df.kept_layers, strict=True)) == [
        ("top", 2, "0 1"), ("layers", 2, "0 3"), ("layers", 2, "1 3"), ("bottom", 3, "1 2 3"),
        ("none", 4, "0 1 2 3")]
    # Explicit layers that keep every layer are the unpruned model.
    every = _run("all", "0,1,2,3", 0.8, **{"pruning.layers": "[0, 1, 2, 3]"})
    assert list(table([every]).strategy) == ["none"]
    assert "| m | pretrained | layers | 2 | 0 3 |" in report.markdown(df)

    drawn: dict[str, dict[str, object]] = {}
    finish = report._finish

    def record(fig, axes, xlabel, title, path):
        assert len(axes) == 1  # one phase, one panel
        handles, labels = axes[0].get_legend_handles_labels()
        drawn[path.name] = dict(zip(labels, handles, strict=True))
        finish(fig, axes, xlabel, title, path)

    monkeypatch.setattr(report, "_finish", record)
    assert [p.name for p in report.plot(df, tmp_path)] == ["spearman_vs_layers.png",
                                                            "quality_vs_speedup.png"]
    lines = drawn["spearman_vs_layers.png"]
    chosen = lines["m, pretrained: chosen layers"]
    assert chosen.get_linestyle() == "None" and chosen.get_color() == report.COLORS["layers"]
    assert sorted(zip(chosen.get_xdata(), chosen.get_ydata(), strict=True)) == [(2, 0.5), (2, 0.55)]
    top = lines["m, pretrained: top removed"]  # the top line: its own row, then the unpruned
    assert list(zip(top.get_xdata(), top.get_ydata(), strict=True)) == [(2, 0.6), (4, 0.8)]
    assert "m, pretrained: chosen layers" in drawn["quality_vs_speedup.png"]
    assert all((tmp_path / name).stat().st_size > 10_000 for name in drawn)


def _sweep_with_jobs(root: Path, name: str, tracker: Tracker | None, statuses: list[str]) -> Path:
    """A sweep folder as TrackedSweeper leaves it: sweep.json, a parent run, job runs."""
    sweep_dir = root / "day" / name
    sweep_dir.mkdir(parents=True)
    parent = None
    if tracker is not None:
        parent = tracker.start_parent(f"sweep day/{name}", {"sweep_id": f"day/{name}"})
        for i, status in enumerate(statuses):
            with contextlib.suppress(RuntimeError), tracker.run(f"job {i}", {}, parent):
                if status == "FAILED":
                    raise RuntimeError("the job failed")
        tracker.end_parent(parent, [s for s in statuses if s == "FAILED"], jobs=len(statuses),
                           failed_jobs=statuses.count("FAILED"))
    (sweep_dir / SWEEP_FILE).write_text(json.dumps({
        "parent_run_id": parent, "tracking_uri": tracker.cfg.uri if tracker else None,
        "experiment": "tests", "sweep_id": f"day/{name}"}))
    return sweep_dir


def test_latest_sweep_skips_sweeps_without_a_finished_job(tmp_path, caplog, capsys, monkeypatch):
    tracker = Tracker(TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                                     experiment="tests"))
    root = tmp_path / "multirun"
    good = _sweep_with_jobs(root, "10-00-00", tracker, ["FAILED", "FINISHED"])
    failed = _sweep_with_jobs(root, "11-00-00", tracker, ["FAILED", "FAILED"])
    untracked = _sweep_with_jobs(root, "12-00-00", None, [])
    empty = _sweep_with_jobs(root, "13-00-00", tracker, [])
    with caplog.at_level(logging.INFO, logger="sbert_exp.report"):
        assert latest_sweep(root) == good
    assert [r.getMessage() for r in caplog.records if r.name == "sbert_exp.report"] == [
        f"skipping sweep {empty}: no job run",
        f"skipping sweep {untracked}: no parent run (tracking was off)",
        f"skipping sweep {failed}: no finished job run (2 FAILED)"]

    # With no sweep left that finished a job: one line, exit code 2.
    (good / SWEEP_FILE).unlink()
    with pytest.raises(UserError, match="no sweep under .* has a finished job run"):
        latest_sweep(root)
    monkeypatch.chdir(tmp_path)
    assert main([]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert errors == [
        "error: no sweep under multirun/ has a finished job run (the newest, "
        "multirun/day/13-00-00: no job run): run a sweep (make sweep), or pass --sweep DIR"]
