"""One disk cache for what the tool computes once and reuses: file hashes, layer scores, the
teacher's embeddings, reference models.

Every cache is a folder under the asset cache ($SBERT_EXP_CACHE, else ~/.cache/sbert_exp),
named for what it holds. An entry's name is a content key: a digest of everything its content
depends on and of the cache's version, so a new layout never reads an old one and a changed
input never reads a stale entry. Entries are written atomically (a temporary file with a name
no other process uses, then a rename), and a read-modify-write holds the entry's file lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbert_exp.utils.atomic import write_text

CACHE_ENV = "SBERT_EXP_CACHE"
LOCK_TIMEOUT_S = 600  # a writer holds an entry's lock for seconds; longer means a stuck one


def cache_dir() -> Path:
    """Root of the caches and the prepared assets: $SBERT_EXP_CACHE, else ~/.cache/sbert_exp."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/sbert_exp").expanduser()


def content_key(*parts: Any, chars: int = 24) -> str:
    """A digest of `parts` (JSON; anything else by its str)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:chars]


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold `<path>.lock`, a lock every process on the machine sees."""
    from filelock import FileLock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=timeout):
        yield


@dataclass(frozen=True)
class Cache:
    """One cache: a folder `name` under the cache root (`base`, by default `cache_dir()`), whose
    keys include `version`."""

    name: str
    version: int
    base: Path | None = None  # tests point a cache elsewhere

    def root(self) -> Path:
        return (self.base if self.base is not None else cache_dir()) / self.name

    def key(self, *parts: Any) -> str:
        """The content key of an entry that depends on `parts`."""
        return content_key(self.name, self.version, *parts)

    def path(self, name: str) -> Path:
        return self.root() / name

    def read_json(self, name: str) -> Any | None:
        """The entry's JSON, or None when it is missing or unreadable (then computed again,
        never trusted)."""
        try:
            return json.loads(self.path(name).read_text())
        except (OSError, ValueError):
            return None

    def write_json(self, name: str, value: Any) -> None:
        write_text(self.path(name), json.dumps(value))

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold the entry's lock (`timeout=-1`: wait as long as it takes)."""
        with file_lock(self.path(name), timeout):
            yield

    def moved(self, base: Path) -> Cache:
        """This cache under another root."""
        return dataclasses.replace(self, base=Path(base))
