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
from sbert_exp.config.schema import TrackingConfig
from sbert_exp.errors import UserError
from sbert_exp.job.sweeper import SWEEP_FILE
from sbert_exp.report import board, cli, plots, ship
from sbert_exp.report.cli import latest_sweep, main, write_report
from sbert_exp.report.table import markdown, table
from sbert_exp.tracking import registry
from sbert_exp.tracking.runs import Tracker
from sbert_exp.tracking.tags import LOGGED_BF16_TAG, LOGGED_MODEL_TAG, MODEL_DIR_TAG, PARENT_TAG


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


@pytest.mark.slow
def test_report_rows_files_and_parent_artifacts(sweep):
    sweep_dir = latest_sweep(sweep / "multirun")
    assert sweep_dir == sweep / "multirun" / "day" / "time"
    paths = write_report(sweep_dir).paths
    assert [p.name for p in paths] == ["report.csv", "report.md", "spearman_vs_layers.png",
                                       "quality_vs_speedup.png", "pareto.png",
                                       "recommendation.json"]
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
    md = _main_table(sweep_dir / "report.md")
    assert len(md) == 2 + 6 + 2 and md[0].startswith("| base | init | strategy | keep |")
    # The base model untrained, every layer: its reference score is its own score.
    assert unpruned.base_pct == pytest.approx(100.0, abs=1e-3)
    assert md[-1] == ("% of unpruned: against the unpruned model with the same training; % of "
                      f"base: against the base model as it is, no training (tiny_bert "
                      f"{unpruned.base_sts:.4f}).")
    for png in [p for p in paths if p.suffix == ".png"]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    # save_model=false: no folder, no logged model; the size is the fp32 parameters'.
    chosen = json.loads((sweep_dir / "recommendation.json").read_text())
    assert chosen["sts"] == pytest.approx(df.sts_final.max()) and chosen["mb_from"] == "params"
    assert chosen["model_dir"] is None and chosen["registered"] is None

    from mlflow.tracking import MlflowClient
    info = json.loads((sweep_dir / "sweep.json").read_text())
    client = MlflowClient(tracking_uri=info["tracking_uri"])
    names = {a.path for a in client.list_artifacts(info["parent_run_id"], "report")}
    assert names == {f"report/{p.name}" for p in paths}


def _main_table(report_md: Path) -> list[str]:
    """The lines of report.md above its "Which model to ship" section."""
    return report_md.read_text().split("\n## Which model to ship")[0].splitlines()


def test_report_without_sweep_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: no sweep with a sweep.json under multirun/: run a sweep first (make sweep), "
        "or pass --sweep DIR")
    with pytest.raises(UserError, match="has no sweep.json with a parent run"):
        write_report(tmp_path)


@pytest.mark.slow
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
    assert _main_table(later / "report.md")[-3] == (
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


@pytest.mark.slow
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
    assert "| m | pretrained | layers | 2 | 0 3 |" in markdown(df)

    drawn: dict[str, dict[str, object]] = {}
    finish = plots._finish

    def record(fig, axes, xlabel, title, path):
        assert len(axes) == 1  # one phase, one panel
        handles, labels = axes[0].get_legend_handles_labels()
        drawn[path.name] = dict(zip(labels, handles, strict=True))
        finish(fig, axes, xlabel, title, path)

    monkeypatch.setattr(plots, "_finish", record)
    assert [p.name for p in plots.plot(df, tmp_path)] == ["spearman_vs_layers.png",
                                                            "quality_vs_speedup.png"]
    lines = drawn["spearman_vs_layers.png"]
    chosen = lines["m, pretrained: chosen layers"]
    assert chosen.get_linestyle() == "None" and chosen.get_color() == plots.COLORS["layers"]
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
    with caplog.at_level(logging.INFO, logger="sbert_exp.report.cli"):
        assert latest_sweep(root) == good
    assert [r.getMessage() for r in caplog.records if r.name == "sbert_exp.report.cli"] == [
        f"skipping sweep {empty}: no job run",
        f"skipping sweep {untracked}: no parent run (tracking was off)",
        f"skipping sweep {failed}: no finished job run (2 FAILED)"]

    # With no sweep left that finished a job: one line, exit code 2.
    (good / SWEEP_FILE).unlink()
    with pytest.raises(UserError, match="no sweep under .* has a finished job run"):
        latest_sweep(root)
    monkeypatch.chdir(tmp_path)
    assert main([]) == 2
    # Only the CLI's own lines: an earlier test's main() may have left logging a handler on a
    # stderr capture that is closed now, whose "--- Logging error ---" reports are not ours.
    errors = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("error:")]
    assert errors == [
        "error: no sweep under multirun/ has a finished job run (the newest, "
        "multirun/day/13-00-00: no job run): run a sweep (make sweep), or pass --sweep DIR"]


# Which model to ship: the Pareto front, the budget, the registry.

def _frame(rows: list[tuple[float | None, float | None, float | None]]) -> pd.DataFrame:
    """Candidates chosen by STSb: `score` is their `sts`."""
    df = pd.DataFrame(rows, columns=["sts", "speed", "mb"], dtype=float)
    return df.assign(score=df.sts, form="model", score_base=float("nan"),
                     base_mb=float("nan"))


@pytest.mark.parametrize(("rows", "front"), [
    # One row: on the front.
    ([(0.8, 1.0, 100)], [True]),
    # Better STSb but bigger, faster but worse: both; dominated on every objective: not.
    ([(0.8, 1.0, 100), (0.7, 2.0, 50), (0.6, 1.5, 60)], [True, True, False]),
    # Equal on two, worse on one (bigger; slower; lower STSb): dominated.
    ([(0.8, 1.0, 100), (0.8, 1.0, 120), (0.8, 0.9, 100), (0.79, 1.0, 100)],
     [True, False, False, False]),
    # Ties on all three: neither dominates the other, both on the front.
    ([(0.7, 2.0, 50), (0.7, 2.0, 50), (0.6, 2.0, 50)], [True, True, False]),
    # No STSb: never on the front, however fast and small, and it pushes nothing off it.
    ([(None, 9.0, 1), (0.5, 1.0, 100)], [False, True]),
    ([(None, 1.0, 100), (None, 2.0, 50)], [False, False]),
    # A missing speed or size counts as the worst: the smallest stays on the front without a
    # speed; an unknown size loses to a known one that is as good otherwise.
    ([(0.6, None, 10), (0.7, 2.0, 50), (0.7, 2.0, None)], [True, True, False]),
])
def test_pareto_front(rows, front):
    df = _frame(rows)
    assert board.pareto_front(df).tolist() == front


def _job(run_id: str, strategy: str, kept: str, sts: float, speedup: float,
         tags: dict[str, str] | None = None, export: str = "none",
         logged: dict[str, float] | None = None, **metrics: float) -> dict:
    """A finished job run of base `m` (4 layers, phase sts) as child_runs returns it."""
    params = {"base_model.name": "m", "base_model.num_layers": "4",
              "pruning.strategy": strategy, "pruning.kept_layers": kept, "phase.name": "sts",
              "export": export}
    names = {"disk": "model/disk_mb", "size": "model/size_mb", "vocab": "model/vocab_size",
             "export_sts": "export/sts_test/spearman_cosine",
             "export_speedup": "export/speedup_vs_unpruned", "export_disk": "export/disk_mb",
             "bf16_sts": "bf16/sts_test/spearman_cosine",
             "bf16_speedup": "bf16/speedup_vs_unpruned",
             "bf16_disk": "bf16/disk_mb", "bf16_en_hi": "bf16/bitext/en-hi/accuracy",
             "en_hi": "bitext/en-hi/accuracy"}
    return {"run_id": run_id, "status": "FINISHED", "params": params, "tags": tags or {},
            "metrics": {"sts_test/spearman_cosine": sts, "speed/speedup_vs_unpruned": speedup,
                        "base_model/sts_test/spearman_cosine": 0.8, "model/params_total": 3e6,
                        "model/params_embeddings": 1e6, "model/params_encoder": 1e6,
                        **{names[k]: v for k, v in metrics.items()}, **(logged or {})}}


STSB = "sts_test/spearman_cosine"
# top keep 2's intervals and differences: its model's from the base, its export's from the model.
NOISE = {f"ci_low/{STSB}": 0.65, f"ci_high/{STSB}": 0.75, f"vs_base/{STSB}": -0.1,
         f"vs_base/ci_low/{STSB}": -0.14, f"vs_base/ci_high/{STSB}": -0.06,
         f"export/ci_low/{STSB}": 0.64, f"export/ci_high/{STSB}": 0.74,
         f"export/vs_model/{STSB}": -0.01, f"export/vs_model/ci_low/{STSB}": -0.02,
         f"export/vs_model/ci_high/{STSB}": 0.001}


def _jobs(folder: Path) -> list[dict]:
    """The unpruned model; top keep 2 saved and exported as int8; bottom keep 2, worse on all;
    top keep 3 not saved (its size: the fp32 parameters)."""
    return [
        _job("t2", "top", "0,1", 0.70, 1.9, {MODEL_DIR_TAG: str(folder / "1_t2" / "model")},
             export="onnx_int8", disk=60.0, size=70.0, vocab=30522, export_sts=0.69,
             export_speedup=3.5, export_disk=16.0, logged=NOISE),
        _job("b2", "bottom", "2,3", 0.60, 1.9, disk=60.0, vocab=30522),
        _job("t3", "top", "0,1,2", 0.75, 1.3, size=80.0, vocab=30522),
        _job("u", "top", "0,1,2,3", 0.80, 1.0, {MODEL_DIR_TAG: str(folder / "0_u" / "model")},
             disk=100.0, vocab=30522)]


def test_candidates_are_saved_models_and_exports(tmp_path):
    models = board.candidates(table(_jobs(tmp_path)))
    # ... and, last, the base model as it is (its STSb logged by every job; speedup 1).
    assert list(zip(models.strategy, models.keep, models.form, strict=True)) == [
        ("top", 2, "model"), ("top", 2, "onnx_int8"), ("bottom", 2, "model"),
        ("top", 3, "model"), ("none", 4, "model"), ("none", 4, "as_is")]
    assert models.sts.tolist() == [0.70, 0.69, 0.60, 0.75, 0.80, 0.80]
    assert models.speed.tolist() == [1.9, 3.5, 1.9, 1.3, 1.0, 1.0]
    # The saved folder's size; without one, the fp32 parameters'; the base's is not logged here.
    assert models.mb.tolist()[:5] == [60.0, 16.0, 60.0, 80.0, 100.0]
    assert pd.isna(models.mb.iloc[5])
    assert models.mb_from.tolist() == ["disk", "disk", "disk", "params", "disk", "disk"]
    assert [d if isinstance(d, str) else None for d in models.model_dir] == [
        str(tmp_path / "1_t2" / "model"), str(tmp_path / "1_t2" / "model_onnx_int8"), None, None,
        str(tmp_path / "0_u" / "model"), None]
    assert models.base_pct.tolist() == pytest.approx([87.5, 86.25, 75.0, 93.75, 100.0, 100.0])
    # The base without a size counts as the largest: the unpruned run, as good, beats it.
    assert board.pareto_front(models).tolist() == [True, True, False, True, True, False]


def test_the_bf16_form_sits_beside_its_fp32_model_and_export_and_names_its_precision(tmp_path):
    folder = tmp_path / "1_t2" / "model"
    jobs = [_job("t2", "top", "0,1", 0.70, 1.9, {MODEL_DIR_TAG: str(folder),
                                                  LOGGED_BF16_TAG: "models:/m-bf16"},
                 export="onnx_int8", disk=60.0, vocab=30522, en_hi=0.5, export_sts=0.69,
                 export_speedup=3.5, export_disk=16.0, bf16_sts=0.7001, bf16_speedup=3.4,
                 bf16_disk=30.0, bf16_en_hi=0.52),
            _job("u", "top", "0,1,2,3", 0.80, 1.0, disk=100.0, vocab=30522, en_hi=0.8)]
    models = board.candidates(table(jobs))
    assert list(zip(models.keep, models.form, models.sts, models.speed, models.mb,
                    strict=True))[:4] == [(2, "model", 0.70, 1.9, 60.0),
                                          (2, "onnx_int8", 0.69, 3.5, 16.0),
                                          (2, "bf16", 0.7001, 3.4, 30.0),
                                          (4, "model", 0.80, 1.0, 100.0)]
    bf16 = models.iloc[2]
    assert bf16.model_dir == str(tmp_path / "1_t2" / "model_bf16")
    assert bf16.logged_model == "models:/m-bf16" and bf16["bitext/en-hi/accuracy"] == 0.52
    assert [board.served_in(r) for _, r in models.iterrows()][:4] == [
        "fp32", "int8", "bf16", "fp32"]
    row = models.loc[board.recommend(models, board.pareto_front(models),
                                      board.Budget(min_sts=0.7, min_speedup=3))]
    assert ship.recommendation_line(row, board.Budget(min_sts=0.7, min_speedup=3)).startswith(
        "recommended (within --min-speedup 3 --min-sts 0.7): m top keep 2 sts as bf16, served "
        "in bf16: 0.7001 STSb, 0.5200 en-hi acc, 30.0 MB, 3.4x (87.5% of base); model folder ")


@pytest.mark.parametrize(("budget", "chosen"), [
    ({}, ("none", 4, "model")),  # no budget: the highest STSb (the unpruned model)
    ({"max_mb": 90}, ("top", 3, "model")),  # the fp32 size stands in for the missing folder
    ({"max_mb": 60}, ("top", 2, "model")),  # at the bound; int8 is smaller but scores lower
    ({"min_speedup": 3}, ("top", 2, "onnx_int8")),
    ({"max_mb": 90, "min_sts": 0.72}, ("top", 3, "model")),
    ({"min_sts": 0.8, "min_speedup": 1}, ("none", 4, "model")),
])
def test_recommend_within_a_budget(tmp_path, budget, chosen):
    models = board.candidates(table(_jobs(tmp_path)))
    row = models.loc[board.recommend(models, board.pareto_front(models),
                                      board.Budget(**budget))]
    assert (row.strategy, row.keep, row.form) == chosen


def test_recommend_breaks_sts_ties_by_speed_then_size():
    models = _frame([(0.8, 1.0, 50), (0.8, 2.0, 90), (0.8, 2.0, 60), (0.7, 3.0, 10)])
    assert board.recommend(models, board.pareto_front(models)) == 2


@pytest.mark.parametrize(("budget", "closest"), [
    ({"max_mb": 10}, "m top keep 2 sts as onnx_int8: 0.6900 STSb, 16.0 MB, 3.5x"),
    ({"max_mb": 50, "min_speedup": 4}, "m top keep 2 sts as onnx_int8: 0.6900 STSb, 16.0 MB, 3.5x"),
    ({"min_sts": 0.9}, "m none keep 4 sts: 0.8000 STSb, 100.0 MB, 1.0x"),
    ({"max_mb": 85, "min_sts": 0.78}, "m top keep 3 sts: 0.7500 STSb, 80.0 MB (fp32 params), 1.3x"),
])
def test_a_budget_no_model_meets_names_the_closest(tmp_path, budget, closest):
    models = board.candidates(table(_jobs(tmp_path)))
    limits = board.Budget(**budget)
    with pytest.raises(UserError) as raised:
        board.recommend(models, board.pareto_front(models), limits)
    assert str(raised.value) == (f"no run of the sweep meets {limits.flags()} (closest: "
                                 f"{closest}): loosen the budget")


def _fake_sweep(tmp_path: Path, monkeypatch) -> tuple[Path, list]:
    """A sweep folder whose child runs are `_jobs` (no MLflow store); what is attached to the
    parent run is recorded."""
    sweep_dir = tmp_path / "multirun" / "day" / "time"
    sweep_dir.mkdir(parents=True)
    runs = _jobs(sweep_dir)
    (sweep_dir / SWEEP_FILE).write_text(json.dumps({
        "parent_run_id": "parent", "tracking_uri": "sqlite:///unused.db", "experiment": "tests"}))
    attached: list = []
    monkeypatch.setattr(cli, "child_runs", lambda uri, parent: runs)
    monkeypatch.setattr(cli, "log_artifacts",
                        lambda uri, run_id, paths, where: attached.extend(paths))
    return sweep_dir, attached


def test_ship_section_plot_and_recommendation(tmp_path, monkeypatch, capsys):
    sweep_dir, attached = _fake_sweep(tmp_path, monkeypatch)
    assert main(["--sweep", str(sweep_dir), "--max-mb", "100", "--min-speedup", "3"]) == 0
    line = ("recommended (within --max-mb 100 --min-speedup 3): m top keep 2 sts as onnx_int8, "
            "served in int8: "
            "0.6900 STSb, 16.0 MB, 3.5x (86.2% of base; 95% interval [0.640, 0.740]; "
            "-0.0100 [-0.0200, +0.0010], within noise vs its fp32 model); model folder "
            f"{sweep_dir / '1_t2' / 'model_onnx_int8'}; (no logged model: run with "
            "tracking.log_model=true to register it)")
    assert capsys.readouterr().out.splitlines() == [line]
    assert [p.name for p in attached] == ["report.csv", "report.md", "spearman_vs_layers.png",
                                          "quality_vs_speedup.png", "pareto.png",
                                          "recommendation.json"]
    md = (sweep_dir / "report.md").read_text()
    assert md.startswith(markdown(table(_jobs(sweep_dir))) + "\n")
    # The sweep's table: the final STSb's interval and its difference from the base.
    head, _, top2 = md.splitlines()[:3]
    assert head.endswith("| % of base | STSb 95% interval | STSb vs base | job (s) |")
    assert top2.endswith("| 87.5 | [0.650, 0.750] | -0.1000 [-0.1400, -0.0600] | - |")
    section = md.split("## Which model to ship\n\n")[1].splitlines()
    assert section[2:5] == [
        "| base | strategy | keep | phase | form | vocab size | STSb [95%] | % of base | "
        "STSb difference | speedup | disk MB | model folder |", "|" + "---|" * 12,
        "| m | top | 2 | sts | model | 30522 | 0.7000 [0.650, 0.750] | 87.5 | "
        "-0.1000 [-0.1400, -0.0600] vs the base | 1.90x | 60.0 | 1_t2/model |"]
    assert section[5:8] == [
        "| m | top | 2 | sts | onnx_int8 | 30522 | 0.6900 [0.640, 0.740] | 86.2 | "
        "-0.0100 [-0.0200, +0.0010], within noise vs its fp32 model | 3.50x | 16.0 | "
        "1_t2/model_onnx_int8 |",
        "| m | top | 3 | sts | model | 30522 | 0.7500 | 93.8 | - | 1.30x | 80.0 (params) | - |",
        "| m | none | 4 | sts | model | 30522 | 0.8000 | 100.0 | - | 1.00x | 100.0 | "
        "0_u/model |"]
    assert section[8:10] == ["", line]
    # Only the candidates that logged a difference, each against what it replaces.
    real = md.split("## Which differences are real\n\n")[1].splitlines()
    assert real[2:] == [
        "| candidate | against | STSb |", "|---|---|---|",
        "| m top keep 2 sts | the base | -0.1000 [-0.1400, -0.0600] |",
        "| m top keep 2 sts as onnx_int8 | its fp32 model | "
        "-0.0100 [-0.0200, +0.0010], within noise |"]
    chosen = json.loads((sweep_dir / "recommendation.json").read_text())
    assert {k: chosen[k] for k in ("base", "strategy", "keep", "phase", "form", "sts", "speed",
                                   "mb", "mb_from", "run_id", "logged_model", "registered")} == {
        "base": "m", "strategy": "top", "keep": 2, "phase": "sts", "form": "onnx_int8",
        "sts": 0.69, "speed": 3.5, "mb": 16.0, "mb_from": "disk", "run_id": "t2",
        "logged_model": None, "registered": None}
    assert chosen["budget"] == {"max_mb": 100.0, "min_speedup": 3.0, "min_sts": None}
    png = (sweep_dir / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_pareto_plot_rings_the_front_and_circles_the_choice(tmp_path, monkeypatch):
    models = board.candidates(table(_jobs(tmp_path)))
    front = board.pareto_front(models)
    drawn: dict[str, object] = {}
    monkeypatch.setattr("matplotlib.figure.Figure.savefig",
                        lambda fig, path, **kw: drawn.update(fig=fig, path=path))
    plots.plot_pareto(models, front, 1, tmp_path / "pareto.png")
    ax = drawn["fig"].axes[0]
    handles, labels = ax.get_legend_handles_labels()
    refs = "references (what you could ship instead)"
    assert labels == ["all models", "Pareto front", refs, "recommended"]
    points = {label: h.get_offsets().tolist() for h, label in zip(handles, labels, strict=True)}
    assert len(points["all models"]) == 6  # with the base model as it is
    assert points[refs] == [[1.0, 0.8]]  # the base model as it is, marked
    assert points["Pareto front"] == [[1.0, 0.8], [1.3, 0.75], [1.9, 0.7], [3.5, 0.69]]
    assert points["recommended"] == [[3.5, 0.69]]


@pytest.mark.parametrize(("flags", "error"), [
    (["--max-mb", "50", "--min-speedup", "4"],
     "error: no run of the sweep meets --max-mb 50 --min-speedup 4 (closest: m top keep 2 sts "
     "as onnx_int8: 0.6900 STSb, 16.0 MB, 3.5x): loosen the budget"),
    (["--max-mb", "0"], "error: --max-mb must be positive"),
    (["--min-speedup", "-2"], "error: --min-speedup must be positive"),
    (["--min-sts", "1.5"], "error: --min-sts must be at most 1 (STSb is a Spearman correlation)"),
])
def test_a_budget_that_cannot_be_met_writes_nothing(tmp_path, monkeypatch, capsys, flags, error):
    sweep_dir, attached = _fake_sweep(tmp_path, monkeypatch)
    assert main(["--sweep", str(sweep_dir), *flags]) == 2
    out = capsys.readouterr()
    assert out.err.splitlines() == [error] and out.out == ""
    assert [p.name for p in sweep_dir.iterdir()] == [SWEEP_FILE] and attached == []


def test_recommended_logged_model_is_registered(tmp_path, capsys):
    """A real SQLite store: the recommended run's logged model gets a registry version (once per
    source) and the `recommended` alias; runs:/ and models:/ URIs both resolve in that store."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("tests", (tmp_path / "artifacts").as_uri())
    parent = client.create_run(experiment).info.run_id
    job = client.create_run(experiment, tags={PARENT_TAG: parent}).info.run_id
    for key, value in {"base_model.name": "m", "base_model.num_layers": "4",
                       "pruning.strategy": "top", "pruning.kept_layers": "0,1,2,3",
                       "phase.name": "sts"}.items():
        client.log_param(job, key, value)
    client.log_metric(job, "sts_test/spearman_cosine", 0.8)
    for key, value in {"model/disk_mb": 1.0, "speed/speedup_vs_unpruned": 1.0,
                       "model/params_total": 3e6,
                       "model/params_embeddings": 1e6, "model/params_encoder": 1e6}.items():
        client.log_metric(job, key, value)
    dummy = tmp_path / "dummy_model"
    dummy.mkdir()
    (dummy / "MLmodel").write_text("flavors: {}\n")
    client.log_artifacts(job, str(dummy), "model")
    client.set_tag(job, LOGGED_MODEL_TAG, f"runs:/{job}/model")
    client.set_terminated(job)
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    (sweep_dir / SWEEP_FILE).write_text(json.dumps(
        {"parent_run_id": parent, "tracking_uri": uri, "experiment": "tests"}))

    for _ in range(2):  # a second report registers nothing new
        assert main(["--sweep", str(sweep_dir)]) == 0
        assert capsys.readouterr().out.strip().endswith(
            "; registered it as tests-m version 1, alias recommended")
    version = client.get_model_version_by_alias("tests-m", "recommended")
    assert (int(version.version), version.run_id) == (1, job)
    assert version.source.endswith(f"{job}/artifacts/model")
    assert json.loads((sweep_dir / "recommendation.json").read_text())["registered"] == {
        "name": "tests-m", "version": "1", "alias": "recommended"}

    assert main(["--sweep", str(sweep_dir), "--register", "chosen"]) == 0
    assert client.get_model_version_by_alias("chosen", "recommended").run_id == job

    # An MLflow 3 logged model (models:/m-...): a new version, the alias moves to it.
    logged = client.create_logged_model(experiment, name="model", source_run_id=job)
    client.log_model_artifacts(logged.model_id, str(dummy))
    assert registry.register(uri, f"models:/{logged.model_id}", "tests-m") == "2"
    moved = client.get_model_version_by_alias("tests-m", "recommended")
    assert (int(moved.version), moved.run_id) == (2, job)
    assert moved.source == client.get_logged_model(logged.model_id).artifact_location
    with pytest.raises(UserError, match="cannot register the logged model runs:/.*/nothing"):
        registry.register(uri, f"runs:/{job}/nothing", "tests-m")


def _language_jobs(folder: Path) -> list[dict]:
    """`_jobs` with English-Hindi retrieval: bottom keep 2, the worst on STSb, is the best there."""
    runs = _jobs(folder)
    for run, value in zip(runs, (0.85, 0.90, 0.70, 0.88), strict=True):
        run["metrics"].update({"bitext/en-hi/accuracy": value,
                               "base_model/bitext/en-hi/accuracy": 0.88})
    runs[0]["metrics"]["export/bitext/en-hi/accuracy"] = 0.84
    return runs


def test_metric_chooses_the_front_and_the_model_by_a_language(tmp_path):
    df = table(_language_jobs(tmp_path))
    assert df["bitext/en-hi/accuracy"].tolist() == [0.85, 0.90, 0.70, 0.88]
    by_sts = board.candidates(df)
    assert by_sts.score.tolist() == by_sts.sts.tolist()
    models = board.candidates(df, "bitext/en-hi/accuracy")
    assert models["bitext/en-hi/accuracy"].tolist() == [0.85, 0.84, 0.90, 0.70, 0.88, 0.88]
    assert models.score.tolist() == [0.85, 0.84, 0.90, 0.70, 0.88, 0.88]
    assert models.score_base.tolist() == [0.88] * 6  # each candidate's own base, exports too
    # bottom keep 2 (0.90, 1.9x, 60 MB) dominates top keep 2's model, top keep 3 and the
    # unpruned model; the int8 export stays for its speed and size.
    front = board.pareto_front(models)
    assert front.tolist() == [False, True, True, False, False, False]
    row = models.loc[board.recommend(models, front)]
    assert (row.strategy, row.keep, row.form) == ("bottom", 2, "model")
    line = ship.recommendation_line(row, board.Budget(), None,
                                      board.metric_label(models))
    assert line.startswith("recommended (no budget: the highest bitext/en-hi/accuracy): m bottom "
                           "keep 2 sts, served in fp32: 0.6000 STSb, 0.9000 en-hi acc, 60.0 MB, "
                           "1.9x (102.3% of "
                           "base on bitext/en-hi/accuracy); ")
    with pytest.raises(UserError, match=r"^--metric agreement/mr/spearman: no run of the sweep "
                                        r"logged it: choose sts, bitext/en-hi/accuracy$"):
        board.candidates(df, "agreement/mr/spearman")
    md = markdown(df).splitlines()
    assert md[0].endswith("| en-hi acc |") and md[2].endswith("| 0.8500 |")
    assert "en-hi acc: bitext/en-hi/accuracy; the base model as it is: m 0.8800." in md


def test_the_base_as_it_is_is_on_the_board_and_wins_when_nothing_trained_beats_it(tmp_path):
    base = {"base_model/disk_mb": 100.0}
    runs = [_job("t2", "top", "0,1", 0.70, 1.9, disk=60.0),
            # every layer, trained below the base (0.80) and 4% smaller: no gain worth its cost
            _job("u", "top", "0,1,2,3", 0.79, 1.0, disk=96.0)]
    for run in runs:
        run["metrics"].update(base)
    models = board.candidates(table(runs))
    assert list(zip(models.form, models.sts, models.speed, models.mb, strict=True))[-1] == (
        "as_is", 0.80, 1.0, 100.0)
    front = board.pareto_front(models)
    assert front.tolist() == [True, True, True]  # u is smaller than the base: on the front
    assert board.no_gain(models).tolist() == [False, True, False]
    row = models.loc[board.recommend(models, front)]
    assert row.form == "as_is"
    assert ship.recommendation_line(row, board.Budget()) == (
        "recommended (no budget: the highest STSb): m as it is (the base model: no pruning, no "
        "training), served in fp32: 0.8000 STSb, 100.0 MB, 1.0x; no model the sweep trained "
        "scores higher: use "
        "base_model=m as it is, no pruning needed")
    # Within 98 MB the base is out; u fits but scores below it at no gain: never recommended.
    row = models.loc[board.recommend(models, front, board.Budget(max_mb=98))]
    assert (row.strategy, row.keep, row.form) == ("top", 2, "model")


def test_drawing_a_chart_leaves_the_callers_matplotlib_backend_alone(tmp_path):
    import matplotlib

    from sbert_exp.report.plots import plot_layer_scores

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # what a caller chose
    try:
        path = plot_layer_scores("angular", [0.1, 0.3, 0.2], [0, 2], tmp_path / "scores.png")
        assert matplotlib.get_backend() == "svg"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        matplotlib.use(before)
