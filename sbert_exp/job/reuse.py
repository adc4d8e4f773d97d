"""Reusing finished work: a finished run's saved model linked into a job's folder, and the
lock or claim that makes parallel jobs with one config train it once."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from sbert_exp.tracking.queries import FinishedRun
from sbert_exp.tracking.runs import Tracker
from sbert_exp.tracking.store import lock_dir, sqlite_path
from sbert_exp.utils.atomic import atomic_dir, write_text

log = logging.getLogger(__name__)


def remove_partial_saves(output_dir: Path) -> None:
    """A process killed while saving leaves its temporary model folder: drop it."""
    for partial in output_dir.glob(".model*-*"):  # .model-*, .model_<export>-*
        shutil.rmtree(partial, ignore_errors=True)


def restore(done: list[FinishedRun], save_model: bool, output_dir: Path) -> bool:
    """Give a job folder the outputs of its finished run; False when the model is gone."""
    if save_model and not link_model(done, output_dir / "model"):
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


def link_model(runs: list[FinishedRun], target: Path) -> bool:
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


@contextlib.contextmanager
def config_claim(tracker: Tracker, key: str) -> Iterator[None]:
    """Hold config `key` while a job trains or reuses it: a lock file beside a SQLite store
    (every job of this machine), a claim run on a server (every machine that logs there);
    nothing when tracking is disabled (nothing is reused)."""
    if not tracker.cfg.enabled:
        yield
    elif sqlite_path(tracker.cfg.uri) is not None:
        with config_lock(lock_dir(tracker.cfg.uri), key):
            yield
    else:
        with tracker.claim(key):
            yield


@contextlib.contextmanager
def config_lock(lock_dir: Path | None, key: str) -> Iterator[None]:
    """Hold the lock of one config key in lock_dir (`tracking.store.lock_dir`: beside the
    store); no lock when lock_dir is None (tracking disabled: nothing is reused)."""
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
