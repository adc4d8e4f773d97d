"""Layer choice by evidence: score the base model's layers on calibration data, keep the best.

The scores come from `pruning.importance` (pure functions of hidden states) or, for greedy_dev,
from STS dev Spearman of the model with layers removed (`sbert_exp.evaluation`). They do not
depend on `keep`, so they are computed once per base model and calibration set and cached on
disk (`SCORES`): a sweep over keep values and strategies scores each base model once. A job logs
them as the metric history `METRICS[strategy]`, which the report draws.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from datasets import Dataset

from sbert_exp import evaluation
from sbert_exp.model import modeling
from sbert_exp.pruning import importance
from sbert_exp.pruning.strategies import SCORED, Evidence, Strategy, evidence
from sbert_exp.utils.cache import Cache

log = logging.getLogger(__name__)

SCORES = Cache("layer_scores", version=1)  # one JSON entry per model, calibration set, kind
# Each scored strategy's MLflow metric: its scores, one step a layer, block start or removal.
METRICS: dict[Strategy, str] = {
    Strategy.block_influence: "pruning/block_influence",  # step: layer
    Strategy.angular: "pruning/angular_distance",  # step: first layer of the removed block
    Strategy.greedy_dev: "pruning/greedy_dev_spearman",  # step: layers removed
}
assert set(METRICS) == SCORED, "every scored strategy has its metric"


@dataclass(frozen=True)
class Choice:
    kept: list[int]
    scores: list[float]  # what METRICS[strategy] logs, one value a step
    computed: bool  # False when the scores came from the cache
    seconds: float


def choose(model, strategy: Strategy, keep: int, *, sentences: Sequence[str] | None,
           dev: Dataset | None, batch_size: int, cache_key: str) -> Choice:
    """The `keep` layers `strategy` keeps on this model (scores cached under `cache_key`)."""
    n = modeling.num_layers(model)
    started = time.perf_counter()
    entry = _entry(cache_key, strategy)
    # Held while computing: a parallel job with the same model waits, then reads the scores.
    with SCORES.lock(entry, timeout=-1):
        cached = SCORES.read_json(entry)
        computed = cached is None
        kept, scores, cached = _scores(model, n, strategy, keep, cached, sentences, dev,
                                       batch_size)
        if computed:
            SCORES.write_json(entry, cached)
    seconds = time.perf_counter() - started
    log.info("layer scores (%s): %s in %.1f s; keeping %s", strategy.value,
             "computed" if computed else "read from the cache", seconds, kept)
    return Choice(kept=kept, scores=[float(s) for s in scores], computed=computed,
                  seconds=seconds)


def _scores(model, n: int, strategy: Strategy, keep: int, cached: dict | None,
            sentences: Sequence[str] | None, dev: Dataset | None, batch_size: int
            ) -> tuple[list[int], list[float], dict]:
    """The kept layers, the logged scores and the cache entry (`cached`, or computed now)."""
    if cached is None and evidence(strategy) is Evidence.hidden_states:
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
    return kept, scores, cached


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
    return SCORES.key(*parts)


def _entry(key: str, strategy: Strategy) -> str:
    # Every hidden-state strategy reads one entry; a strategy scored otherwise has its own.
    kind = "hidden_states" if evidence(strategy) is Evidence.hidden_states else strategy.value
    return f"{key}-{kind}.json"

