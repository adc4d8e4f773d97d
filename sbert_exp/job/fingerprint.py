"""What a job's result depends on: its config, device, precision, package versions, file contents.

Two jobs with the same fingerprint compute the same numbers, so a finished run is reused only
when its fingerprint matches. Every part is logged as a `fingerprint.*` param, so a user can
see why two runs did or did not match.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from sbert_exp.config.schema import SplitConfig, TrainConfig
from sbert_exp.data import languages
from sbert_exp.data.digests import file_digest, model_digest, split_digest
from sbert_exp.model.precision import precision
from sbert_exp.utils.versions import versions


@dataclass(frozen=True)
class Fingerprint:
    key: str  # digest of everything below; the reuse key
    parts: dict[str, str]  # fingerprint.* params: device, precision, versions, content digests


def read_splits(cfg: TrainConfig) -> dict[str, SplitConfig]:
    """The dataset splits a job reads, by name: the ones its config holds (`to_train_config`
    sets the others to null)."""
    return {f.name: getattr(cfg.dataset, f.name) for f in fields(cfg.dataset)
            if isinstance(getattr(cfg.dataset, f.name), SplitConfig)}


def fingerprint(cfg: TrainConfig, kept: list[int] | None, device: str,
                model_path: str) -> Fingerprint:
    """The reuse key of a job and its parts.

    The kept layers stand for keep/strategy/layers, so keep=all is one key for every strategy;
    tracking, saving and `force` do not change results and are left out.
    """
    parts = {"device": device.split(":")[0], "precision": precision(device, cfg.precision)}
    # A GPU job's forms are measured on the CPU, in the CPU's precision (job.steps.derived_forms).
    if (cpu := precision("cpu", cfg.precision)) != parts["precision"]:
        parts["precision.cpu"] = cpu
    parts.update({f"version.{name}": v for name, v in versions().items()})
    parts["model"] = model_digest(cfg.base_model, model_path)
    for name, split in read_splits(cfg).items():
        parts[f"data.{name}"] = split_digest(split, f"dataset.{name}")
    if cfg.phase.distill is not None and cfg.phase.distill.sentences_file is not None:
        parts["data.distill_sentences"] = file_digest(Path(cfg.phase.distill.sentences_file)
                                                      .expanduser())
    for i, file in enumerate(cfg.phase.distill.files if cfg.phase.distill is not None else []):
        parts[f"data.distill_files.{i}"] = file_digest(Path(file).expanduser())
    for i, file in enumerate(cfg.vocab.files if cfg.vocab.name.value == "corpus" else []):
        parts[f"data.vocab_files.{i}"] = file_digest(Path(file).expanduser())
    sets = languages.job_sets(cfg)
    for name in sets:
        parts[f"data.language.{name}"] = file_digest(languages.set_path(
            name, cfg.eval.language_files))
    texts = [*(cfg.phase.distill.text if cfg.phase.distill is not None else {}),
             *(cfg.vocab.text if cfg.vocab.name.value == "corpus" else [])]
    for name in dict.fromkeys(texts):
        parts[f"data.text.{name}"] = file_digest(languages.text_path(name))
    # Layers a scored strategy chooses are known after loading: the recipe stands for them.
    layers = kept if kept is not None else {
        "strategy": cfg.pruning.strategy.value, "keep": cfg.pruning.keep,
        "calibration": asdict(cfg.pruning.calibration)}
    config = {
        "base_model": asdict(cfg.base_model), "kept_layers": layers, "phase": asdict(cfg.phase),
        "dataset": asdict(cfg.dataset), "eval": asdict(cfg.eval), "seed": cfg.seed,
    }
    _settings_added_later(cfg, config)
    # The language sets: which ones the job evaluates, not where the names came from.
    del config["base_model"]["languages"], config["base_model"]["card"]  # no weight changes
    del config["eval"]["languages"], config["eval"]["language_files"]
    if sets:
        config["languages"] = {name: cfg.eval.language_files.get(name, "embedded")
                               for name in sets}
    text = json.dumps({"config": config, "parts": parts}, sort_keys=True, default=str)
    return Fingerprint(key=hashlib.sha256(text.encode()).hexdigest()[:20], parts=parts)


# Stage settings added later -> the value that every run had before them.
ADDED_LATER = {
    "sts": {"loss": "cosine"},
    "distill": {"text": {}, "files": [], "mse": 1.0, "hidden": 0.0, "similarity": 0.0},
}


def _settings_added_later(cfg: TrainConfig, config: dict) -> None:
    """Settings added later count only when they differ from what came before them, so that
    earlier runs keep their keys: added to `config` when set, or dropped from it while they
    hold their earlier value (`ADDED_LATER`)."""
    if cfg.vocab.name.value != "none":
        config["vocab"] = asdict(cfg.vocab)
        if not config["vocab"]["text"]:
            del config["vocab"]["text"]
    if cfg.export.value != "none":
        config["export"] = cfg.export.value
    for stage, earlier in ADDED_LATER.items():
        settings = config["phase"][stage]
        for name, value in earlier.items():
            if settings is not None and name in settings and settings[name] == value:
                del settings[name]
