"""A job's checks before anything loads: its config, model files and depth, every data split."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from sbert_exp import references
from sbert_exp.config.schema import (
    DistillConfig,
    ExportBackend,
    StageConfig,
    TrainConfig,
    VocabKind,
)
from sbert_exp.data import languages
from sbert_exp.data.inputs import JobData, load_data
from sbert_exp.errors import ConfigError
from sbert_exp.forms import export, vocab
from sbert_exp.job.fingerprint import Fingerprint, fingerprint
from sbert_exp.model import modeling
from sbert_exp.model.precision import precision
from sbert_exp.pruning.rules import PruningError, kept_layers
from sbert_exp.pruning.strategies import Evidence, evidence
from sbert_exp.training import objectives


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
        _check_objective(distill)
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
    if evidence(p.strategy) is Evidence.sts_dev:
        if d.sts_dev is None:
            raise ConfigError(f"pruning.strategy={p.strategy} scores layer removals on STS dev "
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


def _check_objective(stage: DistillConfig) -> None:
    weights = objectives.weights(stage)
    for key, weight in weights.items():
        if not weight >= 0:
            raise ConfigError(f"phase.distill.{key}={weight} is invalid: it must be at least 0")
    if not any(weights.values()):
        names = ", ".join(f"phase.distill.{key}" for key in weights)
        raise ConfigError(f"{names} are all 0: the loss is their weighted sum, so give at least "
                          "one a positive weight")


@dataclass
class Checked:
    """A job whose config, model files and data passed every check; nothing is loaded yet."""

    kept: list[int] | None  # None: a scored strategy chooses them once the model is loaded
    device: str
    precision: str  # fp32, bf16 or fp16: cfg.precision on this device (model.precision.precision)
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
    chosen = precision(device, cfg.precision)
    model_path = modeling.locate(cfg.base_model)
    modeling.check_depth(cfg.base_model, model_path)
    if cfg.vocab.name is VocabKind.corpus:
        vocab.check_files(Path(model_path))
    data = load_data(cfg)
    return Checked(kept=kept, device=device, precision=chosen, model_path=model_path, data=data,
                   fingerprint=fingerprint(cfg, kept, device, model_path), references=refs)
