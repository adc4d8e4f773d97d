"""Layer choice by evidence: score the base model's layers on calibration data, keep the best.

The scores come from `importance` (pure functions of hidden states) or, for greedy_dev, from
STS dev Spearman of the model with layers removed (`evaluation`). They do not depend on `keep`,
so they are computed once per base model and calibration set and cached on disk: a sweep over
keep values and strategies scores each base model once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset

from sbert_exp import assets, evaluation, importance, modeling
from sbert_exp.atomic import write_text
from sbert_exp.pruning import Strategy

log = logging.getLogger(__name__)

CACHE_DIR = "layer_scores"  # under the asset cache
SCORE_METRIC = {  # the MLflow metric each strategy's scores are logged under (step: the index)
    Strategy.block_influence: "pruning/block_influence",  # step: layer
    Strategy.angular: "pruning/angular_distance",  # step: first layer of the removed block
    Strategy.greedy_dev: "pruning/greedy_dev_spearman",  # step: layers removed so far
}


@dataclass(frozen=True)
class Choice:
    kept: list[int]
    scores: list[float]  # what the metric SCORE_METRIC[strategy] logs, one value a step
    computed: bool  # False when the scores came from the cache
    seconds: float


def choose(model, strategy: Strategy, keep: int, *, sentences: Sequence[str] | None,
           dev: Dataset | None, batch_size: int, cache_key: str) -> Choice:
    """The `keep` layers `strategy` keeps on this model (scores cached under `cache_key`)."""
    n = modeling.num_layers(model)
    started = time.perf_counter()
    path = _cache_path(cache_key, strategy)
    cached = _read(path)
    computed = cached is None
    if cached is None and strategy is not Strategy.greedy_dev:
        # One pass over the hidden states scores both: a sweep over both strategies pays once.
        hidden, mask = modeling.hidden_states(model, sentences, batch_size)
        cached = {"block_influence": importance.block_influence(hidden, mask),
                  "angular": {str(b): importance.angular_distances(hidden, mask, b)
                              for b in range(1, n)}}
    if strategy is Strategy.block_influence:
        scores = cached["block_influence"]
        kept = importance.keep_highest(scores, keep)
    elif strategy is Strategy.angular:
        scores = cached["angular"][str(n - keep)]
        kept = importance.remove_block(n, importance.best_block_start(scores), n - keep)
    elif strategy is Strategy.greedy_dev:
        if cached is None:
            cached = _greedy(model, n, dev, batch_size)
        removal, spearman = cached["path"], cached["spearman"]
        kept = importance.kept_after(n, removal, keep)
        scores = spearman[: n - keep + 1]
    else:
        raise ValueError(f"{strategy} is not a scored strategy")
    if computed:
        write_text(path, json.dumps(cached))
    seconds = time.perf_counter() - started
    log.info("layer scores (%s): %s in %.1f s; keeping %s", strategy.value,
             "computed" if computed else "read from the cache", seconds, kept)
    return Choice(kept=kept, scores=[float(s) for s in scores], computed=computed,
                  seconds=seconds)


def _greedy(model, n: int, dev: Dataset, batch_size: int) -> dict:
    """The greedy removal path down to one layer, and the dev Spearman after each removal
    (index 0: every layer kept)."""
    seen: dict[tuple[int, ...], float] = {}

    def spearman(kept: list[int]) -> float:
        with modeling.layers_view(model, kept):
            seen[tuple(kept)] = evaluation.sts_scores(model, dev, batch_size)["spearman_cosine"]
        return seen[tuple(kept)]

    path = importance.greedy_path(n, 1, spearman)
    after = [spearman(list(range(n)))]
    for step in range(1, n):
        after.append(seen[tuple(importance.kept_after(n, path, n - step))])
    return {"path": path, "spearman": after}


def cache_key(*parts: object) -> str:
    """A digest of what the scores depend on: the model's content, its init and prompt, the
    calibration sentences or dev pairs, the device and the package versions."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cache_root() -> Path:
    return assets.cache_dir() / CACHE_DIR


def _cache_path(key: str, strategy: Strategy) -> Path:
    kind = "greedy_dev" if strategy is Strategy.greedy_dev else "hidden_states"
    return cache_root() / f"{key}-{kind}.json"


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # none yet, or unreadable: computed again
