"""Layer choice by evidence, end to end on the tiny BERT: the kept layers follow the scores,
the scores are logged and cached, and bad calibration settings end in one line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from conftest import compose, mlflow_runs, run_tiny_job, tiny_overrides
from sbert_exp import selection
from sbert_exp.errors import ConfigError
from sbert_exp.job.checks import check
from sbert_exp.model import modeling
from sbert_exp.pruning import importance
from sbert_exp.report.cli import layer_charts
from sbert_exp.tracking.queries import _as_dict

STS_DEV = [("a man is playing a guitar", "a man plays the guitar", 4.6),
           ("a woman is slicing an onion", "a woman is cutting an onion", 4.2),
           ("a dog is running on the beach", "a cat is sitting inside", 0.4),
           ("two children are playing ball", "a man is riding a horse", 0.2),
           ("a girl is brushing her hair", "a girl is styling her hair", 3.8),
           ("a boy is eating", "a child is eating", 3.5),
           ("the man is cooking", "a woman is dancing", 0.1),
           ("a plane is taking off", "an air plane is taking off", 4.9)]


@pytest.fixture(autouse=True)
def _own_score_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(selection, "SCORES", selection.SCORES.moved(tmp_path))


def _overrides(tiny_bert: Path, tmp_path: Path, *more: str) -> list[str]:
    return [*tiny_overrides(tiny_bert, tmp_path, phase="none"), "eval.speed_rounds=0",
            "save_model=false", "pruning.calibration.max_sentences=40", *more]


def _job(overrides: list[str], out: Path) -> dict[str, float]:
    return run_tiny_job(overrides, out)


def _last_run(tmp_path: Path):
    client, runs = mlflow_runs(tmp_path, newest_first=True)
    return client, runs[0]


def _hidden(tiny_bert: Path, tmp_path: Path, overrides: list[str]):
    cfg, _ = compose(overrides)
    checked = check(cfg)
    model = modeling.load_base(cfg.base_model, "cpu", checked.model_path)
    return modeling.hidden_states(model, checked.data.calibration, 64)


def test_block_influence_keeps_the_highest_scoring_layers_and_caches(tiny_bert, tmp_path,
                                                                    caplog):
    overrides = _overrides(tiny_bert, tmp_path, "pruning.keep=3",
                           "pruning.strategy=block_influence")
    expected = importance.keep_highest(importance.block_influence(
        *_hidden(tiny_bert, tmp_path, overrides)), 3)
    caplog.set_level(logging.INFO, logger="sbert_exp.selection")
    _job(overrides, tmp_path / "a")
    client, run = _last_run(tmp_path)
    assert run.data.params["pruning.kept_layers"] == ",".join(map(str, expected))
    history = client.get_metric_history(run.info.run_id, "pruning/block_influence")
    assert sorted(m.step for m in history) == list(range(12))
    # The report draws the logged scores: one chart per base, init, strategy and keep.
    charts = layer_charts(f"sqlite:///{tmp_path / 'mlflow.db'}",
                          [_as_dict(run), _as_dict(run)], tmp_path / "charts")
    assert charts == [tmp_path / "charts" / "tiny_bert-pretrained-block_influence-keep3.png"]
    assert charts[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Another keep of the same model and calibration, in another precision (layers are scored
    # in fp32): the scores come from the cache.
    _job([*overrides[:-2], "pruning.keep=5", "pruning.strategy=block_influence",
          "precision=bf16"], tmp_path / "b")
    lines = [r.message for r in caplog.records if r.message.startswith("layer scores")]
    assert [("computed" in line, "cache" in line) for line in lines] == [(True, False),
                                                                         (False, True)]
    assert run.info.run_name == "tiny_bert-block_influence-keep3"


def test_angular_removes_the_closest_block(tiny_bert, tmp_path):
    overrides = _overrides(tiny_bert, tmp_path, "pruning.keep=8", "pruning.strategy=angular")
    hidden, mask = _hidden(tiny_bert, tmp_path, overrides)
    start = importance.best_block_start(importance.angular_distances(hidden, mask, 4))
    _job(overrides, tmp_path / "a")
    _, run = _last_run(tmp_path)
    assert run.data.params["pruning.kept_layers"] == ",".join(
        map(str, importance.remove_block(12, start, 4)))


def _dev_file(path: Path) -> Path:
    path.write_text("sentence1,sentence2,score\n"
                    + "".join(f"{a},{b},{s}\n" for a, b, s in STS_DEV))
    return path


def test_greedy_dev_follows_the_dev_spearman(tiny_bert, tmp_path):
    dev = _dev_file(tmp_path / "dev.csv")
    overrides = _overrides(tiny_bert, tmp_path, "pruning.keep=9", "pruning.strategy=greedy_dev",
                           "dataset.sts_dev.source=local", f"dataset.sts_dev.location={dev}",
                           "dataset.sts_dev.format=csv", "dataset.sts_dev.header=true",
                           "dataset.sts_dev.sentence1=sentence1",
                           "dataset.sts_dev.sentence2=sentence2", "dataset.sts_dev.label=score",
                           "pruning.calibration.dev_pairs=8")
    cfg, _ = compose(overrides)
    checked = check(cfg)
    model = modeling.load_base(cfg.base_model, "cpu", checked.model_path)

    def spearman(kept: list[int]) -> float:
        from sbert_exp import evaluation

        with modeling.layers_view(model, kept):
            return evaluation.sts_scores(model, checked.data.sts_dev, 64)["spearman_cosine"]

    expected = importance.greedy_kept(12, 9, spearman)
    _job(overrides, tmp_path / "a")
    client, run = _last_run(tmp_path)
    assert run.data.params["pruning.kept_layers"] == ",".join(map(str, expected))
    history = client.get_metric_history(run.info.run_id, "pruning/greedy_dev_spearman")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]  # every layer, then 3 removals
    assert history[0].value == pytest.approx(spearman(list(range(12))), abs=1e-9)


@pytest.mark.parametrize(("more", "message"), [
    (["pruning.strategy=greedy_dev", "dataset=local_files",
      "dataset.sts_test.location=x.csv"],
     "pruning.strategy=greedy_dev scores layer removals on STS dev pairs but "
     "dataset=local_files has no sts_dev split: set dataset.sts_dev, or choose another strategy"),
    (["pruning.strategy=block_influence", "pruning.calibration.max_sentences=100000"],
     "pruning.calibration.max_sentences=100000 but dataset.sts_train has 10536 distinct "
     "sentences: set it to at most 10536"),
    (["pruning.strategy=greedy_dev", "pruning.calibration.dev_pairs=5000"],
     "pruning.calibration.dev_pairs=5000 but dataset.sts_dev has 1500 pairs: set it to at "
     "most 1500"),
    (["pruning.strategy=angular", "pruning.calibration.split=sts_dev", "dataset=local_files",
      "dataset.sts_test.location=x.csv"],
     "pruning.calibration.split=sts_dev but dataset=local_files has no sts_dev split: "
     "choose another split"),
])
def test_bad_calibration_is_one_line_before_any_model_loads(more, message, tiny_bert, tmp_path,
                                                            monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(modeling, "load_base", no_load)
    cfg, _ = compose([*_overrides(tiny_bert, tmp_path, "pruning.keep=3"), *more])
    with pytest.raises(ConfigError) as error:
        check(cfg)
    assert str(error.value) == message


def test_calibration_on_a_test_split_is_refused_in_one_line(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run([sys.executable, "-m", "sbert_exp.train", "pruning.strategy=angular",
                           "pruning.calibration.split=sts_test"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: pruning.calibration.split=sts_test: Invalid value 'sts_test', expected one of "
        "[nli_train, sts_train, sts_dev]"]
    assert list(tmp_path.iterdir()) == []
