"""What a job's result depends on: its config, device, precision, package versions, file contents.

Two jobs with the same fingerprint compute the same numbers, so a finished run is reused only
when its fingerprint matches. Every part is logged as a `fingerprint.*` param, so a user can
see why two runs did or did not match.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from pathlib import Path

from sbert_exp import assets, languages
from sbert_exp.modeling import precision
from sbert_exp.schema import BaseModelConfig, Source, SplitConfig, TrainConfig

log = logging.getLogger(__name__)

# The packages whose versions can change a number this tool reports.
PACKAGES = ("sbert_exp", "torch", "transformers", "sentence-transformers", "tokenizers",
            "datasets", "numpy", "scipy")
HASH_CACHE = "file-hashes.json"  # in the asset cache: path -> (size, mtime, SHA-256)


@dataclass(frozen=True)
class Fingerprint:
    key: str  # digest of everything below; the reuse key
    parts: dict[str, str]  # fingerprint.* params: device, precision, versions, content digests


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


# ------------------------------------------------------------------ file contents

_memo: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """SHA-256 of a file, computed once per (path, size, mtime) and kept in the asset cache."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _memo:
        return _memo[key]
    stored = _read_cache().get(key[0])
    if stored is not None and tuple(stored[:2]) == key[1:]:
        digest = stored[2]
    else:
        digest = assets.sha256_file(path)
        _write_cache(key, digest)
    _memo[key] = digest
    return digest


def _cache_file() -> Path:
    return assets.cache_dir() / HASH_CACHE


def _read_cache() -> dict[str, list]:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: hashes are recomputed, never trusted blindly


def _write_cache(key: tuple[str, int, int], digest: str) -> None:
    from filelock import FileLock

    target = _cache_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock", timeout=30):
            table = _read_cache()
            table[key[0]] = [key[1], key[2], digest]
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(table))
            os.replace(tmp, target)
    except OSError as e:  # a read-only cache only costs hashing again next time
        log.debug("could not record the hash of %s: %s", key[0], e)


def dir_digest(root: Path) -> str:
    """One digest of every file below `root` (relative path and content)."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock"))
    listing = [(str(p.relative_to(root)), file_digest(p)) for p in files]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def model_digest(base: BaseModelConfig, path: str) -> str:
    """The content of the base model's files (`path` from modeling.locate)."""
    if base.source is Source.embedded:
        # Checked against these hashes on every use (assets.resolve): no need to read again.
        asset = assets.get(base.location)
        hashes = assets.expected_hashes(asset, Path(path))
        return hashlib.sha256(json.dumps(sorted(hashes.items())).encode()).hexdigest()
    if base.source is Source.hub:
        return f"hub:{base.location}@{Path(path).name}"  # the snapshot folder is the commit
    return dir_digest(Path(path))


def split_digest(split: SplitConfig, where: str) -> str:
    if split.source is Source.hub:
        return f"hub:{split.location}:{split.hub_name}:{split.hub_split}"
    from sbert_exp.data import resolve_path

    return file_digest(resolve_path(split, where))


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
    parts = {"device": device.split(":")[0], "precision": precision(device)}
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
    # Settings added later count only when they differ from what came before them, so that
    # earlier runs keep their keys.
    if cfg.vocab.name.value != "none":
        config["vocab"] = asdict(cfg.vocab)
    if cfg.export.value != "none":
        config["export"] = cfg.export.value
    if config["phase"]["sts"] is not None and config["phase"]["sts"]["loss"] == "cosine":
        del config["phase"]["sts"]["loss"]
    # The language sets: which ones the job evaluates, not where the names came from.
    del config["base_model"]["languages"]
    del config["eval"]["languages"], config["eval"]["language_files"]
    if sets:
        config["languages"] = {name: cfg.eval.language_files.get(name, "embedded")
                               for name in sets}
    if config["phase"]["distill"] is not None and not config["phase"]["distill"]["text"]:
        del config["phase"]["distill"]["text"]
    if config["phase"]["distill"] is not None and not config["phase"]["distill"]["files"]:
        del config["phase"]["distill"]["files"]
    if "vocab" in config and not config["vocab"]["text"]:
        del config["vocab"]["text"]
    text = json.dumps({"config": config, "parts": parts}, sort_keys=True, default=str)
    return Fingerprint(key=hashlib.sha256(text.encode()).hexdigest()[:20], parts=parts)
