"""The distillation stage: composition, its sentences, the teacher cache, jobs on the tiny BERT,
and the one-line errors of bad input, raised before any model loads."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import compose, tiny_overrides
from sbert_exp.data.inputs import load_data
from sbert_exp.data.readers import load_split
from sbert_exp.errors import UserError
from sbert_exp.job.run import run_job
from sbert_exp.model import modeling
from sbert_exp.tracking.runs import flatten
from sbert_exp.training import teacher

DISTILL_METRICS = {"train_distill/loss", "train_distill/seconds", "train_distill/pairs",
                   "train_distill/pairs_per_s", "after_distill/sts_test/spearman_cosine",
                   "after_distill/sts_test/pearson_cosine"}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A teacher cache of this test's own, so that it counts its own encodes."""
    root = tmp_path / "teacher_embeddings"
    monkeypatch.setattr(teacher, "STORES", teacher.STORES.moved(root.parent))
    return root


def _overrides(tiny_bert: Path, tmp_path: Path, phase: str = "distill",
               sentences: int | None = 256) -> list[str]:
    return [*tiny_overrides(tiny_bert, tmp_path, phase=phase),
            f"phase.distill.max_sentences={'null' if sentences is None else sentences}",
            "eval.speed_rounds=0"]


def _job(overrides: list[str], out: Path) -> dict[str, float]:
    from omegaconf import OmegaConf

    cfg, dict_cfg = compose(overrides)
    out.mkdir(parents=True, exist_ok=True)
    return run_job(cfg, out, flatten(OmegaConf.to_container(dict_cfg, resolve=True)))


def _history(tmp_path: Path, metric: str = "sts_test/spearman_cosine") -> list[list[int]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    return [[m.step for m in client.get_metric_history(r.info.run_id, metric)] for r in runs]


def _mse(model, sentences: list[str], targets: np.ndarray) -> float:
    return float(((model.encode(sentences, batch_size=64) - targets) ** 2).mean())


def _student(cfg, kept: list[int]):
    """The student as the job starts it: the base model as configured, pruned."""
    model = modeling.load_base(cfg.base_model, "cpu", cfg.base_model.location, cfg.seed)
    modeling.prune(model, kept)
    return model


def _teacher_lines(caplog) -> list[str]:
    """'computed distillation', 'read from the cache STS test reference', ... in log order."""
    return [" ".join(r.getMessage().removeprefix("teacher embeddings: ").split(", ")[0]
                     .split(" (")) for r in caplog.records
            if r.name == "sbert_exp.training.teacher"]


def _store(cache: Path) -> teacher.Store:
    """The test's one teacher store (one base model: one teacher)."""
    [folder] = [p for p in cache.iterdir() if p.is_dir()]
    return teacher.Store(folder)


def _targets(cache: Path, sentences: list[str]) -> np.ndarray:
    """The stored teacher embeddings of `sentences`."""
    store = _store(cache)
    index = store.index()
    return store.read([index[teacher.sentence_digest(s)] for s in sentences])


# ------------------------------------------------------------------ composition


@pytest.mark.parametrize(("phase", "stages"), [
    ("distill", (False, True, False)),
    ("distill_sts", (False, True, True)),
    ("nli_distill", (True, True, False)),
])
def test_every_distill_phase_option_composes(phase, stages):
    cfg, _ = compose([f"phase={phase}"])
    assert cfg.phase.name == phase
    assert tuple(s is not None for s in (cfg.phase.nli, cfg.phase.distill, cfg.phase.sts)) == stages
    d = cfg.phase.distill
    assert (d.max_sentences, d.epochs, d.batch_size, d.lr, d.warmup_ratio, d.sentences_file) == (
        4000, 1, 64, 1e-4, 0.1, None)
    # The distillation sentences come from both training splits: neither is dropped.
    assert cfg.dataset.nli_train is not None and cfg.dataset.sts_train is not None


def test_a_sentences_file_replaces_the_training_splits():
    cfg, _ = compose(["phase=distill", "phase.distill.sentences_file=s.txt",
                      "phase.distill.max_sentences=null"])
    assert cfg.phase.distill.sentences_file == "s.txt"
    assert cfg.dataset.nli_train is None and cfg.dataset.sts_train is None  # not read


# ------------------------------------------------------------------ sentences


@pytest.mark.slow
def test_sentences_come_from_the_training_splits_never_from_sts_test():
    cfg, _ = compose(["phase=distill", "phase.distill.max_sentences=null"])
    d = cfg.dataset
    nli, sts, test = (load_split(d.nli_train, "nli", "nli_train"),
                      load_split(d.sts_train, "sts", "sts_train"),
                      load_split(d.sts_test, "sts", "sts_test"))
    test_sentences = {*test["sentence1"], *test["sentence2"]}
    train = {*nli["sentence1"], *nli["sentence2"], *sts["sentence1"], *sts["sentence2"]}
    assert train & test_sentences  # the splits do share sentences: they must be left out

    every = load_data(cfg).distill
    assert len(every) == len(set(every)) == len(train - test_sentences)
    assert set(every) == train - test_sentences
    sample = load_data(compose(["phase=distill", "phase.distill.max_sentences=500"])[0]).distill
    assert len(sample) == 500 and set(sample) <= set(every)
    again = load_data(compose(["phase=distill", "phase.distill.max_sentences=500"])[0]).distill
    assert again == sample  # seeded
    other = load_data(compose(["phase=distill", "phase.distill.max_sentences=500",
                               "seed=7"])[0]).distill
    assert other != sample


def test_sentences_file_is_read_deduplicated_without_sts_test_sentences(tmp_path):
    cfg, _ = compose(["phase=distill"])
    test = load_split(cfg.dataset.sts_test, "sts", "sts_test")
    path = tmp_path / "sentences.txt"
    path.write_text(f"a man plays the guitar.\r\n\n  two dogs run  \na man plays the guitar.\n"
                    f"{test['sentence1'][0]}\nune fille chante é\n", encoding="utf-8")
    cfg, _ = compose(["phase=distill", f"phase.distill.sentences_file={path}",
                      "phase.distill.max_sentences=null"])
    assert load_data(cfg).distill == ["a man plays the guitar.", "two dogs run",
                                      "une fille chante é"]


# ------------------------------------------------------------------ jobs


@pytest.mark.slow
def test_distillation_moves_the_pruned_student_to_the_teacher(tiny_bert, tmp_path, cache):
    out = tmp_path / "job"
    metrics = _job([*_overrides(tiny_bert, tmp_path), "pruning.keep=3"], out)
    assert DISTILL_METRICS <= set(metrics)
    assert not any(k.startswith(("train_nli", "train_sts", "after_nli", "after_sts"))
                   for k in metrics)
    assert metrics["train_distill/pairs"] == 256  # sentences
    assert metrics["train_distill/loss"] > 0
    assert metrics["sts_test/spearman_cosine"] == metrics["after_distill/sts_test/spearman_cosine"]
    assert _history(tmp_path) == [[0, 2]]

    # The cached targets are the unpruned model's embeddings of the job's sentences.
    from sentence_transformers import SentenceTransformer

    cfg, _ = compose([*_overrides(tiny_bert, tmp_path), "pruning.keep=3"])
    sentences = load_data(cfg).distill
    targets = _targets(cache, sentences)
    full = modeling.load_base(cfg.base_model, "cpu", str(tiny_bert))
    np.testing.assert_allclose(full.encode(sentences, batch_size=64), targets, atol=1e-5)
    # The student's MSE to the teacher on the distillation sentences drops.
    before = _mse(_student(cfg, [0, 1, 2]), sentences, targets)
    after = _mse(SentenceTransformer(str(out / "model"), device="cpu"), sentences, targets)
    assert after < 0.9 * before, (before, after)


@pytest.mark.slow
def test_teacher_is_encoded_once_per_sentence_set_whatever_the_keep_and_init(
        tiny_bert, tmp_path, cache, caplog, monkeypatch):
    """A random-init student distills from the pretrained teacher (loaded on the cache miss);
    a pretrained job with another keep then reads the same targets from the cache."""
    caplog.set_level(logging.INFO, logger="sbert_exp.training.teacher")
    inits = []
    load_base = modeling.load_base

    def spy(base, *args, **kwargs):
        inits.append(base.init.value)
        return load_base(base, *args, **kwargs)

    monkeypatch.setattr(modeling, "load_base", spy)
    # From random weights the student has further to go: more steps, a larger rate.
    random_job = [*_overrides(tiny_bert, tmp_path), "pruning.keep=3", "base_model.init=random",
                  "phase.distill.batch_size=16", "phase.distill.lr=1e-3"]
    metrics = _job(random_job, tmp_path / "random")
    assert DISTILL_METRICS <= set(metrics)
    # The student, then the teacher for each cache miss: the distillation targets and the
    # STS test reference (the unpruned model's score).
    assert inits == ["random", "pretrained", "pretrained"]
    computed = ["computed distillation", "computed STS test reference"]
    assert _teacher_lines(caplog) == computed

    _job([*_overrides(tiny_bert, tmp_path), "pruning.keep=2"], tmp_path / "pretrained")
    assert inits == ["random", "pretrained", "pretrained", "pretrained"]  # the second student
    assert _teacher_lines(caplog) == [*computed, "read from the cache distillation",
                                      "read from the cache STS test reference"]
    # One store, one row per distinct sentence of both sets.
    test = load_split(compose(random_job)[0].dataset.sts_test, "sts", "sts_test")
    distinct = {*load_data(compose(random_job)[0]).distill, *test["sentence1"],
                *test["sentence2"]}
    assert len(_store(cache).index()) == len(distinct)

    # The random-init student learnt the pretrained teacher's embeddings.
    from sentence_transformers import SentenceTransformer

    monkeypatch.setattr(modeling, "load_base", load_base)
    cfg, _ = compose(random_job)
    sentences = load_data(cfg).distill
    targets = _targets(cache, sentences)
    full = modeling.load_base(compose(_overrides(tiny_bert, tmp_path))[0].base_model, "cpu",
                              str(tiny_bert))
    np.testing.assert_allclose(full.encode(sentences, batch_size=64), targets, atol=1e-5)
    before = _mse(_student(cfg, [0, 1, 2]), sentences, targets)
    after = _mse(SentenceTransformer(str(tmp_path / "random" / "model"), device="cpu"),
                 sentences, targets)
    assert after < 0.9 * before, (before, after)


def test_distill_then_sts_from_a_sentences_file(tiny_bert, tmp_path, cache):
    path = tmp_path / "sentences.txt"
    path.write_text("\n".join(["a man is playing a guitar", "a woman is slicing an onion",
                               "two dogs are running on the beach", "a child is riding a horse",
                               "the cat is sitting on the red car", "people are dancing"]) + "\n")
    metrics = _job([*_overrides(tiny_bert, tmp_path, phase="distill_sts", sentences=None),
                    f"phase.distill.sentences_file={path}", "phase.distill.batch_size=4"],
                   tmp_path / "job")
    assert DISTILL_METRICS <= set(metrics)
    assert metrics["train_distill/pairs"] == 6 and metrics["train_sts/pairs"] == 32
    assert metrics["sts_test/spearman_cosine"] == metrics["after_sts/sts_test/spearman_cosine"]
    assert _history(tmp_path) == [[0, 2, 3]]
    # The file's content is part of the reuse key.
    cfg, _ = compose([*_overrides(tiny_bert, tmp_path, phase="distill_sts", sentences=None),
                      f"phase.distill.sentences_file={path}"])
    from sbert_exp.job.checks import check

    assert "data.distill_sentences" in check(cfg).fingerprint.parts


def test_final_evaluation_only_after_nli_and_distill(tiny_bert, tmp_path, cache):
    metrics = _job([*_overrides(tiny_bert, tmp_path, phase="nli_distill", sentences=64),
                    "pruning.keep=2", "save_model=false", "eval.every_stage=false"],
                   tmp_path / "job")
    assert {"train_nli/loss", "train_distill/loss", "nli_test/accuracy"} <= set(metrics)
    assert not any(k.startswith(("before/", "after_nli/")) for k in metrics)
    assert _history(tmp_path) == [[2]]


# ------------------------------------------------------------------ bad input


def _distinct_training_sentences(tiny_bert: Path, tmp_path: Path) -> int:
    """The distillation sentences of the tiny jobs' data: the training splits' distinct
    sentences less those of their STS test split."""
    cfg, _ = compose(_overrides(tiny_bert, tmp_path, sentences=None))
    return len(load_data(cfg).distill)


def _bad_bytes(path: Path) -> Path:
    path.write_bytes(b"ok\n\xff\xfe no\n")
    return path


@pytest.mark.parametrize(("overrides", "message"), [
    (["phase.distill.max_sentences=0"],
     "phase.distill.max_sentences=0 is invalid: it must be at least 1, or null"),
    (["phase.distill.epochs=0"], "phase.distill.epochs=0 is invalid: it must be at least 1"),
    (["phase.distill.batch_size=0"],
     "phase.distill.batch_size=0 is invalid: it must be at least 1"),
    (["phase.distill.lr=0"], "phase.distill.lr=0.0 is invalid: it must be positive"),
    (["phase.distill.warmup_ratio=1"],
     "phase.distill.warmup_ratio=1.0 is invalid: it must be in [0, 1)"),
    (["dataset.nli_train=null", "dataset.sts_train=null"],
     "phase=distill has a distill stage but dataset=snli_stsb has no nli_train or sts_train "
     "split: set phase.distill.sentences_file or phase.distill.files, or one of those splits"),
    (["phase.distill.max_sentences=10000000"],
     "phase.distill.max_sentences=10000000 but the training splits hold {n} distinct sentences "
     "(STS test sentences left out): set it to at most {n}"),
    (["phase.distill.sentences_file={tmp}/none.txt"],
     "phase.distill.sentences_file: file {tmp}/none.txt does not exist: fix the path"),
    (["phase.distill.sentences_file={empty}"],
     "phase.distill.sentences_file: {empty} holds no sentences: write one sentence per line"),
    (["phase.distill.sentences_file={latin}"],
     "phase.distill.sentences_file: {latin} is not UTF-8 text (byte 3 cannot be decoded): "
     "re-save it as UTF-8"),
    (["phase.distill.sentences_file={short}", "phase.distill.max_sentences=3"],
     "phase.distill.max_sentences=3 but {short} holds 2 distinct sentences (STS test sentences "
     "left out): set it to at most 2"),
], ids=["max_sentences", "epochs", "batch_size", "lr", "warmup", "no_split", "too_many",
        "missing_file", "empty_file", "not_utf8", "too_many_in_file"])
def test_bad_input_ends_in_one_line_before_any_model_loads(overrides, message, tiny_bert,
                                                           tmp_path, monkeypatch):
    def no_load(*args, **kwargs):
        pytest.fail("a model was loaded before the input was checked")

    monkeypatch.setattr(modeling, "load_base", no_load)
    (tmp_path / "empty.txt").write_text("\n  \n\n")
    (tmp_path / "short.txt").write_text("one sentence\nanother one\none sentence\n")
    names = {"tmp": tmp_path, "empty": tmp_path / "empty.txt",
             "latin": _bad_bytes(tmp_path / "latin.txt"), "short": tmp_path / "short.txt"}
    if "{n}" in message:
        names["n"] = _distinct_training_sentences(tiny_bert, tmp_path)
    extra = [o.format(**names) for o in overrides]
    keys = {o.split("=")[0] for o in extra}
    base = [o for o in _overrides(tiny_bert, tmp_path) if o.split("=")[0] not in keys]
    with pytest.raises(UserError) as caught:
        _job([*base, *extra], tmp_path / "job")
    assert str(caught.value) == message.format(**names)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "mlflow.db").exists()  # nothing logged


# ------------------------------------------------------------------ report


def test_report_sets_phases_side_by_side(tmp_path, monkeypatch):
    from sbert_exp.report import plots
    from sbert_exp.report.table import markdown, table

    def run(run_id: str, phase: str, strategy: str, kept: str, metrics: dict[str, float]) -> dict:
        params = {"base_model.name": "m", "base_model.num_layers": "4",
                  "pruning.strategy": strategy, "pruning.kept_layers": kept, "phase.name": phase}
        return {"run_id": run_id, "status": "FINISHED", "params": params, "tags": {},
                "metrics": {"model/params_total": 3e6, "model/params_embeddings": 1e6,
                            "model/params_encoder": 1e6, "speed/speedup_vs_unpruned": 2.0,
                            "base_model/sts_test/spearman_cosine": 0.8, "time/total_s": 61.4,
                            "sts_test/spearman_cosine": metrics[
                                "after_sts/sts_test/spearman_cosine"], **metrics}}

    df = table([
        run("s", "sts", "top", "0,1", {"after_sts/sts_test/spearman_cosine": 0.5}),
        run("d", "distill_sts", "top", "0,1", {"after_distill/sts_test/spearman_cosine": 0.6,
                                               "after_sts/sts_test/spearman_cosine": 0.7}),
        run("n", "nli_sts", "top", "0,1", {"after_sts/sts_test/spearman_cosine": 0.4}),
        run("g", "distill_sts", "greedy_dev", "0,3",
            {"after_sts/sts_test/spearman_cosine": 0.76})])
    assert list(zip(df.strategy, df.phase, strict=True)) == [
        ("top", "distill_sts"), ("top", "nli_sts"), ("top", "sts"), ("greedy_dev", "distill_sts")]
    assert df.sts_after_distill.tolist()[0] == 0.6 and df.sts_after_distill[1:3].isna().all()
    assert df.base_pct.tolist() == pytest.approx([87.5, 50.0, 62.5, 95.0])
    lines = markdown(df).splitlines()
    assert lines[0] == ("| base | init | strategy | keep | kept layers | phase | params total / "
                        "emb / enc (M) | speedup | STSb before | after NLI | after distill | "
                        "after STS | NLI acc | % of unpruned | % of base | STSb 95% interval | "
                        "STSb vs base | job (s) |")
    assert lines[2] == ("| m | pretrained | top | 2 | 0 1 | distill_sts | 3.0 / 1.0 / 1.0 "
                        "| 2.00x | - | - | 0.6000 | 0.7000 | - | - | 87.5 | - | - | 61 |")

    # The plots: one panel per phase, on one STSb axis; scored strategies have their colour.
    panels: dict[str, dict[str, list]] = {}
    finish = plots._finish

    def record(fig, axes, xlabel, title, path):
        panels[path.name] = {ax.get_title(): ax.get_legend_handles_labels()[1] for ax in axes}
        assert all(ax.get_ylim() == axes[0].get_ylim() for ax in axes)
        finish(fig, axes, xlabel, title, path)

    monkeypatch.setattr(plots, "_finish", record)
    plots.plot(df, tmp_path)
    lines = panels["spearman_vs_layers.png"]
    assert list(lines) == ["phase=distill_sts", "phase=nli_sts", "phase=sts"]
    assert lines["phase=distill_sts"] == ["m, pretrained: top removed",
                                          "m, pretrained: greedy_dev choice",
                                          "m: base model, no training"]
    assert lines["phase=sts"] == ["m, pretrained: top removed", "m: base model, no training"]
    assert list(panels["quality_vs_speedup.png"]) == list(lines)


def test_the_stage_hands_its_running_loss_to_the_tracker_while_it_trains(tiny_bert, tmp_path):
    """Every 50 optimizer steps: the running loss and the sentences per second, at that step."""
    from sbert_exp.training import stages as training

    cfg, _ = compose([*_overrides(tiny_bert, tmp_path), "phase.distill.batch_size=4"])
    sentences = load_data(cfg).distill[:240]
    full = modeling.load_base(cfg.base_model, "cpu", str(tiny_bert))
    targets = full.encode(sentences, batch_size=64)
    logged = []
    result = training.train_distill(_student(cfg, [0, 1, 2]), sentences, targets,
                                    cfg.phase.distill, cfg.seed,
                                    lambda m, step: logged.append((step, m)))
    assert result.steps == 60
    assert [step for step, _ in logged] == [50]
    [(_, metrics)] = logged
    assert set(metrics) == {"train_distill/step_loss", "train_distill/step_examples_per_s"}
    assert 0 < metrics["train_distill/step_loss"] < 10 and metrics[
        "train_distill/step_examples_per_s"] > 0


@pytest.mark.slow
def test_sentence_files_join_the_training_splits_in_a_stated_mix(tmp_path):
    own = tmp_path / "own.txt"
    own.write_text("a girl rides a red bike\na boy plays the piano\na girl rides a red bike\n")
    more = tmp_path / "more.txt"
    more.write_text("two dogs run\nthe cat is on the hat\n")
    cfg, _ = compose(["phase=distill", "phase.distill.max_sentences=50",
                      f"phase.distill.files=[{own},{more}]"])
    data = load_data(cfg)
    assert data.distill_mix == {"training": 50, "files.0": 2, "files.1": 2}
    assert data.distill[50:] == ["a girl rides a red bike", "a boy plays the piano",
                                 "two dogs run", "the cat is on the hat"]
    # The files' contents are part of the reuse key.
    from sbert_exp.job.checks import check

    first = check(cfg).fingerprint
    assert first.parts["data.distill_files.1"]
    more.write_text("two dogs run\nthe cat sat on the hat\n")
    assert check(cfg).fingerprint.key != first.key


def test_a_missing_distillation_file_is_one_line_before_any_model_loads(tmp_path):
    cfg, _ = compose(["phase=distill", f"phase.distill.files=[{tmp_path / 'none.txt'}]"])
    with pytest.raises(UserError) as e:
        load_data(cfg)
    assert str(e.value) == (f"phase.distill.files[0]: file {tmp_path / 'none.txt'} does not "
                            "exist: fix the path")
