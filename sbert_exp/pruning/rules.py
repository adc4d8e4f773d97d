"""Which encoder layers to keep: the pure, model-free core of layer pruning (the checks of a
request and the kept indices; the strategies themselves are declared in `strategies`)."""

from __future__ import annotations

from collections.abc import Sequence

from sbert_exp.pruning.strategies import SCORED, STRATEGIES, Strategy


class PruningError(ValueError):
    """A pruning request that cannot be applied to a model of the given depth."""


def select_layers(num_layers: int, keep: int, strategy: Strategy | str) -> list[int]:
    """Indices (ascending) of the layers kept when `strategy` removes `num_layers - keep` layers."""
    _check_keep(num_layers, keep)
    strategy = _strategy(strategy)
    if strategy in SCORED:
        raise PruningError(f"pruning.strategy={strategy.value} chooses layers from the model's "
                           "scores: use sbert_exp.selection")
    return STRATEGIES[strategy].chooses(num_layers, keep)


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
