"""Every layer strategy, declared once: its name, how it chooses the kept layers, and how the
report, the plots and MLflow show it. Everything that lists strategies reads `STRATEGIES`.

A new positional strategy is one entry here (a function of depth and keep); a new scored one is
an entry with `chooses=None`, a metric and chart axes, plus its scorer in `sbert_exp.job.layers`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Strategy(StrEnum):
    """Where layers are *removed* from (layer 0 is the bottom, next to the embeddings)."""

    top = "top"  # remove the top layers: keep layers 0 .. keep-1
    middle = "middle"  # remove a contiguous middle block: keep both ends
    bottom = "bottom"  # remove the bottom layers: keep the last `keep` layers
    alternate = "alternate"  # remove every other layer, from the top down (Sajjad et al. 2023)
    # Chosen from scores of the base model on calibration sentences (sbert_exp.job.layers):
    block_influence = "block_influence"  # keep the layers that change their input most
    angular = "angular"  # remove the block whose input and output are closest in angle
    greedy_dev = "greedy_dev"  # remove, one by one, the layer whose loss costs least STS dev


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


def alternate_removal_order(num_layers: int) -> list[int]:
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
    removed = set(alternate_removal_order(num_layers)[: num_layers - keep])
    return [i for i in range(num_layers) if i not in removed]


@dataclass(frozen=True)
class Declared:
    """How one strategy chooses and is shown."""

    # Positional: (depth, keep) -> kept indices. None: scored, chosen from the loaded model's
    # scores by `sbert_exp.job.layers`.
    chooses: Callable[[int, int], list[int]] | None
    label: str  # how plots name its lines ("top removed", "angular choice")
    color: str  # its colour in every plot
    score_metric: str | None = None  # scored: the MLflow metric of its layer scores (step: index)
    score_axes: tuple[str, str] | None = None  # scored: (x, y) of its layer-score chart


# In report order.
STRATEGIES: dict[Strategy, Declared] = {
    Strategy.top: Declared(_keep_top_removed, "top removed", "tab:blue"),
    Strategy.middle: Declared(_keep_middle_removed, "middle removed", "tab:orange"),
    Strategy.bottom: Declared(_keep_bottom_removed, "bottom removed", "tab:green"),
    Strategy.alternate: Declared(_keep_alternate_removed, "alternate removed", "tab:red"),
    Strategy.block_influence: Declared(
        None, "block_influence choice", "tab:brown", "pruning/block_influence",  # step: layer
        ("layer", "block influence: 1 - mean cos(input, output)")),
    Strategy.angular: Declared(
        None, "angular choice", "tab:cyan", "pruning/angular_distance",  # step: block start
        ("first layer of the removed block", "angular distance / pi")),
    Strategy.greedy_dev: Declared(
        None, "greedy_dev choice", "tab:olive", "pruning/greedy_dev_spearman",  # step: removed
        ("layers removed", "STS dev Spearman")),
}
assert set(STRATEGIES) == set(Strategy), "every Strategy is declared"
# Report rows that name no strategy: explicit pruning.layers, and every layer kept.
OTHER_ROWS: dict[str, Declared] = {
    "layers": Declared(None, "chosen layers", "tab:purple"),
    "none": Declared(None, "unpruned", "black"),
}
# Strategies whose layers depend on the model's scores, not on positions alone.
SCORED = frozenset(s for s, d in STRATEGIES.items() if d.chooses is None)
