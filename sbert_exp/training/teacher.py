"""The distillation teacher's targets: the unpruned pretrained base model's embeddings of the
distillation sentences, computed once per model content, sentence, prompt and length, stored.

The teacher is always the pretrained base as loaded, whatever the student's init, so a sweep
over keep values, strategies and inits encodes each sentence once. The store is one folder per
teacher (model content, prompt, length, pooling, package versions): a memory-mapped file of
float32 rows and, beside it, the digest of each row's sentence. Sentences are encoded in chunks
that are appended as they finish, so a killed job resumes from its last complete chunk, and any
later job (another sample, another sweep) encodes only the sentences the store lacks.

An objective that needs more than the embeddings (hidden-state matching) runs the teacher itself
while the student trains: `live`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbert_exp.config.schema import BaseModelConfig, Init
from sbert_exp.data.digests import model_digest
from sbert_exp.model import modeling
from sbert_exp.utils.atomic import write_text
from sbert_exp.utils.cache import Cache, file_lock
from sbert_exp.utils.versions import versions

log = logging.getLogger(__name__)

STORES = Cache("teacher_embeddings", version=2)  # a folder per teacher (1: a .npy per set)
CHUNK = 2048  # sentences encoded, appended and logged at a time
DIGEST_CHARS = 40  # of a sentence's sha1: one line of `keys.txt` per stored row


@dataclass(frozen=True)
class Targets:
    embeddings: np.ndarray  # [sentences, dimension] float32, in the order of the sentences
    computed: bool  # False when every sentence was read from the store
    seconds: float
    encoded: int = 0  # sentences the teacher encoded now (the others were stored)


def store_key(model: str, prefix: str, max_seq_length: int, pooling: str) -> str:
    """A digest of what one sentence's embedding depends on besides the sentence: the model's
    content (`model`, see `fingerprint.model_digest`), the prompt, the length, the pooling and the
    package versions (torch or transformers may change the numbers)."""
    return STORES.key({"model": model, "prefix": prefix, "max_seq_length": max_seq_length,
                       "pooling": pooling, "versions": versions()})


def sentence_digest(sentence: str) -> str:
    return hashlib.sha1(sentence.encode()).hexdigest()


class Store:
    """One teacher's stored embeddings: `vectors.f32` (rows of `dimension` float32) and
    `keys.txt` (a sentence digest per row). A row counts once its digest line is complete; the
    files are repaired to that count before anything is appended. Callers hold `lock()`."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.vectors = self.folder / "vectors.f32"
        self.keys = self.folder / "keys.txt"
        self.info = self.folder / "info.json"

    def lock(self):
        """Every process on the machine that reads or appends this store holds it (no time
        limit: the holder may be encoding a large set)."""
        return file_lock(self.folder / "rows", timeout=-1)

    def dimension(self) -> int | None:
        try:
            return int(json.loads(self.info.read_text())["dimension"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def index(self) -> dict[str, int]:
        """Digest -> row of every complete row."""
        dim = self.dimension()
        if dim is None or not self.keys.is_file() or not self.vectors.is_file():
            return {}
        lines = self.keys.read_text().split("\n")
        complete = [k for k in lines[:-1] if len(k) == DIGEST_CHARS]  # the last: after a "\n"
        if len(complete) != len(lines) - 1:
            complete = complete[: next(i for i, k in enumerate(lines)
                                       if len(k) != DIGEST_CHARS)]
        rows = min(len(complete), self.vectors.stat().st_size // (4 * dim))
        return {k: i for i, k in enumerate(complete[:rows])}

    def read(self, rows: Sequence[int]) -> np.ndarray:
        dim = self.dimension()
        if not rows:
            return np.zeros((0, dim or 0), dtype=np.float32)
        count = max(rows) + 1
        mapped = np.memmap(self.vectors, dtype=np.float32, mode="r", shape=(count, dim))
        try:
            return np.array(mapped[np.asarray(rows)], dtype=np.float32)
        finally:
            del mapped

    def start(self, dimension: int, about: dict) -> int:
        """Make the files hold only complete rows; return how many. A store of another
        dimension (never expected: the key holds the model) is emptied."""
        if self.dimension() != dimension:
            for path in (self.vectors, self.keys):
                path.unlink(missing_ok=True)
            write_text(self.info, json.dumps({"dimension": dimension, **about}, indent=2))
        rows = len(self.index())
        for path, size in ((self.vectors, rows * dimension * 4),
                           (self.keys, rows * (DIGEST_CHARS + 1))):
            with open(path, "ab") as f:
                f.truncate(size)
        return rows

    def append(self, digests: Sequence[str], array: np.ndarray) -> None:
        """The rows first, on disk, then the digests that make them count."""
        for path, data in ((self.vectors, np.ascontiguousarray(array, np.float32).tobytes()),
                           (self.keys, "".join(f"{d}\n" for d in digests).encode())):
            with open(path, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())


def embeddings(base: BaseModelConfig, model_path: str, device: str, sentences: Sequence[str],
               batch_size: int, loaded=None, purpose: str = "distillation") -> Targets:
    """The teacher's embeddings of `sentences`, read from the store, the missing ones encoded
    in chunks of `CHUNK` (each appended as it finishes, with its progress and ETA logged).

    `loaded`: the base model already in memory with its pretrained weights and every layer (the
    student before pruning), encoded instead of loading the teacher again; None loads the
    pretrained base from `model_path` when a sentence is missing only, and frees it after.
    `purpose` names the sentences in the log line.
    """
    started = time.perf_counter()
    key = store_key(model_digest(base, model_path), base.prefix, base.max_seq_length,
                    base.pooling.value)
    store = Store(STORES.path(key))
    digests = [sentence_digest(s) for s in sentences]
    # Parallel jobs of a sweep: one encodes, the others wait and read.
    with store.lock():
        index = store.index()
        missing = list(dict.fromkeys(d for d in digests if d not in index))
        if missing:
            text = dict(zip(digests, sentences, strict=True))
            _encode_missing(store, base, model_path, device, [text[d] for d in missing],
                            missing, batch_size, loaded, purpose)
            index = store.index()
        found = store.read([index[d] for d in digests])
    seconds = time.perf_counter() - started
    log.info("teacher embeddings: %s (%s, %d sentences, %d encoded, store %s) in %.1f s",
             "computed" if missing else "read from the cache", purpose, len(sentences),
             len(missing), key, seconds)
    return Targets(embeddings=found, computed=bool(missing), seconds=seconds,
                   encoded=len(missing))


@contextlib.contextmanager
def live(base: BaseModelConfig, device: str) -> Iterator:
    """The teacher for an objective that runs it while the student trains (hidden-state
    matching): the pretrained base loaded again, whole (the student was pruned from its own
    copy), on `device`, in eval mode and frozen; freed after the block."""
    pretrained = dataclasses.replace(base, init=Init.pretrained)
    teacher = modeling.load_base(pretrained, device, modeling.locate(base))
    teacher.eval()
    teacher.requires_grad_(False)
    try:
        yield teacher
    finally:
        del teacher
        _free(device)


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _encode_missing(store: Store, base: BaseModelConfig, model_path: str, device: str,
                    sentences: list[str], digests: list[str], batch_size: int, loaded,
                    purpose: str) -> None:
    teacher = loaded
    if teacher is None:
        pretrained = dataclasses.replace(base, init=Init.pretrained)
        teacher = modeling.load_base(pretrained, device, model_path)
    try:
        about = {"base_model": base.name, "location": base.location, "prefix": base.prefix,
                 "max_seq_length": base.max_seq_length, "pooling": base.pooling.value}
        store.start(teacher.get_embedding_dimension(), about)
        started, total = time.perf_counter(), len(sentences)
        for begin in range(0, total, CHUNK):
            chunk = sentences[begin: begin + CHUNK]
            # `encode` prepends the model's default prompt (base_model.prefix), as in training.
            out = teacher.encode(chunk, batch_size=batch_size, convert_to_numpy=True,
                                 show_progress_bar=False)
            store.append(digests[begin: begin + CHUNK], np.asarray(out, dtype=np.float32))
            done = begin + len(chunk)
            if total > CHUNK:
                rate = done / (time.perf_counter() - started)
                log.info("teacher (%s): %d/%d sentences encoded, %.0f/s, ETA %.0f s",
                         purpose, done, total, rate, (total - done) / rate)
    finally:
        if loaded is None:
            del teacher
            _free(device)
