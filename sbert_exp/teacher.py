"""The distillation teacher's targets: the unpruned pretrained base model's embeddings of the
distillation sentences, computed once per model content, sentences, prompt and length, cached.

The teacher is always the pretrained base as loaded, whatever the student's init, so a sweep
over keep values, strategies and inits encodes each sentence set once.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbert_exp import assets, modeling
from sbert_exp.fingerprint import model_digest, versions
from sbert_exp.schema import BaseModelConfig, Init

log = logging.getLogger(__name__)

CACHE_DIR = "teacher_embeddings"  # under the asset cache


@dataclass(frozen=True)
class Targets:
    embeddings: np.ndarray  # [sentences, dimension] float32, in the order of the sentences
    computed: bool  # False when read from the cache
    seconds: float


def cache_key(model: str, sentences: Sequence[str], prefix: str, max_seq_length: int,
              pooling: str) -> str:
    """A digest of what the teacher's embeddings depend on: the model's content (`model`, see
    `fingerprint.model_digest`), the sentences in order, the prompt, the length, the pooling
    and the package versions."""
    text = hashlib.sha256(json.dumps(list(sentences)).encode()).hexdigest()
    parts = {"model": model, "sentences": text, "count": len(sentences), "prefix": prefix,
             "max_seq_length": max_seq_length, "pooling": pooling,
             "versions": versions()}  # torch or transformers may change the numbers
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def cache_root() -> Path:
    return assets.cache_dir() / CACHE_DIR


def embeddings(base: BaseModelConfig, model_path: str, device: str, sentences: Sequence[str],
               batch_size: int, loaded=None, purpose: str = "distillation") -> Targets:
    """The teacher's embeddings of `sentences`, from the cache or computed and cached.

    `loaded`: the base model already in memory with its pretrained weights and every layer (the
    student before pruning), encoded instead of loading the teacher again; None loads the
    pretrained base from `model_path` on a cache miss only, and frees it after encoding.
    `purpose` names the sentences in the log line.
    """
    from filelock import FileLock

    started = time.perf_counter()
    key = cache_key(model_digest(base, model_path), sentences, base.prefix,
                    base.max_seq_length, base.pooling.value)
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    # Parallel jobs of a sweep: one encodes, the others wait and read.
    with FileLock(str(root / f"{key}.lock")):
        found = _read(root, key, len(sentences))
        computed = found is None
        if found is None:
            found = _encode(base, model_path, device, sentences, batch_size, loaded)
            _write(root, key, found, base)
    seconds = time.perf_counter() - started
    log.info("teacher embeddings: %s (%s, %d sentences, key %s) in %.1f s",
             "computed" if computed else "read from the cache", purpose, len(sentences), key,
             seconds)
    return Targets(embeddings=found, computed=computed, seconds=seconds)


def _encode(base: BaseModelConfig, model_path: str, device: str, sentences: Sequence[str],
            batch_size: int, loaded) -> np.ndarray:
    teacher = loaded
    if teacher is None:
        pretrained = dataclasses.replace(base, init=Init.pretrained)
        teacher = modeling.load_base(pretrained, device, model_path)
    try:
        # `encode` prepends the model's default prompt (base_model.prefix), as in training.
        out = teacher.encode(list(sentences), batch_size=batch_size, convert_to_numpy=True,
                             show_progress_bar=False)
    finally:
        if loaded is None:
            del teacher
            gc.collect()
            if device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()
    return np.asarray(out, dtype=np.float32)


def _paths(root: Path, key: str) -> tuple[Path, Path]:
    return root / f"{key}.npy", root / f"{key}.json"


def _read(root: Path, key: str, count: int) -> np.ndarray | None:
    array_path, info_path = _paths(root, key)
    try:
        info = json.loads(info_path.read_text())
        array = np.load(array_path, allow_pickle=False)
    except (OSError, ValueError):
        return None  # none yet, or unreadable: computed again
    if info.get("key") != key or array.shape != (count, info.get("dimension")):
        return None
    return array.astype(np.float32, copy=False)


def _write(root: Path, key: str, array: np.ndarray, base: BaseModelConfig) -> None:
    """The array, then the json that vouches for it; each through a temporary file."""
    array_path, info_path = _paths(root, key)
    info = {"key": key, "sentences": int(array.shape[0]), "dimension": int(array.shape[1]),
            "base_model": base.name, "location": base.location, "prefix": base.prefix,
            "max_seq_length": base.max_seq_length, "pooling": base.pooling.value}
    for path, write in ((array_path, lambda f: np.save(f, array, allow_pickle=False)),
                        (info_path, lambda f: f.write(json.dumps(info, indent=2).encode()))):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
