"""Config composition and the one-line errors of bad overrides, before anything loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import sbert_exp.train  # noqa: F401  (registers the schema for hydra's compose)
from conftest import CONF, ROOT, compose
from sbert_exp.config.schema import Source
from sbert_exp.errors import ConfigError
from sbert_exp.job.checks import plan
from sbert_exp.pruning.strategies import Strategy


def test_default_config_composes_to_typed_schema():
    cfg, _ = compose([])
    assert cfg.base_model.name == "e5_small"
    assert cfg.base_model.num_layers == 12
    assert cfg.base_model.prefix == "query: "
    assert cfg.base_model.source is Source.embedded
    assert cfg.pruning.keep == 6 and cfg.pruning.strategy is Strategy.top
    assert cfg.phase.name == "nli_sts"
    assert cfg.phase.nli.max_pairs == 512 and cfg.phase.sts.max_pairs == 384
    assert cfg.dataset.sts_test.location == "stsb/test"
    assert cfg.dataset.nli_test.label_map == {"entailment": 0, "neutral": 1, "contradiction": 2}
    assert cfg.tracking.uri == "sqlite:///mlflow.db"
    assert plan(cfg) == [0, 1, 2, 3, 4, 5]


def test_eval_batch_follows_the_device_unless_set():
    from sbert_exp.data.inputs import eval_batch_size

    cfg, _ = compose([])
    assert cfg.eval.batch_size is None
    assert [eval_batch_size(None, d) for d in ("cpu", "cuda", "cuda:1")] == [64, 256, 256]
    assert eval_batch_size(compose(["eval.batch_size=8"])[0].eval.batch_size, "cuda") == 8
    with pytest.raises(ConfigError, match="eval.batch_size must be at least 1"):
        plan(compose(["eval.batch_size=0"])[0])


@pytest.mark.parametrize(("launcher", "settings", "target"), [
    ("joblib", ["hydra.launcher.n_jobs=4"], "hydra_plugins.hydra_joblib_launcher.joblib_launcher"
                                            ".JoblibLauncher"),
    ("submitit_slurm", ["hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=1",
                        "hydra.launcher.timeout_min=240"],
     "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
    ("submitit_local", ["hydra.launcher.timeout_min=10"],
     "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"),
])
def test_documented_launchers_compose(launcher, settings, target):
    """The README's scale-out commands: the pinned launcher plugins take these settings."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose("train", [f"hydra/launcher={launcher}", *settings, "tracking=server",
                                      "tracking.uri=http://head:5000"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == target
    for setting in settings:
        key, value = setting.removeprefix("hydra.launcher.").split("=")
        assert str(cfg.hydra.launcher[key]) == value
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.sbert_exp_sweeper.TrackedSweeper"
    assert cfg.tracking.uri == "http://head:5000"


@pytest.mark.parametrize(
    ("overrides", "kept"),
    [
        (["pruning.keep=2", "pruning.strategy=middle"], [0, 11]),
        (["pruning.keep=6", "pruning.strategy=bottom"], [6, 7, 8, 9, 10, 11]),
        (["pruning=unpruned"], list(range(12))),
        (["pruning.layers=[0,3,11]"], [0, 3, 11]),
        (["base_model=minilm_l6", "pruning.keep=2", "pruning.strategy=bottom"], [4, 5]),
    ],
)
def test_overrides_select_layers(overrides, kept):
    cfg, _ = compose(overrides)
    assert plan(cfg) == kept


@pytest.mark.parametrize("name", ["muril", "mahabert_v2", "mahabert_small", "mahabert_smaller",
                                  "hindbert_v2", "bert_base", "mpnet_base", "minilm_l6",
                                  "e5_small"])
def test_every_base_model_option_composes(name):
    cfg, _ = compose([f"base_model={name}"])
    assert cfg.base_model.name == name
    assert cfg.base_model.num_layers in (2, 6, 12)


@pytest.mark.parametrize("phase", ["none", "nli", "sts", "nli_sts"])
def test_phase_options(phase):
    cfg, _ = compose([f"phase={phase}"])
    assert (cfg.phase.nli is not None) == ("nli" in phase)
    assert (cfg.phase.sts is not None) == ("sts" in phase)


def test_stage_budgets_are_overridable():
    cfg, _ = compose(["phase.nli.max_pairs=10", "phase.nli.epochs=2", "phase.sts.batch_size=8",
                      "phase.sts.lr=1e-4", "phase.sts.max_pairs=null"])
    assert (cfg.phase.nli.max_pairs, cfg.phase.nli.epochs) == (10, 2)
    assert (cfg.phase.sts.batch_size, cfg.phase.sts.lr, cfg.phase.sts.max_pairs) == (8, 1e-4, None)


def test_paper_preset_sets_full_budgets():
    cfg, _ = compose(["experiment=paper"])
    assert cfg.phase.nli.max_pairs is None and cfg.phase.nli.epochs == 1
    assert cfg.phase.sts.max_pairs is None and cfg.phase.sts.epochs == 4
    assert cfg.eval.nli_test_max_pairs is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["pruning.keep=13"], "pruning.keep=13 is out of range: the base model has 12 layers"),
        (["base_model=minilm_l6", "pruning.keep=12"], "the base model has 6 layers"),
        (["phase.nli.max_pairs=0"], "phase.nli.max_pairs=0 is invalid: it must be at least 1"),
        (["phase.sts.lr=0"], "phase.sts.lr=0.0 is invalid: it must be positive"),
        (["dataset.nli_train=null"], "phase=nli_sts has an nli stage but dataset=snli_stsb has "
                                     "no nli_train split"),
    ],
)
def test_plan_rejects(overrides, message):
    cfg, _ = compose(overrides)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan(cfg)


def _cli(*overrides: str, cwd: Path, **env_vars: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_vars}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "sbert_exp.train", *overrides,
         f"tracking.uri=sqlite:///{cwd / 'mlflow.db'}", f"hydra.run.dir={cwd / 'out'}"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("pruning.strategy=middel",
         "error: pruning.strategy=middel: Invalid value 'middel', expected one of "
         "[top, middle, bottom, alternate, block_influence, angular, greedy_dev]"),
        ("pruning.keep=0",
         "error: pruning.keep=0 is out of range: the base model has 12 layers, choose "
         "pruning.keep between 1 and 12 (base_model=e5_small)"),
        ("pruning.keep=13",
         "error: pruning.keep=13 is out of range: the base model has 12 layers, choose "
         "pruning.keep between 1 and 12 (base_model=e5_small)"),
        ("pruning.layers=[0,0]",
         "error: pruning.layers=[0, 0] repeats layer 0: list each kept layer once "
         "(base_model=e5_small)"),
        ("pruning.kep=2",
         "error: pruning.kep is not a setting: pruning has keep, strategy, layers, calibration"),
        ("base_model=muril_large",
         "error: base_model=muril_large is not an option: choose one of bert_base, e5_small, "
         "hindbert_v2, mahabert_small, mahabert_smaller, mahabert_v2, minilm_l6, mpnet_base, "
         "muril"),
        ("-m --cfg job",
         "error: use one of --run, --multirun, --cfg, --info, --shell-completion at a time, "
         "not --multirun and --cfg"),
        ("phase=nli phase.sts.max_pairs=5",
         "error: an override sets a key below a null node of this config (e.g. phase=nli has "
         "no sts stage, so phase.sts.* cannot be set): choose an option that defines it, or "
         "drop that override"),
        ("precision=fp16",
         "error: precision=fp16: Invalid value 'fp16', expected one of [auto, fp32, bf16]"),
        ("pruning.keep=two",
         "error: pruning.keep=two: Value 'two' of type 'str' could not be converted to Integer"),
    ],
)
def test_bad_override_ends_in_one_line_and_leaves_nothing(override, line, tmp_path):
    proc = _cli(*override.split(), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [line]
    assert "Traceback" not in proc.stdout + proc.stderr
    # Nothing written: no MLflow store, no job folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_rejected_run_leaves_no_dated_output_folder(tmp_path):
    """With Hydra's default run folder (outputs/DATE/TIME), a rejected run leaves no folder."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    (tmp_path / "keep.txt").write_text("a file of the user's")
    proc = subprocess.run([sys.executable, "-m", "sbert_exp.train", "pruning.keep=13",
                           f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: pruning.keep=13 is out of")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_missing_required_setting_ends_in_one_line(tmp_path):
    proc = _cli("dataset=local_files", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: dataset.nli_train.location, dataset.sts_test.location, "
        "dataset.sts_train.location must be set: add dataset.nli_train.location=... "
        "to the command"]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_missing_asset_names_the_make_target(tmp_path):
    cache = tmp_path / "empty-cache"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc = _cli("base_model=mpnet_base", cwd=run_dir, SBERT_EXP_CACHE=str(cache))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: asset 'mpnet_base' is missing ({cache / 'mpnet_base'}): "
        "run `make assets-mpnet`"]
    assert sorted(p.name for p in run_dir.iterdir()) == []


def test_malformed_data_file_ends_in_one_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "sts.tsv").write_text("sentence1\tsentence2\tscore\na cat\ta dog\tfour\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc = _cli("base_model=minilm_l6", "dataset=local_files", "phase=sts",
                "dataset.nli_train=null", f"dataset.sts_train.location={data / 'sts.tsv'}",
                f"dataset.sts_test.location={data / 'sts.tsv'}", cwd=run_dir)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {data / 'sts.tsv'} line 2: score 'four' is not a number: "
        "check the split's label column"]
    assert sorted(p.name for p in run_dir.iterdir()) == []


@pytest.mark.parametrize("phase", ["nli", "sts", "distill", "nli_sts", "distill_sts",
                                   "nli_distill"])
def test_every_phase_takes_its_stages_from_the_one_stage_file(phase):
    """conf/stage/<stage>.yaml is each stage's only block: the phases compose it."""
    from omegaconf import OmegaConf

    _, cfg = compose([f"phase={phase}"])
    for stage in ("nli", "distill", "sts"):
        if stage in phase.split("_"):
            composed = OmegaConf.to_container(cfg.phase[stage])
            written = OmegaConf.to_container(OmegaConf.load(CONF / "stage" / f"{stage}.yaml"))
            assert {k: composed[k] for k in written} == written
        else:
            assert cfg.phase.get(stage) is None
    assert not any(f"\n{s}:\n" in (CONF / "phase" / f"{phase}.yaml").read_text()
                   for s in ("nli", "distill", "sts"))
