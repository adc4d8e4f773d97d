"""One job's steps once its run is open: load, choose layers, measure the base, prune, train
stage by stage, evaluate, save, export."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from sbert_exp import evaluation, forms, selection
from sbert_exp.config.schema import (
    ExportBackend,
    Init,
    Source,
    TrainConfig,
    VocabKind,
)
from sbert_exp.data.inputs import JobData, distinct_sentences, eval_batch_size
from sbert_exp.data.readers import (
    resolve_path,
)
from sbert_exp.evaluation import intervals
from sbert_exp.evaluation.intervals import Sample
from sbert_exp.evaluation.languages import set_sample, set_score
from sbert_exp.forms.card import Card, describe
from sbert_exp.job.checks import Checked
from sbert_exp.job.fingerprint import Fingerprint, read_splits
from sbert_exp.model import modeling
from sbert_exp.model.precision import describe_precision, precision
from sbert_exp.pruning.strategies import STRATEGIES
from sbert_exp.tracking.runs import Run
from sbert_exp.tracking.tags import LOGGED_BF16_TAG, LOGGED_EXPORT_TAG, MODEL_DIR_TAG
from sbert_exp.training import stages as training
from sbert_exp.training import teacher
from sbert_exp.utils.atomic import write_text

log = logging.getLogger(__name__)


def language_teacher(cfg: TrainConfig, checked: Checked, device: str, batch_size: int,
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


def datasets_of(cfg: TrainConfig, fp: Fingerprint) -> list[tuple[str, str, str, str]]:
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


@dataclass(frozen=True)
class Derived:
    """A form built from the job's saved model: its backend, the prefix of its metrics and the
    tag of its logged model."""
    backend: ExportBackend
    prefix: str
    tag: str


def derived_forms(cfg: TrainConfig) -> list[Derived]:
    """The export asked for (`export/...`), and the bf16 form (`bf16/...`) where the CPU, which
    serves them, computes in bf16 (`precision`: auto on a CPU with bf16 arithmetic, or bf16)."""
    found = [] if cfg.export is ExportBackend.none else [
        Derived(cfg.export, "export", LOGGED_EXPORT_TAG)]
    if precision("cpu", cfg.precision) == "bf16" and cfg.export is not ExportBackend.bf16:
        found.append(Derived(ExportBackend.bf16, "bf16", LOGGED_BF16_TAG))
    return found


def export_and_score(cfg: TrainConfig, checked: Checked, output_dir: Path, batch_size: int,
                     lang_teacher: dict, run: Run, form: Derived,
                     against: dict[str, dict[str, Sample]]) -> dict[str, float]:
    """Build `form` from the saved model, then measure it (`forms.measure`: STS test, the
    language sets, their intervals, speed against the unpruned fp32 base, size), on the CPU,
    where ONNX Runtime and torch's int8 and bf16 kernels run; `against`: the samples it is
    compared with, by name (vs_model: its fp32 model's, vs_base: the base's). With
    tracking.log_model, it is a logged model too."""
    data = checked.data
    started = time.perf_counter()
    folder = forms.export_saved(output_dir / "model", form.backend)
    seconds = time.perf_counter() - started
    unpruned = (forms.load_unpruned(cfg.base_model, checked.model_path)
                if cfg.eval.speed_rounds else None)
    found, samples = forms.measure(forms.load(folder), folder, unpruned, data.sts_test,
                                   distinct_sentences(data.sts_test)[: cfg.eval.speed_sentences],
                                   language_sets=data.languages, teacher=lang_teacher,
                                   batch_size=batch_size, rounds=cfg.eval.speed_rounds)
    for name, theirs in against.items():
        found.update(intervals.versus(samples, theirs, name))
    # A job's own names for its export: export/<score>, export/<speed or size figure>.
    p = form.prefix
    metrics = {f"{p}/{k.split('/', 1)[1] if k.startswith(('speed/', 'model/')) else k}": v
               for k, v in found.items()}
    metrics[f"{p}/seconds"] = seconds
    if cfg.tracking.log_model:
        run.log_folder_model(folder, folder.name, metrics, form.tag)
    return metrics


def choose_layers(cfg: TrainConfig, checked: Checked, model, batch_size: int,
                  run: Run) -> selection.Choice:
    """Score the loaded base model's layers (once per model and calibration set: cached) and
    keep the best; the scores go to MLflow as a metric history (the report draws it)."""
    p, fp = cfg.pruning, checked.fingerprint
    data = checked.data
    calibration = data.calibration if data.calibration is not None else [
        f"{a}\t{b}\t{s}" for a, b, s in zip(data.sts_dev["sentence1"], data.sts_dev["sentence2"],
                                            data.sts_dev["score"], strict=True)]
    # What the scores depend on: not the training data or phase, so one sweep scores once; nor
    # the job's precision, since layers are scored in fp32.
    model_parts = {k: v for k, v in fp.parts.items()
                   if not k.startswith(("data.", "precision."))} | {"precision": "fp32"}
    key = selection.cache_key(model_parts, cfg.base_model.init.value, cfg.seed,
                              cfg.base_model.prefix, cfg.base_model.max_seq_length,
                              batch_size, calibration)
    choice = selection.choose(model, p.strategy, p.keep, sentences=data.calibration,
                              dev=data.sts_dev, batch_size=batch_size, cache_key=key)
    run.log_params({"pruning.kept_layers": ",".join(map(str, choice.kept))})
    name = selection.METRICS[p.strategy]
    for step, score in enumerate(choice.scores):
        run.log_metrics({name: score}, step=step)
    return choice


class Recorder:
    """The job's metrics: each one logged to its run (with a step), kept, and logged as a line."""

    def __init__(self, run: Run):
        self.run, self.metrics = run, {}

    def __call__(self, new: dict[str, float], step: int = 0) -> None:
        self.metrics.update(new)
        self.run.log_metrics(new, step=step)
        for name, value in new.items():
            log.info("%s = %.4f", name, value)


def train_and_evaluate(cfg: TrainConfig, checked: Checked, output_dir: Path, run: Run,
                       started: float) -> dict[str, float]:
    """The job's steps in order; returns its metrics (also in output_dir/metrics.json)."""
    from transformers import set_seed

    data, device = checked.data, checked.device
    bs = eval_batch_size(cfg.eval.batch_size, device)
    set_seed(cfg.seed)
    record = Recorder(run)
    log.info(describe_precision(device, cfg.precision, checked.precision))

    # 2. Load the base model; choose its layers by their scores if the strategy says so.
    model = modeling.load_base(cfg.base_model, device, checked.model_path, cfg.seed)
    kept = checked.kept
    if kept is None:
        choice = choose_layers(cfg, checked, model, bs, run)
        kept = choice.kept
        record({"time/layer_choice_s": choice.seconds})
    # A pretrained student is the teacher until it is pruned; a random-init one needs it loaded.
    unpruned = model if cfg.base_model.init is Init.pretrained else None
    targets = None  # the distillation targets: the unpruned pretrained model's embeddings
    if cfg.phase.distill is not None:
        targets = teacher.embeddings(cfg.base_model, checked.model_path, device, data.distill,
                                     bs, loaded=unpruned, purpose="distillation").embeddings
    lang_teacher, base = _measure_base(cfg, checked, unpruned, bs, record)
    if cfg.eval.speed_rounds:  # the model whole and pruned, timed on the same sentences
        sentences = distinct_sentences(data.sts_test)[: cfg.eval.speed_sentences]
        speed = forms.speed_vs_unpruned(model, kept, sentences, bs, cfg.eval.speed_rounds)
        record({f"speed/{k}": v for k, v in speed.items()})

    # 3. Prune in place; trim the vocabulary and freeze the embeddings if asked.
    _prune(cfg, data, model, kept, record)
    # 4. Evaluate, then fine-tune stage by stage, evaluating after each.
    final = _stages(cfg, data, model, targets, lang_teacher, base, bs, run, record,
                    checked.precision)
    # 5. Save the pruned, fine-tuned model and the metrics.
    if cfg.save_model:
        describe(model, _card(cfg, kept, record.metrics), output_dir)
        forms.save(model, output_dir / "model")
        run.set_tags({MODEL_DIR_TAG: str((output_dir / "model").resolve())})
        record({"model/disk_mb": modeling.disk_mb(output_dir / "model")})
        for form in derived_forms(cfg):
            record(export_and_score(cfg, checked, output_dir, bs, lang_teacher, run, form,
                                    {intervals.VS_MODEL: final, intervals.VS_BASE: base}))
    record({"time/total_s": time.perf_counter() - started})
    write_text(output_dir / "metrics.json",
               json.dumps(record.metrics, indent=2, sort_keys=True))
    run.log_artifact(output_dir / "metrics.json")
    run.log_artifact(output_dir / ".hydra", "hydra")
    if cfg.tracking.log_model:
        run.log_model(model, cfg.tracking.uri)
    return record.metrics


def _card(cfg: TrainConfig, kept: list[int], metrics: dict[str, float]) -> Card:
    """What the saved model's card says of it."""
    p, phase = cfg.pruning, cfg.phase
    how = ("given explicitly" if p.layers is not None else "every layer" if p.keep is None
           else STRATEGIES[p.strategy].label)
    recipe = [f"{name} ({'all' if stage.max_pairs is None else f'{stage.max_pairs:,}'} pairs, "
              f"{stage.epochs} epoch{'s' if stage.epochs > 1 else ''})"
              for name, stage in (("NLI", phase.nli), ("STS", phase.sts)) if stage is not None]
    if phase.distill is not None:
        d = phase.distill
        count = "all" if d.max_sentences is None else f"{d.max_sentences:,}"
        recipe.insert(1 if phase.nli is not None else 0,
                      f"distillation from the base ({count} sentences, {d.epochs} epoch"
                      f"{'s' if d.epochs > 1 else ''}{training.objective_label(d)})")
    return Card(cfg.base_model.name, cfg.base_model.card, kept, cfg.base_model.num_layers, how,
                int(metrics.get("model/vocab_size", 0)), recipe, metrics)


def base_evaluated(cfg: TrainConfig, checked: Checked, bs: int, lang_teacher: dict,
                   loaded=None) -> tuple[dict[str, float], dict[str, Sample]]:
    """The unpruned pretrained base as it is, the reference a shipped model is measured
    against: its STS test scores and language-set scores, and their samples, all from the
    teacher's embeddings (cached: a sweep encodes them once per base model; `loaded`: see
    `teacher.embeddings`)."""
    data = checked.data
    test_sentences = distinct_sentences(data.sts_test)
    reference = teacher.embeddings(cfg.base_model, checked.model_path, checked.device,
                                   test_sentences, bs, loaded=loaded,
                                   purpose="STS test reference")
    table = dict(zip(test_sentences, reference.embeddings, strict=True))
    scores = {f"sts_test/{k}": v
              for k, v in evaluation.sts_from_embeddings(table, data.sts_test).items()}
    samples = {forms.STS_SPEARMAN: evaluation.sample_from_embeddings(table, data.sts_test)}
    for loaded_set in data.languages:
        scores[loaded_set.metric] = set_score(loaded_set, lang_teacher, lang_teacher)
        samples[loaded_set.metric] = set_sample(loaded_set, lang_teacher, lang_teacher)
    return scores, samples


def _measure_base(cfg: TrainConfig, checked: Checked, unpruned, bs: int,
                  record: Recorder) -> tuple[dict, dict[str, Sample]]:
    """`base_evaluated`, logged under base_model/ with its intervals, and the size of the folder
    the base loads from. Returns the teacher's embeddings of the language sets' sentences and
    the base's samples."""
    data = checked.data
    lang_teacher = language_teacher(cfg, checked, checked.device, bs, loaded=unpruned)
    scores, samples = base_evaluated(cfg, checked, bs, lang_teacher, loaded=unpruned)
    record({f"base_model/{k}": v for k, v in {**scores, **intervals.bounds(samples)}.items()})
    record({"base_model/disk_mb": modeling.disk_mb(Path(checked.model_path))})
    record({f"data/held_out_removed/{k}": float(v) for k, v in data.held_out_removed.items()})
    record({f"data/distill_sentences/{k}": float(v) for k, v in data.distill_mix.items()})
    return lang_teacher, samples


def _prune(cfg: TrainConfig, data: JobData, model, kept: list[int], record: Recorder) -> None:
    forms.shape(model, kept, None)
    if cfg.vocab.name is VocabKind.corpus:
        started_trim = time.perf_counter()
        forms.shape(model, None, forms.Trim(data.vocab_corpus, cfg.vocab.min_count,
                                            cfg.vocab.single_chars))
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


def _stages(cfg: TrainConfig, data: JobData, model, targets, lang_teacher: dict,
            base: dict[str, Sample], bs: int, run: Run, record: Recorder,
            precision: str) -> dict[str, Sample]:
    """The stages in a fixed order, NLI, distillation, STS, each evaluated after it (with
    eval.every_stage=false only after the last); each evaluation has its own step: 0 before
    training, 1 after NLI, 2 after distillation, 3 after STS. Each score is logged with its
    interval, and its paired difference from the base (`base`: its samples) as vs_base/.
    Returns the last evaluation's samples."""
    last: dict[str, Sample] = {}

    def eval_sts(tag: str, step: int) -> None:
        scores, samples = forms.evaluated(model, data.sts_test, data.languages, lang_teacher, bs)
        scores.update(intervals.bounds(samples))
        record({f"{tag}/{k}": v for k, v in scores.items()})
        # The unprefixed name always holds the latest score; its history has a step per
        # evaluation.
        record({**scores, **intervals.versus(samples, base, intervals.VS_BASE)}, step=step)
        last.clear()
        last.update(samples)

    every, phase = cfg.eval.every_stage, cfg.phase
    nli, distill, sts = phase.nli, phase.distill, phase.sts
    if every or (nli is None and distill is None and sts is None):
        eval_sts("before", 0)
    if nli is not None:
        classifier, result = training.train_nli(model, data.nli_train, nli,
                                                cfg.dataset.num_labels, cfg.seed, run.log_metrics,
                                                precision)
        record(result.metrics("nli"))
        if data.nli_test is not None:
            acc = evaluation.nli_accuracy(model, classifier, data.nli_test, bs)
            record({f"nli_test/{k}": v for k, v in acc.items()})
        if every or (distill is None and sts is None):
            eval_sts("after_nli", 1)
    if distill is not None:
        result = training.train_distill(model, data.distill, targets, distill, cfg.seed,
                                        run.log_metrics, precision, cfg.base_model)
        record(result.metrics("distill"))
        if every or sts is None:
            eval_sts("after_distill", 2)
    if sts is not None:
        result = training.train_sts(model, data.sts_train, sts, cfg.seed, run.log_metrics,
                                    precision)
        record(result.metrics("sts"))
        eval_sts("after_sts", 3)
    return last
