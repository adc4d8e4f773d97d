"""The reuse key: what changes a result changes the key; what does not, does not."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import compose, mlflow_runs, run_tiny_job, tiny_overrides
from sbert_exp.data import digests
from sbert_exp.data.digests import file_digest
from sbert_exp.job import fingerprint as fp_module
from sbert_exp.job.checks import check
from sbert_exp.job.fingerprint import fingerprint
from sbert_exp.utils import versions as versions_module

PAIRS = [("a man is playing a guitar", "a man plays the guitar", 4.6),
         ("a woman is slicing an onion", "a woman is cutting an onion", 4.2),
         ("a dog is running on the beach", "a cat is sitting inside", 0.4),
         ("two children are playing ball", "a man is riding a horse", 0.2),
         ("a girl is brushing her hair", "a girl is styling her hair", 3.8)]


def _sts_file(path: Path, pairs=PAIRS) -> Path:
    lines = ["sentence1,sentence2,score", *(f"{a},{b},{s}" for a, b, s in pairs)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _overrides(tiny_bert: Path, tmp_path: Path, sts: Path, *more: str) -> list[str]:
    return [*tiny_overrides(tiny_bert, tmp_path, phase="none"), "dataset=local_files",
            f"dataset.sts_test.location={sts}", "eval.speed_rounds=0", "pruning.keep=2", *more]


def _key(overrides: list[str], device: str = "cpu") -> str:
    cfg, _ = compose(overrides)
    checked = check(cfg)
    return fingerprint(cfg, checked.kept, device, checked.model_path).key


@pytest.fixture(autouse=True)
def _own_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(digests, "HASHES", digests.HASHES.moved(tmp_path))
    digests._memo.clear()


def test_edited_data_file_changes_the_key_a_touch_does_not(tiny_bert, tmp_path):
    sts = _sts_file(tmp_path / "sts.csv")
    before = _key(_overrides(tiny_bert, tmp_path, sts))
    os.utime(sts, (1_000_000_000, 1_000_000_000))  # same bytes, new mtime: hashed again
    assert _key(_overrides(tiny_bert, tmp_path, sts)) == before
    _sts_file(sts, [*PAIRS[:-1], ("a girl is brushing her hair", "a boy is eating", 0.5)])
    assert _key(_overrides(tiny_bert, tmp_path, sts)) != before


def test_device_precision_and_versions_change_the_key(tiny_bert, tmp_path, monkeypatch):
    overrides = _overrides(tiny_bert, tmp_path, _sts_file(tmp_path / "sts.csv"))
    base = _key(overrides)
    monkeypatch.setattr(fp_module, "precision", lambda device, requested: "bf16")
    assert _key(overrides, device="cuda:0") != base
    monkeypatch.undo()
    # The precision chosen, not the one asked for: bf16 runs (emulated or not) on any CPU.
    assert _key([*overrides, "precision=bf16"]) != base
    monkeypatch.setattr(digests, "HASHES", digests.HASHES.moved(tmp_path))
    real = versions_module.metadata.version
    monkeypatch.setattr(versions_module.metadata, "version",
                        lambda name: "99.0" if name == "transformers" else real(name))
    assert _key(overrides) != base


def test_model_files_change_the_key(tiny_bert, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(tiny_bert, copy)
    sts = _sts_file(tmp_path / "sts.csv")
    overrides = [*_overrides(tiny_bert, tmp_path, sts), f"base_model.location={copy}"]
    before = _key(overrides)
    config = json.loads((copy / "config.json").read_text())
    config["layer_norm_eps"] = 1e-5
    (copy / "config.json").write_text(json.dumps(config))
    assert _key(overrides) != before


@pytest.mark.parametrize("change", ["tracking.experiment=other", "tracking.uri=sqlite:///x.db",
                                    "save_model=false", "force=true", "pruning.strategy=bottom"])
def test_settings_that_do_not_change_results_keep_the_key(change, tiny_bert, tmp_path):
    # keep=12 under another strategy is the same model; tracking and saving change no number.
    overrides = [*_overrides(tiny_bert, tmp_path, _sts_file(tmp_path / "sts.csv")),
                 "pruning.keep=12"]
    assert _key([*overrides, change]) == _key(overrides)


def test_file_digest_is_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    path = tmp_path / "f.txt"
    path.write_text("hello")
    first = file_digest(path)
    table = json.loads((tmp_path / "file_hashes" / "sha256.json").read_text())
    assert table[str(path.resolve())][2] == first
    digests._memo.clear()
    calls = []
    monkeypatch.setattr(digests.assets, "sha256_file", lambda p: calls.append(p) or "x")
    assert file_digest(path) == first and calls == []  # from the cache file
    path.write_text("hello!")
    assert file_digest(path) == "x" and len(calls) == 1  # changed: hashed again


def _job(overrides: list[str], out: Path) -> dict[str, float]:
    return run_tiny_job(overrides, out)


def _runs(tmp_path: Path):
    return mlflow_runs(tmp_path)[1]


def test_reuse_follows_the_file_content_and_links_the_saved_model(tiny_bert, tmp_path):
    sts = _sts_file(tmp_path / "sts.csv")
    overrides = [*_overrides(tiny_bert, tmp_path, sts), "save_model=true"]
    first = _job(overrides, tmp_path / "a")
    # Same content: reused, and the reused job's folder has the model, as hard links.
    assert _job(overrides, tmp_path / "b") == first
    weights = "model.safetensors"
    a_file = next((tmp_path / "a" / "model").rglob(weights))
    b_file = tmp_path / "b" / "model" / a_file.relative_to(tmp_path / "a" / "model")
    assert b_file.is_file() and os.path.samefile(a_file, b_file)
    runs = _runs(tmp_path)
    assert [r.data.tags.get("sbert_exp.reused_from") for r in runs] == [None, runs[0].info.run_id]
    params = runs[0].data.params
    assert params["fingerprint.device"] == "cpu" and params["fingerprint.precision"] == "fp32"
    assert params["fingerprint.data.sts_test"] == file_digest(sts)
    assert params["fingerprint.version.sbert_exp"] == versions_module.versions()["sbert_exp"]
    assert runs[1].data.tags["sbert_exp.model_dir"] == str((tmp_path / "b" / "model").resolve())

    # The original folder is gone: the reuse's links still hold the model.
    import shutil

    shutil.rmtree(tmp_path / "a")
    assert _job(overrides, tmp_path / "c") == first
    assert (tmp_path / "c" / "model" / "modules.json").is_file()
    assert len(_runs(tmp_path)) == 3
    # Every saved copy is gone: trained again rather than reused without a model.
    shutil.rmtree(tmp_path / "b")
    shutil.rmtree(tmp_path / "c")
    _job(overrides, tmp_path / "d")
    assert "sbert_exp.reused_from" not in _runs(tmp_path)[-1].data.tags

    # An edited data file: trained again, with its own key.
    _sts_file(sts, PAIRS[:4])
    _job(overrides, tmp_path / "e")
    last = _runs(tmp_path)[-1]
    assert "sbert_exp.reused_from" not in last.data.tags
    assert last.data.tags["sbert_exp.config_key"] != runs[0].data.tags["sbert_exp.config_key"]


def test_phase_none_needs_no_training_files(tiny_bert, tmp_path):
    """dataset=local_files with phase=none: only sts_test is read, so only it must be set."""
    cfg, _ = compose(_overrides(tiny_bert, tmp_path, _sts_file(tmp_path / "sts.csv")))
    assert cfg.dataset.nli_train is None and cfg.dataset.sts_train is None


def test_distillation_weights_at_their_earlier_values_keep_the_earlier_key(tiny_bert, tmp_path):
    """The distillation stage's loss weights came later: a config that leaves them at what every
    earlier run had (the MSE alone) has the key of the same config without them; another
    weight is another key."""
    import dataclasses

    from sbert_exp.config.schema import DistillConfig

    sentences = tmp_path / "sentences.txt"
    sentences.write_text("a man plays the guitar\ntwo dogs run on the beach\n")
    overrides = [*tiny_overrides(tiny_bert, tmp_path, phase="distill_sts"), "dataset=local_files",
                 f"dataset.sts_test.location={_sts_file(tmp_path / 'sts.csv')}",
                 f"dataset.sts_train.location={tmp_path / 'sts.csv'}",
                 f"phase.distill.sentences_file={sentences}", "phase.distill.max_sentences=null",
                 "eval.speed_rounds=0", "pruning.keep=2"]
    cfg, _ = compose(overrides)
    checked = check(cfg)
    key = fingerprint(cfg, checked.kept, "cpu", checked.model_path).key

    # The same config under the schema before the weights: a distill section without them.
    added = {"mse", "hidden", "similarity"}
    earlier_schema = dataclasses.make_dataclass(
        "DistillConfig", [f.name for f in dataclasses.fields(DistillConfig) if f.name not in added])
    earlier = earlier_schema(**{f.name: getattr(cfg.phase.distill, f.name)
                                for f in dataclasses.fields(earlier_schema)})
    before = dataclasses.replace(cfg, phase=dataclasses.replace(cfg.phase, distill=earlier))
    assert fingerprint(before, checked.kept, "cpu", checked.model_path).key == key

    assert _key([*overrides, "phase.distill.mse=1.0", "phase.distill.similarity=0"]) == key
    for change in ("phase.distill.hidden=1", "phase.distill.similarity=0.5",
                   "phase.distill.mse=2"):
        assert _key([*overrides, change]) != key
