"""How the report shows each strategy: its colour in every plot, and a scored strategy's
layer-score chart axes. Rows that name no strategy (explicit layers, the unpruned model) too."""

from __future__ import annotations

from sbert_exp.pruning.strategies import SCORED, STRATEGIES, Strategy

# Report rows that name no strategy: explicit pruning.layers, and every layer kept.
OTHER_ROWS: dict[str, str] = {"layers": "chosen layers", "none": "unpruned"}
# Every row's name in words, in report order.
LABELS: dict[str, str] = {**{str(s): d.label for s, d in STRATEGIES.items()}, **OTHER_ROWS}
COLORS: dict[str, str] = {
    "top": "tab:blue", "middle": "tab:orange", "bottom": "tab:green", "alternate": "tab:red",
    "block_influence": "tab:brown", "angular": "tab:cyan", "greedy_dev": "tab:olive",
    "layers": "tab:purple", "none": "black",
}
# (x, y) of each scored strategy's layer-score chart (the metric in `sbert_exp.selection`).
SCORE_AXES: dict[Strategy, tuple[str, str]] = {
    Strategy.block_influence: ("layer", "block influence: 1 - mean cos(input, output)"),
    Strategy.angular: ("first layer of the removed block", "angular distance / pi"),
    Strategy.greedy_dev: ("layers removed", "STS dev Spearman"),
}
# Scored strategies whose chart has a bar per layer: the kept layers' bars are filled.
FILLS_KEPT = frozenset({Strategy.block_influence})
assert set(COLORS) == set(LABELS), "every row has its colour"
assert set(SCORE_AXES) == SCORED, "every scored strategy has its chart axes"
