"""Timing, side by side: variants alternate within each round after a warm-up, the best round
counts. The one timing loop of the package; jobs, references and the benchmarks call it."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import torch

from sbert_exp.model.modeling import layers, layers_view
from sbert_exp.model.precision import in_precision


def best_of(rounds: int, variants: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Best wall time of each variant: one warm-up round, then `rounds` rounds (at least one)
    in which the variants alternate."""
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for warmup in (True, *([False] * max(rounds, 1))):
        for name, run in variants.items():
            _synchronize()
            start = time.perf_counter()
            run()
            _synchronize()
            if not warmup:
                seconds[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in seconds.items()}


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _encoder(model, sentences: list[str], batch_size: int) -> Callable[[], object]:
    return lambda: model.encode(sentences, batch_size=batch_size, convert_to_numpy=True,
                                show_progress_bar=False)


def time_views(model, views: dict[str, Sequence[int]], sentences: list[str], batch_size: int,
               rounds: int, also: dict[str, Callable[[], object]] | None = None,
               precisions: Mapping[str, str] | None = None) -> dict[str, float]:
    """Best encode time of the model with each set of kept layers (`views`: name -> indices,
    each a view of the same weights), each in its precision (`precisions`: name -> fp32 or
    bf16, a copy of the weights in that dtype; fp32 for a view not named), alternated with any
    other callables in `also`."""
    wanted = {name: (precisions or {}).get(name, "fp32") for name in views}
    copies = {p: in_precision(model, p) for p in set(wanted.values())}

    def view(name: str, idx: list[int]) -> Callable[[], None]:
        served = copies[wanted[name]]
        encode = _encoder(served, sentences, batch_size)

        def run() -> None:
            with layers_view(served, idx):
                encode()
        return run

    return best_of(rounds, {**{name: view(name, list(idx)) for name, idx in views.items()},
                            **(also or {})})


def speed_vs_unpruned(model, keep: Sequence[int], sentences: list[str], batch_size: int,
                      rounds: int) -> dict[str, float]:
    """Encode throughput with all layers and with `keep`, alternated on the same sentences.

    Both variants run in this process on the same weights (the pruned one is a view of the
    full stack), after one warm-up each; the best of `rounds` timings is kept.
    """
    full = list(range(len(layers(model))))
    # Keeping every layer is the unpruned model itself: time it once, the ratio is 1 by definition.
    views = {"full": full}
    if list(keep) != full:
        views["pruned"] = list(keep)
    best = time_views(model, views, sentences, batch_size, rounds)
    full_s = best["full"]
    pruned_s = best.get("pruned", full_s)
    return {
        "sentences_per_s": len(sentences) / pruned_s,
        "sentences_per_s_unpruned": len(sentences) / full_s,
        "speedup_vs_unpruned": full_s / pruned_s,
    }


def best_encode_seconds(models: dict[str, object], sentences: list[str], batch_size: int,
                        rounds: int) -> dict[str, float]:
    """The best encode time of each model on the same sentences (`best_of`)."""
    return best_of(rounds, {name: _encoder(m, sentences, batch_size)
                            for name, m in models.items()})


def latencies(models: dict[str, object], sentences: list[str]) -> dict[str, list[float]]:
    """Seconds of each single-sentence encode (batch 1), the models alternating sentence by
    sentence; the first sentence warms up and is not counted."""
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for i, sentence in enumerate(sentences):
        for name, model in models.items():
            start = time.perf_counter()
            model.encode([sentence], batch_size=1)
            if i:
                seconds[name].append(time.perf_counter() - start)
    return seconds
