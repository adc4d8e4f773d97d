"""What a user could ship instead: reference runs beside a sweep's jobs, on the report's board."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import compose, tiny_overrides
from sbert_exp import references
from sbert_exp.errors import ConfigError
from sbert_exp.job.checks import check
from sbert_exp.job.run import run_job
from sbert_exp.job.sweeper import SWEEP_FILE
from sbert_exp.report import board, cli, ship
from sbert_exp.tracking.runs import flatten
from sbert_exp.tracking.tags import CONFIG_KEY_TAG, MODEL_DIR_TAG, PARENT_TAG, REUSED_TAG

# ------------------------------------------------------------------ names


@pytest.mark.parametrize(("name", "form", "dims"), [
    ("as_is", "as_is", None), ("int8", "int8", None), ("trimmed", "trimmed", None),
    ("trimmed_int8", "trimmed_int8", None), ("static", "static", 256),
    ("static_64", "static", 64), ("minilm_l6", "peer", None),
])
def test_reference_names(name, form, dims):
    ref = references.parse(name)
    assert (ref.form, ref.dims) == (form, dims)
    if form == "peer":
        assert (ref.peer.name, ref.peer.num_layers, ref.peer.location) == ("minilm_l6", 6,
                                                                            "minilm_l6")
        assert ref.label("e5_small") == "minilm_l6 (reference)"
    else:
        assert ref.label("e5_small") == f"e5_small {name} (reference)"


@pytest.mark.parametrize(("name", "error"), [
    ("int4", "references: unknown reference 'int4': choose from as_is, int8, bf16, trimmed, "
             "trimmed_int8, static, static_<dims>, or a base model (bert_base, e5_small, "
             "hindbert_v2, mahabert_small, mahabert_smaller, mahabert_v2, minilm_l6, mpnet_base, "
             "muril)"),
    ("static_1", "references: static_1 asks for 1 dimensions: use at least 2"),
])
def test_an_unknown_reference_is_one_line_before_any_model_loads(tiny_bert, tmp_path, name,
                                                                   error):
    cfg, _ = compose([*tiny_overrides(tiny_bert, tmp_path), f"references=[int8,{name}]"])
    with pytest.raises(ConfigError) as e:
        check(cfg)
    assert str(e.value) == error


def test_a_static_reference_without_model2vec_says_how_to_install_it(tiny_bert, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setattr(references, "_model2vec_missing", lambda: True)
    cfg, _ = compose([*tiny_overrides(tiny_bert, tmp_path), "references=[static]"])
    with pytest.raises(ConfigError) as e:
        check(cfg)
    assert str(e.value) == ("references: static needs model2vec: pip install "
                            "'sbert_exp[static]', or leave it out")


def test_references_leave_the_jobs_key_alone(tiny_bert, tmp_path):
    plain = check(compose(tiny_overrides(tiny_bert, tmp_path))[0]).fingerprint.key
    cfg, _ = compose([*tiny_overrides(tiny_bert, tmp_path), "references=[int8]"])
    assert check(cfg).fingerprint.key == plain


def test_a_reference_is_the_same_whatever_the_job_trains_in(tiny_bert, tmp_path):
    keys = []
    for precision in ("fp32", "bf16"):
        cfg, _ = compose([*tiny_overrides(tiny_bert, tmp_path), "references=[int8]",
                          f"precision={precision}"])
        checked = check(cfg)
        keys.append(references.key(checked.references[0], checked.fingerprint.parts, cfg))
    assert keys[0] == keys[1]


# ------------------------------------------------------------------ a sweep with references


def _sweep(tiny_bert: Path, tmp_path: Path, name: str, keeps: list[int]) -> Path:
    """Jobs of one sweep (a parent run and its sweep.json), run in this process."""
    from mlflow.tracking import MlflowClient
    from omegaconf import OmegaConf

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    folder = tmp_path / name
    folder.mkdir()
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tests")
    experiment_id = (experiment.experiment_id if experiment else
                     client.create_experiment("tests", (tmp_path / "artifacts").as_uri()))
    parent = client.create_run(experiment_id).info.run_id
    (folder / SWEEP_FILE).write_text(json.dumps({"tracking_uri": uri, "parent_run_id": parent,
                                                 "experiment": "tests"}))
    for job, keep in enumerate(keeps):
        cfg, dict_cfg = compose([*tiny_overrides(tiny_bert, tmp_path, phase="sts"),
                                 f"pruning.keep={keep}",
                                 "references=[as_is,int8,trimmed,static_16]"])
        out = folder / str(job)
        out.mkdir()
        run_job(cfg, out, flatten(OmegaConf.to_container(dict_cfg, resolve=True)),
                tags={PARENT_TAG: parent}, parent_run_id=parent, job=job)
    client.set_terminated(parent)
    return folder


@pytest.mark.slow
def test_references_are_measured_once_a_sweep_and_stand_on_the_board(tiny_bert, tmp_path):
    folder = _sweep(tiny_bert, tmp_path, "first", [2, 3])
    info = json.loads((folder / SWEEP_FILE).read_text())
    runs = cli.child_runs(info["tracking_uri"], info["parent_run_id"])
    refs = [r for r in runs if references.REFERENCE_TAG in r["tags"]]
    # One run per reference (as_is is every job's base_model/ metrics), not one per job.
    assert sorted(r["params"]["reference.name"] for r in refs) == ["int8", "static_16", "trimmed"]
    assert len(runs) == 2 + 3
    by = {r["params"]["reference.name"]: r["metrics"] for r in refs}
    base = next(r for r in runs if references.REFERENCE_TAG not in r["tags"])["metrics"]
    base_sts = base["base_model/sts_test/spearman_cosine"]
    # Quantized or trimmed, the base scores as the base does; static embeddings do not.
    assert by["int8"]["sts_test/spearman_cosine"] == pytest.approx(base_sts, abs=0.02)
    assert by["trimmed"]["sts_test/spearman_cosine"] == pytest.approx(base_sts, abs=0.01)
    assert abs(by["static_16"]["sts_test/spearman_cosine"] - base_sts) > 1e-3
    assert by["trimmed"]["model/disk_mb"] < base["base_model/disk_mb"]
    assert by["static_16"]["model/disk_mb"] < by["trimmed"]["model/disk_mb"]
    assert all(m["speed/speedup_vs_unpruned"] > 0 for m in by.values())
    # The static form is a plain SentenceTransformer: loaded as one, it scores what the run says.
    from sentence_transformers import SentenceTransformer

    from sbert_exp.data.inputs import load_data
    from sbert_exp.evaluation import sts_scores

    static = next(r for r in refs if r["params"]["reference.name"] == "static_16")
    loaded = SentenceTransformer(static["tags"][MODEL_DIR_TAG], device="cpu")
    pairs = load_data(compose(tiny_overrides(tiny_bert, tmp_path, phase="sts"))[0]).sts_test
    assert sts_scores(loaded, pairs, 7)["spearman_cosine"] == pytest.approx(
        by["static_16"]["sts_test/spearman_cosine"], abs=1e-6)

    written = cli.write_report(folder)
    md = (folder / "report.md").read_text()
    assert "What a user could ship instead" in md
    sts = "sts_test/spearman_cosine"
    for name in ("int8", "trimmed", "static_16"):
        m = by[name]
        # Each reference's STSb with its interval, and its paired difference from the base.
        assert (f"| tiny_bert {name} (reference) | {m[sts]:.4f} "
                f"[{m['ci_low/' + sts]:.3f}, {m['ci_high/' + sts]:.3f}] |") in md
        assert m[f"vs_base/{sts}"] == pytest.approx(m[sts] - base_sts, abs=1e-9)
        assert m[f"vs_base/ci_low/{sts}"] <= m[f"vs_base/{sts}"] <= m[f"vs_base/ci_high/{sts}"]
        assert f"| tiny_bert {name} (reference) | the base | " in md.split(
            "## Which differences are real")[1]
    # The main table holds the jobs only.
    assert len(pd.read_csv(folder / "report.csv")) == 2
    chosen = json.loads((folder / "recommendation.json").read_text())
    assert chosen["sts"] == pytest.approx(max(
        [base_sts, *(m["sts_test/spearman_cosine"] for m in by.values()),
         *pd.read_csv(folder / "report.csv").sts_final]))
    if chosen["reference"]:
        assert "no model the sweep trained scores higher" in written.recommendation

    # A later sweep reuses the references (their folders are still there): one run each.
    folder = _sweep(tiny_bert, tmp_path, "second", [2])
    info = json.loads((folder / SWEEP_FILE).read_text())
    again = [r for r in cli.child_runs(info["tracking_uri"], info["parent_run_id"])
             if references.REFERENCE_TAG in r["tags"]]
    assert len(again) == 3 and all(REUSED_TAG in r["tags"] for r in again)
    assert {r["tags"][CONFIG_KEY_TAG] for r in again} == {r["tags"][CONFIG_KEY_TAG] for r in refs}


def _board(rows: list[dict]) -> pd.DataFrame:
    base = {"base": "m", "init": "pretrained", "keep": 12, "kept_layers": "", "phase": "none",
            "vocab_size": float("nan"), "base_sts": 0.8, "run_id": None, "logged_model": None,
            "mb_from": "disk", "model_dir": None, "score_base": 0.8, "base_mb": 100.0,
            "strategy": "none", "ref_form": None, "label": None}
    df = pd.DataFrame([{**base, **r} for r in rows])
    df["score"] = df.sts
    df["base_pct"] = 100 * df.sts / df.base_sts
    return df


@pytest.mark.parametrize(("form", "served", "advice"), [
    ("int8", "int8", "quantize the base: export base_model=m to int8 ONNX, no pruning needed"),
    ("bf16", "bf16", "serve the base in bf16: export base_model=m to bf16, no pruning needed"),
    ("trimmed", "fp32", "trim the base's vocabulary only: pruning=unpruned vocab=corpus, no "
                        "pruning needed"),
    ("static", "fp32", "use static embeddings distilled from m (model2vec), no transformer "
                       "needed"),
])
def test_a_winning_reference_is_recommended_in_plain_words(form, served, advice):
    df = _board([
        {"form": "as_is", "reference": True, "sts": 0.80, "speed": 1.0, "mb": 100.0},
        {"form": form, "reference": True, "ref_form": form, "label": f"m {form} (reference)",
         "sts": 0.799, "speed": 3.0, "mb": 30.0, "model_dir": "/refs/x"},
        {"form": "model", "reference": False, "strategy": "top", "keep": 6, "sts": 0.70,
         "speed": 2.0, "mb": 60.0},
    ])
    front = board.pareto_front(df)
    row = df.loc[board.recommend(df, front, board.Budget(min_speedup=1.5))]
    assert ship.recommendation_line(row, board.Budget(min_speedup=1.5)) == (
        f"recommended (within --min-speedup 1.5): m {form} (reference), served in "
        f"{served}: 0.7990 STSb, 30.0 MB, "
        f"3.0x; no model the sweep trained scores higher within the budget: {advice}; model "
        "folder /refs/x")


@pytest.mark.slow
def test_a_reference_folder_is_built_once_and_rebuilt_when_left_half_written(tiny_bert,
                                                                            tmp_path):
    cfg, _ = compose([*tiny_overrides(tiny_bert, tmp_path), "references=[trimmed]"])
    checked = check(cfg)
    [ref] = checked.references
    served, model_dir, seconds = references.ensure(ref, cfg, checked)
    assert seconds > 0 and (model_dir / "modules.json").is_file()
    assert model_dir.parent.name == references.key(ref, checked.fingerprint.parts, cfg)
    again, same_dir, seconds = references.ensure(ref, cfg, checked)
    assert (same_dir, seconds) == (model_dir, 0.0)
    sentences = ["a man plays the guitar", "two dogs run"]
    assert again.encode(sentences).tolist() == served.encode(sentences).tolist()
    # A kill before the folder was complete: built again.
    (model_dir.parent / references.COMPLETE).unlink()
    _, _, seconds = references.ensure(ref, cfg, checked)
    assert seconds > 0 and (model_dir.parent / references.COMPLETE).is_file()


def test_a_trimmed_reference_of_a_job_without_training_text_says_what_to_add(tiny_bert,
                                                                            tmp_path):
    cfg, _ = compose([*tiny_overrides(tiny_bert, tmp_path, phase="none"),
                      "references=[trimmed_int8]"])
    with pytest.raises(ConfigError) as e:
        check(cfg)
    assert str(e.value) == ("references: trimmed_int8 keeps the tokens of the job's training "
                            "text, and phase=none reads none: add vocab=corpus (its training "
                            "splits), or vocab.files=[...]")


def test_without_tracking_references_are_skipped_in_one_line(tiny_bert, tmp_path, caplog,
                                                              monkeypatch):
    import logging

    from omegaconf import OmegaConf

    monkeypatch.setattr(references, "REFERENCES", references.REFERENCES.moved(tmp_path))
    caplog.set_level(logging.INFO, logger="sbert_exp.job.run")
    cfg, dict_cfg = compose([*tiny_overrides(tiny_bert, tmp_path, phase="sts"), "pruning.keep=2",
                             "tracking.enabled=false", "eval.speed_rounds=0",
                             "references=[trimmed]"])
    (tmp_path / "job").mkdir()
    run_job(cfg, tmp_path / "job", flatten(OmegaConf.to_container(dict_cfg, resolve=True)))
    assert "references: tracking.enabled=false, so no run would hold them: skipped" in [
        r.getMessage() for r in caplog.records]
    assert not (tmp_path / "references").exists()  # nothing built
