"""The pruning core: exact kept indices per strategy, and every rejected request."""

from __future__ import annotations

import pytest

from sbert_exp.pruning.rules import (
    PruningError,
    check_layers,
    kept_layers,
    pruning_label,
    select_layers,
)
from sbert_exp.pruning.strategies import SCORED, Strategy


@pytest.mark.parametrize(
    ("num_layers", "keep", "strategy", "expected"),
    [
        (12, 2, "top", [0, 1]),
        (12, 6, "top", [0, 1, 2, 3, 4, 5]),
        (12, 12, "top", list(range(12))),
        (12, 2, "bottom", [10, 11]),
        (12, 6, "bottom", [6, 7, 8, 9, 10, 11]),
        (12, 12, "bottom", list(range(12))),
        (12, 2, "middle", [0, 11]),
        (12, 6, "middle", [0, 1, 2, 9, 10, 11]),
        (12, 12, "middle", list(range(12))),
        (12, 1, "middle", [0]),
        (12, 3, "middle", [0, 1, 11]),
        (12, 5, "middle", [0, 1, 2, 10, 11]),
        (6, 2, "top", [0, 1]),
        (6, 2, "bottom", [4, 5]),
        (6, 4, "middle", [0, 1, 4, 5]),
        (1, 1, "bottom", [0]),
        # alternate: 11 9 7 5 3 1 go first, then 10 6 2, then 4, then 8; layer 0 stays.
        (12, 12, "alternate", list(range(12))),
        (12, 9, "alternate", [0, 1, 2, 3, 4, 5, 6, 8, 10]),
        (12, 6, "alternate", [0, 2, 4, 6, 8, 10]),
        (12, 4, "alternate", [0, 2, 4, 8]),
        (12, 3, "alternate", [0, 4, 8]),
        (12, 2, "alternate", [0, 8]),
        (12, 1, "alternate", [0]),
        (6, 3, "alternate", [0, 2, 4]),
        (6, 2, "alternate", [0, 4]),
        (7, 4, "alternate", [0, 2, 4, 6]),  # odd depth: 5 3 1 go first, the top layer stays
        (1, 1, "alternate", [0]),
    ],
)
def test_select_layers_table(num_layers, keep, strategy, expected):
    assert select_layers(num_layers, keep, strategy) == expected
    assert select_layers(num_layers, keep, Strategy(strategy)) == expected


@pytest.mark.parametrize("strategy", sorted(set(Strategy) - SCORED))
@pytest.mark.parametrize("keep", range(1, 13))
def test_every_strategy_keeps_exactly_keep_distinct_ascending_layers(strategy, keep):
    kept = select_layers(12, keep, strategy)
    assert len(kept) == keep
    assert kept == sorted(set(kept))
    assert all(0 <= i < 12 for i in kept)


@pytest.mark.parametrize("strategy", sorted(SCORED))
def test_scored_strategies_leave_the_choice_to_the_scores(strategy):
    assert kept_layers(12, 6, strategy) is None  # known once the model is scored
    assert kept_layers(12, 12, strategy) == list(range(12))  # nothing to choose
    assert kept_layers(12, 6, strategy, layers=[1, 2]) == [1, 2]
    with pytest.raises(PruningError, match="pruning.keep=13 is out of range"):
        kept_layers(12, 13, strategy)
    with pytest.raises(PruningError, match="chooses layers from the model's scores"):
        select_layers(12, 6, strategy)


@pytest.mark.parametrize(
    ("keep", "message"),
    [
        (0, r"pruning.keep=0 is out of range: the base model has 12 layers, "
            r"choose pruning.keep between 1 and 12"),
        (13, r"pruning.keep=13 is out of range: the base model has 12 layers"),
        (-1, r"pruning.keep=-1 is out of range"),
        (2.5, r"pruning.keep=2.5 is not a whole number of layers"),
        (True, r"pruning.keep=True is not a whole number of layers"),
    ],
)
def test_select_layers_rejects_bad_keep(keep, message):
    with pytest.raises(PruningError, match=message):
        select_layers(12, keep, "top")


def test_select_layers_rejects_unknown_strategy():
    with pytest.raises(PruningError, match=r"pruning.strategy='middel' is unknown: "
                                           r"choose one of top, middle, bottom, alternate"):
        select_layers(12, 6, "middel")


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([0, 0], r"pruning.layers=\[0, 0\] repeats layer 0: list each kept layer once"),
        ([], r"pruning.layers=\[\] keeps no layer"),
        ([0, 12], r"has index 12, outside the base model's 12 layers: use indices 0 to 11"),
        ([-1], r"has index -1"),
        ([5, 2], r"not in increasing order: write it as \[2, 5\]"),
    ],
)
def test_check_layers_rejects(layers, message):
    with pytest.raises(PruningError, match=message):
        check_layers(12, layers)


def test_kept_layers_precedence():
    assert kept_layers(12, 2, "top", layers=[3, 7]) == [3, 7]  # explicit layers win
    assert kept_layers(12, None, "top") == list(range(12))  # no keep: unpruned
    assert kept_layers(12, 2, "bottom") == [10, 11]


@pytest.mark.parametrize(
    ("keep", "strategy", "layers", "expected"),
    [
        (6, "top", None, ["top", "keep6"]),
        (2, "middle", None, ["middle", "keep2"]),
        (2, Strategy.bottom, None, ["bottom", "keep2"]),
        (12, "top", None, ["top", "keep12"]),  # keep=depth is named as asked, not "keepall"
        (13, "top", None, ["top", "keep13"]),  # not checked: a failing job is named too
        (6, "top", [0, 2, 5], ["layers", "keep3"]),  # explicit layers win over keep, strategy
        (None, "bottom", [4], ["layers", "keep1"]),
        (None, "top", None, ["keepall"]),  # pruning=unpruned: every layer
        (None, "middle", None, ["keepall"]),
    ],
)
def test_pruning_label_table(keep, strategy, layers, expected):
    assert pruning_label(keep, strategy, layers) == expected


def test_pruning_label_rejects_unknown_strategy():
    with pytest.raises(PruningError, match=r"pruning.strategy='middel' is unknown"):
        pruning_label(6, "middel")
