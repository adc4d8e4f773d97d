"""Every layer strategy, declared once: its name, how it chooses the kept layers, and what a
scored one scores on. Everything that lists strategies reads `STRATEGIES`.

A new positional strategy is one entry here (a function of depth and keep); a new scored one is
an entry with `chooses=None` and its evidence, plus its scorer and MLflow metric in
`sbert_exp.selection`. How the report draws each (colour, chart axes) is in
`sbert_exp.report.style`.
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
    # Chosen from scores of the base model on calibration data (sbert_exp.selection):
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


class Evidence(StrEnum):
    """What a scored strategy scores the base model's layers on."""

    hidden_states = "hidden_states"  # its hidden states on calibration sentences
    sts_dev = "sts_dev"  # STS dev Spearman with layers removed (dataset.sts_dev)


@dataclass(frozen=True)
class Declared:
    """How one strategy chooses, and its name in words."""

    # Positional: (depth, keep) -> kept indices. None: scored, chosen from the loaded model's
    # scores by `sbert_exp.selection`.
    chooses: Callable[[int, int], list[int]] | None
    label: str  # its name in words: plots' lines, model cards ("top removed", "angular choice")
    evidence: Evidence | None = None  # scored: what it scores layers on


# In report order.
STRATEGIES: dict[Strategy, Declared] = {
    Strategy.top: Declared(_keep_top_removed, "top removed"),
    Strategy.middle: Declared(_keep_middle_removed, "middle removed"),
    Strategy.bottom: Declared(_keep_bottom_removed, "bottom removed"),
    Strategy.alternate: Declared(_keep_alternate_removed, "alternate removed"),
    Strategy.block_influence: Declared(None, "block_influence choice", Evidence.hidden_states),
    Strategy.angular: Declared(None, "angular choice", Evidence.hidden_states),
    Strategy.greedy_dev: Declared(None, "greedy_dev choice", Evidence.sts_dev),
}
assert set(STRATEGIES) == set(Strategy), "every Strategy is declared"
assert all((d.chooses is None) == (d.evidence is not None) for d in STRATEGIES.values()), \
    "a strategy either chooses by position or names its evidence"
# Strategies whose layers depend on the model's scores, not on positions alone.
SCORED = frozenset(s for s, d in STRATEGIES.items() if d.chooses is None)


def evidence(strategy: Strategy | str) -> Evidence | None:
    """What `strategy` scores layers on; None for a positional strategy."""
    return STRATEGIES[Strategy(strategy)].evidence
