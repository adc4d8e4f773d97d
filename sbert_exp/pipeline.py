"""One job: check the config, read data, load, time, prune, fine-tune in stages, evaluate, save."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset

from sbert_exp import (
    evaluation,
    export,
    languages,
    modeling,
    references,
    selection,
    teacher,
    training,
    vocab,
)
from sbert_exp.atomic import atomic_dir, write_text
from sbert_exp.data import load_split, read_sentences, resolve_path, sample_sentences, subsample
from sbert_exp.errors import ConfigError
from sbert_exp.fingerprint import Fingerprint, fingerprint, read_splits
from sbert_exp.pruning import SCORED, PruningError, Strategy, kept_layers, pruning_label
from sbert_exp.schema import (
    DatasetConfig,
    DistillConfig,
    ExportBackend,
    Init,
    Source,
    StageConfig,
    TrainConfig,
    VocabKind,
)
from sbert_exp.tracking import (
    CONFIG_KEY_TAG,
    JOB_TAG,
    LOGGED_MODEL_TAG,
    MODEL_DIR_TAG,
    REUSED_TAG,
    FinishedRun,
    Run,
    Tracker,
)

log = logging.getLogger(__name__)


def plan(cfg: TrainConfig) -> list[int] | None:
    """Check everything that can be checked without loading anything; return the kept layers
    (None when a scored strategy chooses them once the model is loaded)."""
    p = cfg.pruning
    try:
        kept = kept_layers(cfg.base_model.num_layers, p.keep, p.strategy, p.layers)
    except PruningError as e:
        raise ConfigError(f"{e} (base_model={cfg.base_model.name})") from None
    if kept is None:
        _check_calibration(cfg)
    stages = {"nli": (cfg.phase.nli, cfg.dataset.nli_train), "sts": (cfg.phase.sts,
                                                                     cfg.dataset.sts_train)}
    for name, (stage, split) in stages.items():
        if stage is None:
            continue
        if split is None:
            raise ConfigError(f"phase={cfg.phase.name} has an {name} stage but "
                              f"dataset={cfg.dataset.name} has no {name}_train split: choose "
                              f"another phase or set dataset.{name}_train")
        _check_stage(name, stage)
    distill = cfg.phase.distill
    if distill is not None:
        d = cfg.dataset
        if (distill.sentences_file is None and not distill.files and d.nli_train is None
                and d.sts_train is None):
            raise ConfigError(f"phase={cfg.phase.name} has a distill stage but "
                              f"dataset={d.name} has no nli_train or sts_train split: set "
                              "phase.distill.sentences_file or phase.distill.files, or one of "
                              "those splits")
        _check_stage("distill", distill)
        for name, count in distill.text.items():
            _check_text(name, f"phase.distill.text.{name}")
            if count is not None and count < 0:
                raise ConfigError(f"phase.distill.text.{name}={count} is invalid: it must be at "
                                  "least 0 (0: none of it), or null for all of the source")
    _check_vocab(cfg)
    languages.job_sets(cfg)
    if cfg.export is not ExportBackend.none:
        if not cfg.save_model:
            raise ConfigError(f"export={cfg.export} exports the saved model: set "
                              "save_model=true, or export=none")
        export.check_available(cfg.export)
    if cfg.eval.nli_test_max_pairs is not None and cfg.eval.nli_test_max_pairs < 1:
        raise ConfigError("eval.nli_test_max_pairs must be at least 1, or null for all pairs")
    if cfg.eval.batch_size is not None and cfg.eval.batch_size < 1:
        raise ConfigError("eval.batch_size must be at least 1, or null for the device's default")
    if cfg.eval.speed_sentences < 1 or cfg.eval.speed_rounds < 0:
        raise ConfigError("eval.speed_sentences must be at least 1 and eval.speed_rounds at "
                          "least 0 (0: no speed timing)")
    return kept


def _check_calibration(cfg: TrainConfig) -> None:
    p, d = cfg.pruning, cfg.dataset
    c = p.calibration
    if p.strategy is Strategy.greedy_dev:
        if d.sts_dev is None:
            raise ConfigError(f"pruning.strategy=greedy_dev scores layer removals on STS dev "
                              f"pairs but dataset={d.name} has no sts_dev split: set "
                              "dataset.sts_dev, or choose another strategy")
        if c.dev_pairs < 3:
            raise ConfigError(f"pruning.calibration.dev_pairs={c.dev_pairs} is too few for a "
                              "Spearman correlation: use at least 3 (default 300)")
        return
    if getattr(d, c.split.value) is None:
        raise ConfigError(f"pruning.calibration.split={c.split.value} but dataset={d.name} has "
                          f"no {c.split.value} split: choose another split")
    if c.max_sentences < 2:
        raise ConfigError(f"pruning.calibration.max_sentences={c.max_sentences} is too few: "
                          "use at least 2 (default 256)")


def _check_vocab(cfg: TrainConfig) -> None:
    v = cfg.vocab
    if v.name is VocabKind.none:
        return
    if v.min_count < 1:
        raise ConfigError(f"vocab.min_count={v.min_count} is invalid: it must be at least 1")
    d = cfg.dataset
    for name in v.text:
        _check_text(name, "vocab.text")
    has_splits = v.training_splits and (d.nli_train is not None or d.sts_train is not None)
    if not has_splits and not v.files and not v.text:
        raise ConfigError(f"vocab=corpus has no text: dataset={d.name} gives no training split "
                          "(or vocab.training_splits=false) and vocab.files is empty: add "
                          "vocab.files=[path/to/text.txt]")


def _check_text(name: str, where: str) -> None:
    if name not in languages.TEXTS:
        raise ConfigError(f"{where}: unknown text source '{name}': choose from "
                          f"{', '.join(languages.TEXTS)}")


def _check_stage(name: str, stage: StageConfig | DistillConfig) -> None:
    size = "max_sentences" if isinstance(stage, DistillConfig) else "max_pairs"
    checks = [
        (getattr(stage, size) is None or getattr(stage, size) >= 1, size, "at least 1, or null"),
        (stage.epochs >= 1, "epochs", "at least 1"),
        (stage.batch_size >= 1, "batch_size", "at least 1"),
        (stage.lr > 0, "lr", "positive"),
        (0 <= stage.warmup_ratio < 1, "warmup_ratio", "in [0, 1)"),
    ]
    for ok, key, rule in checks:
        if not ok:
            raise ConfigError(f"phase.{name}.{key}={getattr(stage, key)} is invalid: "
                              f"it must be {rule}")


EVAL_BATCH = {"cpu": 64, "cuda": 256}  # eval.batch_size=null: sentences per encode batch


def eval_batch_size(configured: int | None, device: str) -> int:
    """The configured batch, else one that suits the device (a GPU takes far larger ones)."""
    if configured is not None:
        return configured
    return EVAL_BATCH["cuda" if device.startswith("cuda") else "cpu"]


@dataclass
class JobData:
    sts_test: Dataset
    nli_train: Dataset | None
    nli_test: Dataset | None
    sts_train: Dataset | None
    calibration: list[str] | None = None  # scored strategies: sentences the layers are scored on
    sts_dev: Dataset | None = None  # greedy_dev: the STS dev pairs it scores removals on
    distill: list[str] | None = None  # the distillation stage's sentences
    vocab_corpus: list[str] | None = None  # vocab=corpus: the texts whose tokens are kept
    # The language sets it evaluates, and how many sentences of them each training text held
    # (left out: `languages.exclude`).
    languages: list[languages.Loaded] = dataclasses.field(default_factory=list)
    held_out_removed: dict[str, int] = dataclasses.field(default_factory=dict)
    # The distillation sentences' mix: source ("training", "file" or a text source) -> count.
    distill_mix: dict[str, int] = dataclasses.field(default_factory=dict)


def load_data(cfg: TrainConfig) -> JobData:
    """Read and check every split the job needs, before any model loads."""
    d, phase, seed = cfg.dataset, cfg.phase, cfg.seed
    nli_train = nli_test = sts_train = None
    if phase.nli is not None:
        nli_train = subsample(load_split(d.nli_train, "nli", "dataset.nli_train", d.num_labels),
                              phase.nli.max_pairs, seed)
        if d.nli_test is not None:
            nli_test = subsample(load_split(d.nli_test, "nli", "dataset.nli_test", d.num_labels),
                                 cfg.eval.nli_test_max_pairs, seed)
    if phase.sts is not None:
        sts_train = subsample(load_split(d.sts_train, "sts", "dataset.sts_train"),
                              phase.sts.max_pairs, seed)
    sts_test = load_split(d.sts_test, "sts", "dataset.sts_test")
    data = JobData(sts_test=sts_test, nli_train=nli_train, nli_test=nli_test,
                   sts_train=sts_train)
    data.languages = languages.load(languages.job_sets(cfg), cfg.eval.language_files)
    held = languages.held_out(data.languages)
    if phase.distill is not None:
        data.distill = _distill_sentences(cfg, sts_test, held, data)
    if cfg.vocab.name is VocabKind.corpus:
        data.vocab_corpus = _vocab_corpus(cfg, held, data.held_out_removed)
    p = cfg.pruning
    scored = p.layers is None and p.keep is not None and p.strategy in SCORED
    if scored and p.keep < cfg.base_model.num_layers:
        c = p.calibration
        if p.strategy is Strategy.greedy_dev:
            dev = load_split(d.sts_dev, "sts", "dataset.sts_dev")
            if c.dev_pairs > len(dev):
                raise ConfigError(f"pruning.calibration.dev_pairs={c.dev_pairs} but "
                                  f"dataset.sts_dev has {len(dev)} pairs: set it to at most "
                                  f"{len(dev)}")
            data.sts_dev = subsample(dev, c.dev_pairs, seed)
        else:
            name = c.split.value
            pairs = load_split(getattr(d, name), "nli" if name.startswith("nli") else "sts",
                               f"dataset.{name}", d.num_labels)
            data.calibration = sample_sentences(
                [*pairs["sentence1"], *pairs["sentence2"]], c.max_sentences, seed, (),
                "pruning.calibration.max_sentences", f"dataset.{name} has")
    return data


def _training_sentences(d: DatasetConfig) -> list[str]:
    """Both sentences of every pair of the training splits (nli_train, sts_train), in order."""
    sentences: list[str] = []
    for name, kind in (("nli_train", "nli"), ("sts_train", "sts")):
        split = getattr(d, name)
        if split is not None:
            pairs = load_split(split, kind, f"dataset.{name}", d.num_labels)
            sentences += [*pairs["sentence1"], *pairs["sentence2"]]
    return sentences


def distinct_sentences(pairs: Dataset) -> list[str]:
    """The distinct sentences of a split of pairs, in order of first appearance."""
    return list(dict.fromkeys([*pairs["sentence1"], *pairs["sentence2"]]))


def _distill_sentences(cfg: TrainConfig, sts_test: Dataset, held: set[str],
                       data: JobData) -> list[str]:
    """A seeded sample of the distinct sentences of `phase.distill.sentences_file`, else of the
    training splits (nli_train, sts_train: never a test split), then of each text source of
    `phase.distill.text`; sentences that are also STS test sentences or sentences of an evaluated
    language set (`held`) are left out, so the student never learns targets of what it is scored
    on. `data` gets how many distinct sentences the language sets held, and the mix."""
    stage, d = cfg.phase.distill, cfg.dataset
    if stage.sentences_file is not None:
        path = Path(stage.sentences_file).expanduser()
        sentences = read_sentences(path, "phase.distill.sentences_file")
        held_by = f"{path} holds"
    else:
        sentences = _training_sentences(d)
        held_by = "the training splits hold"
    test = {*sts_test["sentence1"], *sts_test["sentence2"]}
    origin = "file" if stage.sentences_file is not None else "training"
    sources = [(origin, sentences, stage.max_sentences, "phase.distill.max_sentences", held_by)
               ] if sentences or not stage.files else []  # files alone: no training splits
    sources += [(name, languages.read_text(name), count, f"phase.distill.text.{name}",
                 f"text source '{name}' holds") for name, count in stage.text.items()
                if count != 0]  # 0: a preset's source left out (~key cannot delete it in a sweep)
    for i, file in enumerate(stage.files):
        path = Path(file).expanduser()
        sources.append((f"files.{i}", read_sentences(path, f"phase.distill.files[{i}]"), None,
                        f"phase.distill.files[{i}]", f"{path} holds"))
    chosen: dict[str, None] = {}
    data.held_out_removed["distill"] = 0
    for name, texts, count, setting, source in sources:
        texts, held_count = languages.exclude(texts, held)
        data.held_out_removed["distill"] += held_count
        sample = [t for t in sample_sentences(texts, count, cfg.seed, test, setting, source)
                  if t not in chosen]  # a sentence two sources share counts once, for the first
        data.distill_mix[name] = len(sample)
        chosen.update(dict.fromkeys(sample))
    return list(chosen)


def _vocab_corpus(cfg: TrainConfig, held: set[str], removed: dict[str, int]) -> list[str]:
    """The distinct texts of the vocabulary corpus, with the model's prefix (the tokens of
    what the model will tokenize): every sentence of the training splits, of the distillation
    sentences file, of `vocab.files` and of the text sources of `vocab.text`. Test splits and
    the sentences of evaluated language sets (`held`; `removed` gets their count) never are."""
    v, d = cfg.vocab, cfg.dataset
    texts: list[str] = []
    if v.training_splits:
        texts += _training_sentences(d)
        distill = cfg.phase.distill
        if distill is not None and distill.sentences_file is not None:
            texts += read_sentences(Path(distill.sentences_file).expanduser(),
                                    "phase.distill.sentences_file")
        for i, file in enumerate(distill.files if distill is not None else []):
            texts += read_sentences(Path(file).expanduser(), f"phase.distill.files[{i}]")
    for i, file in enumerate(v.files):
        texts += read_sentences(Path(file).expanduser(), f"vocab.files[{i}]")
    for name in v.text:
        texts += languages.read_text(name)
    texts, removed["vocab"] = languages.exclude(texts, held)
    prefix = cfg.base_model.prefix
    return [prefix + t for t in texts]


@dataclass
class Checked:
    """A job whose config, model files and data passed every check; nothing is loaded yet."""

    kept: list[int] | None  # None: a scored strategy chooses them once the model is loaded
    device: str
    model_path: str
    data: JobData
    fingerprint: Fingerprint
    references: list[references.Reference] = dataclasses.field(default_factory=list)


def check(cfg: TrainConfig) -> Checked:
    """Every check that needs no model weights: config, model files and depth, every data split.

    A sweep runs it for all its jobs before it writes or logs anything; a job runs it before
    its MLflow run opens.
    """
    kept = plan(cfg)
    refs = references.plan(cfg)
    device = modeling.resolve_device(cfg.device)
    model_path = modeling.locate(cfg.base_model)
    modeling.check_depth(cfg.base_model, model_path)
    if cfg.vocab.name is VocabKind.corpus:
        vocab.check_files(Path(model_path))
    data = load_data(cfg)
    return Checked(kept=kept, device=device, model_path=model_path, data=data,
                   fingerprint=fingerprint(cfg, kept, device, model_path), references=refs)


def run_job(cfg: TrainConfig, output_dir: Path, params: dict[str, str],
            tags: dict[str, str] | None = None, parent_run_id: str | None = None,
            lock_dir: Path | None = None, job: int | None = None) -> dict[str, float]:
    """Run one pruning experiment; returns the metrics also written to output_dir/metrics.json.

    A finished run with the same fingerprint (config, device, precision, package versions,
    file contents: see `sbert_exp.fingerprint`) is reused instead of trained again, its saved
    model linked into this job's folder; with cfg.force only a run of this sweep
    (`parent_run_id`) is. Jobs given a `lock_dir` (a sweep's folder) take the config's lock
    first, so parallel jobs with one config train it once: the others wait, then reuse. A job
    that already finished in an earlier attempt of the same sweep (`job`, its number) only
    restores its folder.
    """
    started = time.perf_counter()
    # 1. Check the config, the model's files and every data split: cheap, and before any load.
    checked = check(cfg)
    tracker = Tracker(cfg.tracking)
    if parent_run_id is None:
        tracker.end_dead_runs()  # a sweep does this once, before its jobs
    metrics = _run(cfg, checked, tracker, output_dir, params, tags, parent_run_id, lock_dir, job,
                   started)
    if checked.references and not cfg.tracking.enabled:
        log.info("references: tracking.enabled=false, so no run would hold them: skipped")
        return metrics
    for ref in checked.references:
        _reference(cfg, checked, tracker, ref, params, parent_run_id, lock_dir)
    return metrics


def _run(cfg: TrainConfig, checked: Checked, tracker: Tracker, output_dir: Path,
         params: dict[str, str], tags: dict[str, str] | None, parent_run_id: str | None,
         lock_dir: Path | None, job: int | None, started: float) -> dict[str, float]:
    kept, fp = checked.kept, checked.fingerprint
    run_name = "-".join([cfg.base_model.name, *pruning_label(
        cfg.pruning.keep, cfg.pruning.strategy, cfg.pruning.layers)])
    if cfg.base_model.init is Init.random:
        run_name += "-random"
    tags = {**(tags or {}), CONFIG_KEY_TAG: fp.key}
    if job is not None:
        tags[JOB_TAG] = str(job)
    params = {**params, **{f"fingerprint.{k}": v for k, v in fp.parts.items()}}
    if kept is not None:
        params["pruning.kept_layers"] = ",".join(map(str, kept))
    _remove_partial_saves(output_dir)
    with _config_lock(lock_dir, fp.key):
        if parent_run_id is not None and job is not None:
            done = tracker.find_finished(fp.key, parent_run_id, job)
            if done and _restore(done, cfg.save_model, output_dir):
                log.info("job %d already finished in this sweep (run %s): folder restored",
                         job, done[0].run_id)
                return done[0].metrics
        if cfg.force and parent_run_id is None:
            previous = []
        else:
            previous = tracker.find_finished(fp.key, parent_run_id if cfg.force else None)
        model = output_dir / "model"
        if previous and cfg.save_model and not _link_model(previous, model):
            log.info("finished run %s has no saved model left: training again",
                     previous[0].run_id)
            previous = []
        if previous:
            origin = previous[0]
            log.info("same config as finished run %s: reusing its results (force=true reruns)",
                     origin.run_id)
            reuse_tags = {**tags, REUSED_TAG: origin.run_id}
            if cfg.save_model:
                reuse_tags[MODEL_DIR_TAG] = str(model.resolve())
            if origin.logged_model:  # the same model: the report can register it from here
                reuse_tags[LOGGED_MODEL_TAG] = origin.logged_model
            with tracker.run(run_name, tags=reuse_tags, parent_run_id=parent_run_id) as run:
                run.log_params({"pruning.kept_layers": origin.kept_layers or "", **params})
                run.log_metrics(origin.metrics)
                write_text(output_dir / "metrics.json",
                           json.dumps(origin.metrics, indent=2, sort_keys=True))
                run.log_artifact(output_dir / "metrics.json")
            return origin.metrics
        with tracker.run(run_name, tags=tags, parent_run_id=parent_run_id) as run:
            run.log_params(params)
            run.log_datasets(_datasets(cfg, fp))
            return _train_and_evaluate(cfg, checked, output_dir, run, started)


def _reference(cfg: TrainConfig, checked: Checked, tracker: Tracker, ref: references.Reference,
               params: dict[str, str], parent_run_id: str | None,
               lock_dir: Path | None) -> None:
    """One reference run of this base model in this sweep (none if the sweep has it already):
    reused from a finished run with the same key whose folder is still there, else measured."""
    key = references.key(ref, checked.fingerprint.parts, cfg)
    tags = {CONFIG_KEY_TAG: key, references.REFERENCE_TAG: ref.form}
    name = f"{cfg.base_model.name}-reference-{ref.name}"
    ref_params = {k: v for k, v in params.items() if k.startswith(("base_model.", "eval."))}
    ref_params.update({"reference.name": ref.name, "reference.form": ref.form,
                       "reference.label": ref.label(cfg.base_model.name)})
    with _config_lock(lock_dir, key):
        if parent_run_id is not None and tracker.find_finished(key, parent_run_id):
            return
        previous = [] if cfg.force else [
            r for r in tracker.find_finished(key)
            if r.model_dir and Path(r.model_dir).exists()]
        if previous:
            log.info("reference %s: reusing finished run %s", ref.name, previous[0].run_id)
            with tracker.run(name, tags={**tags, REUSED_TAG: previous[0].run_id,
                                         MODEL_DIR_TAG: previous[0].model_dir},
                             parent_run_id=parent_run_id) as run:
                run.log_params(ref_params)
                run.log_metrics(previous[0].metrics)
            return
        bs = eval_batch_size(cfg.eval.batch_size, "cpu")
        lang_teacher = _language_teacher(cfg, checked, checked.device, bs)
        with tracker.run(name, tags=tags, parent_run_id=parent_run_id) as run:
            run.log_params(ref_params)
            metrics, model_dir = references.run(ref, cfg, checked, bs, lang_teacher)
            run.set_tags({MODEL_DIR_TAG: str(model_dir.resolve())})
            run.log_metrics(metrics)


def _language_teacher(cfg: TrainConfig, checked: Checked, device: str, batch_size: int,
                      loaded=None) -> dict:
    """Sentence -> the teacher's embedding, for every sentence of the job's language sets (from
    the teacher's store; `loaded`: see `teacher.embeddings`). Empty when the job has none."""
    sets = checked.data.languages
    if not sets:
        return {}
    sentences = list(dict.fromkeys(s for one in sets for s in one.sentences))
    found = teacher.embeddings(cfg.base_model, checked.model_path, device, sentences,
                               batch_size, loaded=loaded, purpose="language sets").embeddings
    return dict(zip(sentences, found, strict=True))


SPLIT_CONTEXT = {"nli_train": "training", "sts_train": "training", "sts_dev": "validation",
                 "nli_test": "evaluation", "sts_test": "evaluation"}


def _datasets(cfg: TrainConfig, fp: Fingerprint) -> list[tuple[str, str, str, str]]:
    """(name, digest, source, context) of each split the job reads, for the run's inputs."""
    found = []
    for name, split in read_splits(cfg).items():
        digest = fp.parts.get(f"data.{name}")
        if digest is None:
            continue
        source = (split.location if split.source is Source.hub
                  else str(resolve_path(split, f"dataset.{name}")))
        found.append((f"{cfg.dataset.name}/{name}", digest, source, SPLIT_CONTEXT[name]))
    return found


def _export(cfg: TrainConfig, checked: Checked, output_dir: Path, data: JobData,
            batch_size: int, lang_teacher: dict) -> dict[str, float]:
    """Export the saved model, score the export on STS test and the language sets, and time it
    against the unpruned fp32 base model: same sentences, same process, alternating rounds, on
    the CPU (ONNX Runtime and torch's int8 kernels run there)."""
    started = time.perf_counter()
    folder = export.export(output_dir / "model", cfg.export, output_dir / f"model_{cfg.export}")
    seconds = time.perf_counter() - started
    served = export.load(folder)
    metrics = {f"export/sts_test/{k}": v
               for k, v in evaluation.sts_scores(served, data.sts_test, batch_size).items()}
    metrics.update({f"export/{k}": v for k, v in languages.scores(
        served, data.languages, lang_teacher, batch_size).items()})
    if cfg.eval.speed_rounds:
        pretrained = dataclasses.replace(cfg.base_model, init=Init.pretrained)
        unpruned = modeling.load_base(pretrained, "cpu", checked.model_path)
        sentences = distinct_sentences(data.sts_test)[: cfg.eval.speed_sentences]
        best = evaluation.best_encode_seconds({"unpruned": unpruned, "export": served},
                                              sentences, batch_size, cfg.eval.speed_rounds)
        metrics.update({"export/sentences_per_s": len(sentences) / best["export"],
                        "export/speedup_vs_unpruned": best["unpruned"] / best["export"]})
    metrics.update({"export/disk_mb": modeling.disk_mb(folder), "export/seconds": seconds})
    return metrics


def _remove_partial_saves(output_dir: Path) -> None:
    """A process killed while saving leaves its temporary model folder: drop it."""
    for partial in output_dir.glob(".model*-*"):  # .model-*, .model_<export>-*
        shutil.rmtree(partial, ignore_errors=True)


def _restore(done: list[FinishedRun], save_model: bool, output_dir: Path) -> bool:
    """Give a job folder the outputs of its finished run; False when the model is gone."""
    if save_model and not _link_model(done, output_dir / "model"):
        return False
    write_text(output_dir / "metrics.json", json.dumps(done[0].metrics, indent=2,
                                                       sort_keys=True))
    return True


def _link_tree(source: Path, target: Path) -> None:
    with atomic_dir(target) as work:
        for path in sorted(source.rglob("*")):
            dest = work / path.relative_to(source)
            if path.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, dest)
            except OSError:
                shutil.copy2(path, dest)


def _link_model(runs: list[FinishedRun], target: Path) -> bool:
    """Put a saved model of `runs` at `target`: hard links to its files (no extra disk space,
    and they outlive the original folder), copies across file systems. False when none of the
    runs' models is still on disk."""
    for found in runs:
        source = Path(found.model_dir) if found.model_dir else None
        if source is None or not (source / "modules.json").is_file():
            continue
        if source.resolve() == target.resolve():
            return True  # already there (the same job folder)
        # The model, and its exports (model_<export>/) beside it.
        for folder in [source, *sorted(source.parent.glob(f"{source.name}_*"))]:
            if folder.is_dir():
                _link_tree(folder, target.parent / (target.name + folder.name[len(source.name):]))
        log.info("model linked from %s", source)
        return True
    return False


def _choose_layers(cfg: TrainConfig, checked: Checked, model, batch_size: int, run: Run,
                   output_dir: Path) -> selection.Choice:
    """Score the loaded base model's layers (once per model and calibration set: cached) and
    keep the best; the scores go to MLflow as a metric history and a bar chart."""
    p, fp = cfg.pruning, checked.fingerprint
    data = checked.data
    calibration = data.calibration if data.calibration is not None else [
        f"{a}\t{b}\t{s}" for a, b, s in zip(data.sts_dev["sentence1"], data.sts_dev["sentence2"],
                                            data.sts_dev["score"], strict=True)]
    # What the scores depend on: not the training data or phase, so one sweep scores once.
    model_parts = {k: v for k, v in fp.parts.items() if not k.startswith("data.")}
    key = selection.cache_key(model_parts, cfg.base_model.init.value, cfg.seed,
                              cfg.base_model.prefix, cfg.base_model.max_seq_length,
                              batch_size, calibration)
    choice = selection.choose(model, p.strategy, p.keep, sentences=data.calibration,
                              dev=data.sts_dev, batch_size=batch_size, cache_key=key)
    run.log_params({"pruning.kept_layers": ",".join(map(str, choice.kept))})
    name = selection.SCORE_METRIC[p.strategy]
    for step, score in enumerate(choice.scores):
        run.log_metrics({name: score}, step=step)
    from sbert_exp.report import plot_layer_scores

    chart = plot_layer_scores(p.strategy.value, choice.scores, choice.kept,
                              output_dir / "layer_scores.png")
    run.log_artifact(chart)
    return choice


@contextlib.contextmanager
def _config_lock(lock_dir: Path | None, key: str) -> Iterator[None]:
    """Hold the lock of one config key in lock_dir (no lock when lock_dir is None)."""
    if lock_dir is None:
        yield
        return
    from filelock import FileLock, Timeout

    lock_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_dir / f"{key}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("a job with the same config is running: waiting to reuse its result")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _train_and_evaluate(cfg: TrainConfig, checked: Checked, output_dir: Path, run: Run,
                        started: float) -> dict[str, float]:
    from transformers import set_seed

    kept, data, device = checked.kept, checked.data, checked.device
    bs = eval_batch_size(cfg.eval.batch_size, device)
    set_seed(cfg.seed)
    metrics: dict[str, float] = {}

    def record(new: dict[str, float], step: int = 0) -> None:
        metrics.update(new)
        run.log_metrics(new, step=step)
        for name, value in new.items():
            log.info("%s = %.4f", name, value)

    # 2. Load the base model; choose its layers by their scores if the strategy says so.
    model = modeling.load_base(cfg.base_model, device, checked.model_path, cfg.seed)
    if kept is None:
        choice = _choose_layers(cfg, checked, model, bs, run, output_dir)
        kept = choice.kept
        record({"time/layer_choice_s": choice.seconds})

    # The distillation targets: the unpruned pretrained model's embeddings (cached). A
    # pretrained student is that model until it is pruned; a random-init one needs the teacher.
    targets = None
    unpruned = model if cfg.base_model.init is Init.pretrained else None
    if cfg.phase.distill is not None:
        targets = teacher.embeddings(cfg.base_model, checked.model_path, device, data.distill,
                                     bs, loaded=unpruned, purpose="distillation").embeddings

    # The reference a shipped model is measured against: the unpruned pretrained base as it
    # is, no training, on STS test. Its embeddings are the teacher's (cached), so a sweep
    # encodes them once per base model.
    test_sentences = distinct_sentences(data.sts_test)
    reference = teacher.embeddings(cfg.base_model, checked.model_path, device, test_sentences,
                                   bs, loaded=unpruned, purpose="STS test reference")
    scores = evaluation.sts_from_embeddings(
        dict(zip(test_sentences, reference.embeddings, strict=True)), data.sts_test)
    record({f"base_model/sts_test/{k}": v for k, v in scores.items()})
    # The base as it is has a size too: the folder it loads from, for the report's board.
    record({"base_model/disk_mb": modeling.disk_mb(Path(checked.model_path))})

    # The language sets: the teacher's embeddings of their sentences (cached, like the STS
    # reference) are what agreement compares with; they also give the base model's scores.
    sets = data.languages
    lang_teacher = _language_teacher(cfg, checked, device, bs, loaded=unpruned)
    if sets:
        record({f"base_model/{loaded.metric}": languages.score(loaded, lang_teacher,
                                                                lang_teacher)
                for loaded in sets})
    record({f"data/held_out_removed/{k}": float(v) for k, v in data.held_out_removed.items()})
    record({f"data/distill_sentences/{k}": float(v) for k, v in data.distill_mix.items()})

    # Time the model whole and pruned on the same sentences.
    if cfg.eval.speed_rounds:
        sentences = test_sentences[: cfg.eval.speed_sentences]
        speed = evaluation.speed_vs_unpruned(model, kept, sentences, bs, cfg.eval.speed_rounds)
        record({f"speed/{k}": v for k, v in speed.items()})

    # 3. Prune in place; trim the vocabulary and freeze the embeddings if asked.
    modeling.prune(model, kept)
    if cfg.vocab.name is VocabKind.corpus:
        started_trim = time.perf_counter()
        ids = vocab.used_token_ids(model.tokenizer, data.vocab_corpus, cfg.vocab.min_count,
                                   cfg.vocab.single_chars)
        vocab.trim(model, ids)
        record({"time/vocab_trim_s": time.perf_counter() - started_trim})
    if cfg.phase.freeze_embeddings:
        modeling.freeze_embeddings(model)
    counts = modeling.param_counts(model)
    record({
        "model/num_layers": float(len(kept)),
        "model/params_total": float(counts.total),
        "model/params_embeddings": float(counts.embeddings),
        "model/params_encoder": float(counts.encoder),
        "model/params_trainable": float(counts.trainable),
        "model/size_mb": counts.size_mb,
        "model/vocab_size": float(modeling.hf_model(model).get_input_embeddings().num_embeddings),
    })

    # 4. Evaluate, then fine-tune stage by stage, evaluating after each.
    def eval_sts(tag: str, step: int) -> None:
        scores = {f"sts_test/{k}": v
                  for k, v in evaluation.sts_scores(model, data.sts_test, bs).items()}
        scores.update(languages.scores(model, sets, lang_teacher, bs))
        record({f"{tag}/{k}": v for k, v in scores.items()})
        # The unprefixed name always holds the latest score; its history has one step per
        # evaluation (0 before training, 1 after NLI, 2 after distillation, 3 after STS).
        record(scores, step=step)

    # eval.every_stage=false evaluates once, after the last stage. The stages run in a fixed
    # order, NLI, distillation, STS; each evaluation has its own step (0, 1, 2, 3).
    every, phase = cfg.eval.every_stage, cfg.phase
    nli, distill, sts = phase.nli, phase.distill, phase.sts
    if every or (nli is None and distill is None and sts is None):
        eval_sts("before", 0)
    if nli is not None:
        classifier, result = training.train_nli(model, data.nli_train, nli,
                                                cfg.dataset.num_labels, cfg.seed, run.log_metrics)
        record(result.metrics("nli"))
        if data.nli_test is not None:
            acc = evaluation.nli_accuracy(model, classifier, data.nli_test, bs)
            record({f"nli_test/{k}": v for k, v in acc.items()})
        if every or (distill is None and sts is None):
            eval_sts("after_nli", 1)
    if distill is not None:
        result = training.train_distill(model, data.distill, targets, distill, cfg.seed,
                                        run.log_metrics)
        record(result.metrics("distill"))
        if every or sts is None:
            eval_sts("after_distill", 2)
    if sts is not None:
        result = training.train_sts(model, data.sts_train, sts, cfg.seed, run.log_metrics)
        record(result.metrics("sts"))
        eval_sts("after_sts", 3)

    # 5. Save the pruned, fine-tuned model and the metrics.
    if cfg.save_model:
        with atomic_dir(output_dir / "model") as work:
            model.save(str(work))
        run.set_tags({MODEL_DIR_TAG: str((output_dir / "model").resolve())})
        record({"model/disk_mb": modeling.disk_mb(output_dir / "model")})
        if cfg.export is not ExportBackend.none:
            record(_export(cfg, checked, output_dir, data, bs, lang_teacher))
    record({"time/total_s": time.perf_counter() - started})
    write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))
    run.log_artifact(output_dir / "metrics.json")
    run.log_artifact(output_dir / ".hydra", "hydra")
    if cfg.tracking.log_model:
        run.log_model(model, cfg.tracking.uri)
    return metrics
