"""Which encoder layers to keep: the pure, model-free core of layer pruning."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum


class Strategy(StrEnum):
    """Where layers are *removed* from (layer 0 is the bottom, next to the embeddings)."""

    top = "top"  # remove the top layers: keep layers 0 .. keep-1
    middle = "middle"  # remove a contiguous middle block: keep both ends
    bottom = "bottom"  # remove the bottom layers: keep the last `keep` layers
    alternate = "alternate"  # remove every other layer, from the top down (Sajjad et al. 2023)
    # Chosen from scores of the base model on calibration sentences (sbert_exp.selection):
    block_influence = "block_influence"  # keep the layers that change their input most
    angular = "angular"  # remove the block whose input and output are closest in angle
    greedy_dev = "greedy_dev"  # remove, one by one, the layer whose loss costs least STS dev


# Strategies whose layers depend on the model's scores, not on positions alone.
SCORED = frozenset({Strategy.block_influence, Strategy.angular, Strategy.greedy_dev})


class PruningError(ValueError):
    """A pruning request that cannot be applied to a model of the given depth."""


def _keep_top_removed(num_layers: int, keep: int) -> list[int]:
    return list(range(keep))


def _keep_middle_removed(num_layers: int, keep: int) -> list[int]:
    # The lower end gets the extra layer when `keep` is odd: lower layers carry
    # the lexical features every later layer builds on.
    low = (keep + 1) // 2
    high = keep - low
    return list(range(low)) + list(range(num_layers - high, num_layers))


def _keep_bottom_removed(num_layers: int, keep: int) -> list[int]:
    return list(range(num_layers - keep, num_layers))


def _alternate_removal_order(num_layers: int) -> list[int]:
    """Every layer but layer 0, in the order `alternate` removes them.

    Passes over the remaining stack: each pass removes the layers at odd positions of the
    remaining stack, counted from its bottom (position 0), topmost first. For 12 layers:
    11 9 7 5 3 1, then 10 6 2, then 4, then 8. Layer 0 is never removed, and a layer's pass
    depends only on its index, so a deeper model's order extends a shallower one's.
    """
    remaining, order = list(range(num_layers)), []
    while len(remaining) > 1:
        order += remaining[1::2][::-1]
        remaining = remaining[::2]
    return order


def _keep_alternate_removed(num_layers: int, keep: int) -> list[int]:
    # Counting positions from the bottom keeps layer 0 (the one every later layer reads)
    # and, for an even depth, removes the top layer first, as Sajjad et al. do.
    removed = set(_alternate_removal_order(num_layers)[: num_layers - keep])
    return [i for i in range(num_layers) if i not in removed]


STRATEGIES = {
    Strategy.top: _keep_top_removed,
    Strategy.middle: _keep_middle_removed,
    Strategy.bottom: _keep_bottom_removed,
    Strategy.alternate: _keep_alternate_removed,
}


def select_layers(num_layers: int, keep: int, strategy: Strategy | str) -> list[int]:
    """Indices (ascending) of the layers kept when `strategy` removes `num_layers - keep` layers."""
    _check_keep(num_layers, keep)
    strategy = _strategy(strategy)
    if strategy in SCORED:
        raise PruningError(f"pruning.strategy={strategy.value} chooses layers from the model's "
                           "scores: use sbert_exp.selection")
    return STRATEGIES[strategy](num_layers, keep)


def _check_keep(num_layers: int, keep: int) -> None:
    if num_layers < 1:
        raise PruningError(f"the model has {num_layers} layers; nothing to prune")
    if isinstance(keep, bool) or not isinstance(keep, int):
        raise PruningError(f"pruning.keep={keep!r} is not a whole number of layers")
    if not 1 <= keep <= num_layers:
        raise PruningError(
            f"pruning.keep={keep} is out of range: the base model has {num_layers} layers, "
            f"choose pruning.keep between 1 and {num_layers}"
        )


def _strategy(strategy: Strategy | str) -> Strategy:
    try:
        return Strategy(strategy)
    except ValueError:
        allowed = ", ".join(s.value for s in Strategy)
        raise PruningError(
            f"pruning.strategy={strategy!r} is unknown: choose one of {allowed}"
        ) from None


def check_layers(num_layers: int, layers: Sequence[int]) -> list[int]:
    """Validate an explicit list of kept layer indices and return it as a list."""
    layers = list(layers)
    if not layers:
        raise PruningError("pruning.layers=[] keeps no layer: list at least one layer index")
    for i in layers:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < num_layers:
            raise PruningError(
                f"pruning.layers={layers} has index {i!r}, outside the base model's "
                f"{num_layers} layers: use indices 0 to {num_layers - 1}"
            )
    seen: set[int] = set()
    for i in layers:
        if i in seen:
            raise PruningError(
                f"pruning.layers={layers} repeats layer {i}: list each kept layer once"
            )
        seen.add(i)
    if layers != sorted(layers):
        raise PruningError(
            f"pruning.layers={layers} is not in increasing order: write it as {sorted(layers)}"
        )
    return layers


def kept_layers(
    num_layers: int,
    keep: int | None,
    strategy: Strategy | str,
    layers: Sequence[int] | None = None,
) -> list[int] | None:
    """The layers to keep: explicit `layers` win, then `keep` + `strategy`, else all layers.

    None for a scored strategy that removes layers: they are known once the model is scored.
    """
    if layers is not None:
        return check_layers(num_layers, layers)
    if keep is None:
        return list(range(num_layers))
    if _strategy(strategy) in SCORED:
        _check_keep(num_layers, keep)
        return list(range(num_layers)) if keep == num_layers else None
    return select_layers(num_layers, keep, strategy)


def pruning_label(
    keep: int | None,
    strategy: Strategy | str,
    layers: Sequence[int] | None = None,
) -> list[str]:
    """The words that name a pruning request in job folders, run names and reports.

    Explicit `layers` win, as in `kept_layers`: ["layers", "keep<len>"]; keep null keeps every
    layer: ["keepall"]; else [strategy, "keep<keep>"]. Nothing is checked against a model's
    depth, so a request that will fail its checks (keep=13) is still named for what it asked.
    Callers join the words: "_" in job folders, "-" in MLflow run names.
    """
    if layers is not None:
        return ["layers", f"keep{len(layers)}"]
    if keep is None:
        return ["keepall"]
    return [_strategy(strategy).value, f"keep{keep}"]
