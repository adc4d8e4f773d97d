"""Layer scores on synthetic hidden states whose answers are known, and every rejected input."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from sbert_exp.pruning.importance import (
    angular_distances,
    best_block_start,
    block_influence,
    greedy_kept,
    greedy_path,
    keep_highest,
    kept_after,
    remove_block,
)

BATCH, TOKENS, HIDDEN = 2, 5, 4


def _rotation(degrees: float) -> Tensor:
    """Rotate by `degrees` in the plane of hidden dims 0 and 1; the other dims stay."""
    r = torch.eye(HIDDEN, dtype=torch.float64)
    if degrees == 90:  # exact entries: cos(pi / 2) is 6e-17 in floating point, not 0
        c, s = 0.0, 1.0
    else:
        c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    r[0, 0], r[0, 1], r[1, 0], r[1, 1] = c, -s, s, c
    return r


# A synthetic "layer" maps [batch, tokens, hidden] to the same shape.
LAYERS: dict[str, Callable[[Tensor], Tensor]] = {
    "identity": lambda h: h,
    "negate": lambda h: -h,
    "rotate90": lambda h: h @ _rotation(90).to(h.dtype).T,
    "rotate60": lambda h: h @ _rotation(60).T,
}


def _embeddings(dtype: torch.dtype = torch.float64, seed: int = 0) -> Tensor:
    """Random token vectors in the rotation plane (dims 2, 3 zero): a rotation turns each
    token by exactly its angle, so every expected score below is known in closed form."""
    g = torch.Generator().manual_seed(seed)
    h = torch.zeros(BATCH, TOKENS, HIDDEN, dtype=torch.float64)
    h[..., :2] = torch.randn(BATCH, TOKENS, 2, generator=g, dtype=torch.float64)
    return h.to(dtype)


def _hidden(layers: list[str], dtype: torch.dtype = torch.float64) -> list[Tensor]:
    """What `output_hidden_states=True` returns: the embeddings, then each layer's output."""
    hidden = [_embeddings(dtype)]
    for name in layers:
        hidden.append(LAYERS[name](hidden[-1]))
    return hidden


def _full_mask() -> Tensor:
    return torch.ones(BATCH, TOKENS, dtype=torch.long)


def _close(got: list[float], expected: list[float]) -> bool:
    return len(got) == len(expected) and all(
        abs(g - e) < 1e-9 for g, e in zip(got, expected, strict=True)
    )


MIXED = ["identity", "negate", "rotate90", "rotate60"]


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        (["identity"] * 3, [0.0, 0.0, 0.0]),
        (["negate"], [2.0]),
        (["rotate90"], [1.0]),
        (["rotate60"], [0.5]),  # 1 - cos 60
        (MIXED, [0.0, 2.0, 1.0, 0.5]),
        (["negate", "negate"], [2.0, 2.0]),
    ],
)
def test_block_influence_table(layers, expected):
    assert _close(block_influence(_hidden(layers), _full_mask()), expected)


@pytest.mark.parametrize(
    ("layers", "block", "expected"),
    [
        (["identity"] * 3, 1, [0.0, 0.0, 0.0]),
        (["identity"] * 3, 2, [0.0, 0.0]),
        (["negate", "identity"], 1, [1.0, 0.0]),
        (MIXED, 1, [0.0, 1.0, 0.5, 1 / 3]),
        # Blocks compose: negate then rotate 90 is 90 degrees off; rotate 90 then 60 is 150.
        (MIXED, 2, [1.0, 0.5, 5 / 6]),
        # Negate, rotate 90, rotate 60 turn a token 330 degrees: 30 degrees from where it was.
        (MIXED, 3, [0.5, 1 / 6]),
        (["negate", "negate", "identity"], 2, [0.0, 1.0]),  # two negations undo each other
        (["negate", "rotate90"], 0, [0.0, 0.0, 0.0]),  # block 0 removes nothing: n + 1 zeros
    ],
)
def test_angular_distances_table(layers, block, expected):
    assert _close(angular_distances(_hidden(layers), _full_mask(), block), expected)


def test_unchanged_states_score_exactly_zero():
    hidden = _hidden(["identity", "identity"])
    assert block_influence(hidden, _full_mask()) == [0.0, 0.0]
    assert angular_distances(hidden, _full_mask(), 1) == [0.0, 0.0]
    assert angular_distances(hidden, _full_mask(), 0) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("layers", "bi", "angle"),
    [
        (["identity"], [0.0], [0.0]),
        (["negate"], [2.0], [1.0]),
        (["rotate90"], [1.0], [0.5]),
    ],
)
def test_float32_states_are_scored_in_float64(layers, bi, angle):
    hidden = _hidden(layers, dtype=torch.float32)
    assert _close(block_influence(hidden, _full_mask()), bi)
    hidden.append(hidden[-1])  # an identity layer on top, so a block of 1 has two starts
    assert _close(angular_distances(hidden, _full_mask(), 1), angle + [0.0])


def _pad(hidden: list[Tensor], garbage: str) -> tuple[list[Tensor], Tensor]:
    """The same sentences with 3 padding positions appended, filled with `garbage`."""
    g = torch.Generator().manual_seed(1)
    padded = []
    for h in hidden:  # different garbage in every hidden state, as a real encoder gives
        pad = {
            "random": 1e3 * torch.randn(BATCH, 3, HIDDEN, generator=g, dtype=torch.float64),
            "nan": torch.full((BATCH, 3, HIDDEN), math.nan, dtype=torch.float64),
            "inf": torch.full((BATCH, 3, HIDDEN), math.inf, dtype=torch.float64),
            "zeros": torch.zeros(BATCH, 3, HIDDEN, dtype=torch.float64),
        }[garbage]
        padded.append(torch.cat([h, pad], dim=1))
    mask = torch.cat([_full_mask(), torch.zeros(BATCH, 3, dtype=torch.long)], dim=1)
    return padded, mask


@pytest.mark.parametrize("garbage", ["random", "nan", "inf", "zeros"])
def test_padding_tokens_do_not_change_the_scores(garbage):
    hidden = _hidden(MIXED)
    padded, mask = _pad(hidden, garbage)
    assert block_influence(padded, mask) == block_influence(hidden, _full_mask())
    for block in (1, 2, 3):
        assert angular_distances(padded, mask, block) == angular_distances(
            hidden, _full_mask(), block
        )


def test_the_mean_runs_over_tokens_not_sentences():
    # Sentence 0 has 3 tokens the layer keeps; sentence 1 has 1 token the layer negates.
    h0 = _embeddings()
    h1 = h0 * torch.tensor([1.0, -1.0], dtype=torch.float64).view(BATCH, 1, 1)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    # Per token: cos 1, 1, 1, -1 -> mean 0.5 (a mean of sentence means would give 0).
    assert _close(block_influence([h0, h1], mask), [0.5])
    assert _close(angular_distances([h0, h1, h1], mask, 1), [0.25, 0.0])


@pytest.mark.parametrize(
    ("scores", "keep", "expected"),
    [
        ([0.1, 0.5, 0.3], 1, [1]),
        ([0.1, 0.5, 0.3], 2, [1, 2]),
        ([0.1, 0.5, 0.3], 3, [0, 1, 2]),
        ([0.2, 0.2, 0.2, 0.2], 2, [0, 1]),  # all tied: the lowest layers
        ([0.1, 0.3, 0.2, 0.3], 1, [1]),  # 1 and 3 tie: the lower wins
        ([0.3, 0.1, 0.3, 0.3], 2, [0, 2]),
        ([-1.0, -3.0, -2.0], 2, [0, 2]),
        ([0.0, 2.0, 1.0, 0.5, 2.0, 0.0], 3, [1, 2, 4]),
    ],
)
def test_keep_highest_table(scores, keep, expected):
    assert keep_highest(scores, keep) == expected


@pytest.mark.parametrize(
    ("distances", "expected"),
    [
        ([0.3, 0.1, 0.2], 1),
        ([0.2, 0.1, 0.1], 1),  # 1 and 2 tie: the lower start
        ([0.0, 0.0], 0),
        ([5.0], 0),
        ([0.4, 0.3, 0.2, 0.1], 3),
    ],
)
def test_best_block_start_table(distances, expected):
    assert best_block_start(distances) == expected


@pytest.mark.parametrize(
    ("num_layers", "start", "block", "expected"),
    [
        (12, 4, 4, [0, 1, 2, 3, 8, 9, 10, 11]),
        (12, 0, 6, [6, 7, 8, 9, 10, 11]),
        (12, 6, 6, [0, 1, 2, 3, 4, 5]),
        (12, 0, 11, [11]),
        (12, 11, 1, list(range(11))),
        (12, 0, 0, list(range(12))),  # block 0: keep = n, nothing removed
        (6, 5, 1, [0, 1, 2, 3, 4]),
    ],
)
def test_remove_block_table(num_layers, start, block, expected):
    assert remove_block(num_layers, start, block) == expected


def test_angular_choice_composes_with_remove_block():
    # Layers 1 and 2 negate, so the block of 2 starting at 1 is the identity: it goes.
    hidden = _hidden(["rotate90", "negate", "negate", "rotate60"])
    distances = angular_distances(hidden, _full_mask(), 2)
    assert _close(distances, [0.5, 0.0, 1 - 1 / 3])
    assert remove_block(4, best_block_start(distances), 2) == [0, 3]


def _weights_score(weights: list[float]) -> Callable[[list[int]], float]:
    """Higher when the kept layers weigh less: greedy removes the heaviest layer first."""
    return lambda kept: -sum(weights[i] for i in kept)


WEIGHTS_12 = [5, 11, 0, 8, 2, 9, 4, 10, 1, 7, 3, 6]
PATH_12 = [1, 7, 5, 3, 9, 11, 0, 6, 10, 4]  # descending weight, down to keep=2


@pytest.mark.parametrize(
    ("weights", "down_to", "expected"),
    [
        (WEIGHTS_12, 2, PATH_12),
        (WEIGHTS_12, 6, PATH_12[:6]),
        (WEIGHTS_12, 12, []),
        ([3, 9, 1, 7, 5, 2], 1, [1, 3, 4, 0, 5]),
        ([1, 2, 2, 1], 1, [1, 2, 0]),  # ties go to the lower layer
        ([0, 0, 0, 0], 1, [0, 1, 2]),
    ],
)
def test_greedy_path_table(weights, down_to, expected):
    assert greedy_path(len(weights), down_to, _weights_score(weights)) == expected


@pytest.mark.parametrize(
    ("keep", "expected"),
    [
        (2, [2, 8]),
        (6, [0, 2, 4, 6, 8, 10]),
        (11, [0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
        (12, list(range(12))),
    ],
)
def test_one_path_serves_every_larger_keep(keep, expected):
    score = _weights_score(WEIGHTS_12)
    path = greedy_path(12, 2, score)
    assert kept_after(12, path, keep) == expected
    assert greedy_kept(12, keep, score) == expected
    assert greedy_path(12, keep, score) == path[: 12 - keep]


def test_greedy_scores_every_candidate_once_per_step():
    calls: list[list[int]] = []

    def score(kept: list[int]) -> float:
        calls.append(kept)
        return _weights_score(WEIGHTS_12)(kept)

    greedy_path(12, 2, score)
    assert len(calls) == sum(range(3, 13)) == 75
    assert calls[:2] == [list(range(1, 12)), [0] + list(range(2, 12))]
    # Step 2 runs without layer 1 (the first removed): 11 candidates of 10 layers each.
    assert calls[12] == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert all(len(kept) == 11 for kept in calls[:12])


@pytest.mark.parametrize(
    ("nan_when_removed", "expected"),
    [
        ({0}, [1]),  # layer 0 would win (weight 9), but its score is nan: 1 and 2 tie, 1 goes
        ({0, 1, 2}, [0]),  # every score nan: the lowest layer goes
    ],
)
def test_greedy_ranks_nan_below_every_number(nan_when_removed, expected):
    weights = [9, 1, 1]

    def score(kept: list[int]) -> float:
        removed = ({0, 1, 2} - set(kept)).pop()
        return math.nan if removed in nan_when_removed else -sum(weights[i] for i in kept)

    assert greedy_path(3, 2, score) == expected


@pytest.mark.parametrize(
    ("path", "keep", "expected"),
    [
        ([5, 0, 3], 3, [1, 2, 4]),
        ([5, 0, 3], 4, [1, 2, 3, 4]),
        ([5, 0, 3], 6, [0, 1, 2, 3, 4, 5]),
        ([], 6, [0, 1, 2, 3, 4, 5]),
    ],
)
def test_kept_after_table(path, keep, expected):
    assert kept_after(6, path, keep) == expected


H = _embeddings()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: block_influence([H], _full_mask()),
         "need at least 2 hidden states (the embeddings and one layer's output), got 1"),
        (lambda: angular_distances([], _full_mask(), 0),
         "need at least 2 hidden states (the embeddings and one layer's output), got 0"),
        (lambda: block_influence([H[0], H[0]], _full_mask()),
         "hidden states must be [batch, tokens, hidden], got shape (5, 4)"),
        (lambda: block_influence([H, H[..., :3]], _full_mask()),
         "hidden state 1 has shape (2, 5, 3), but hidden state 0 has (2, 5, 4): all must match"),
        (lambda: block_influence([H, H], _full_mask()[:, :4]),
         "mask has shape (2, 4), but the hidden states' [batch, tokens] is (2, 5)"),
        (lambda: block_influence([H, H], 2 * _full_mask()),
         "mask must hold only 0 (padding) and 1 (token)"),
        (lambda: block_influence([H, H], 0 * _full_mask()),
         "mask marks no token as non-padding: there is nothing to average"),
        (lambda: angular_distances([H, H, H], _full_mask(), 2),
         "block=2 is out of range for 2 layers: choose block between 0 and 1 "
         "(at least one layer must stay)"),
        (lambda: angular_distances([H, H, H], _full_mask(), -1),
         "block=-1 is out of range for 2 layers"),
        (lambda: keep_highest([0.1, 0.2, 0.3], 0),
         "keep=0 is out of range for 3 layers: choose keep between 1 and 3"),
        (lambda: keep_highest([0.1, 0.2, 0.3], 4),
         "keep=4 is out of range for 3 layers: choose keep between 1 and 3"),
        (lambda: keep_highest([], 1), "scores is empty: there is nothing to choose from"),
        (lambda: keep_highest([0.1, math.nan], 1),
         "scores[1] is nan: a score must be a number to be ranked"),
        (lambda: best_block_start([]), "distances is empty: there is nothing to choose from"),
        (lambda: best_block_start([math.nan, 0.1]),
         "distances[0] is nan: a score must be a number to be ranked"),
        (lambda: remove_block(12, 7, 6),
         "start=7 is out of range for a block of 6 in 12 layers: choose start between 0 and 6"),
        (lambda: remove_block(12, -1, 6), "start=-1 is out of range"),
        (lambda: remove_block(12, 0, 12),
         "block=12 is out of range for 12 layers: choose block between 0 and 11"),
        (lambda: remove_block(0, 0, 0), "the model has 0 layers; there is no block to remove"),
        (lambda: greedy_path(12, 0, _weights_score(WEIGHTS_12)),
         "down_to=0 is out of range for 12 layers: choose down_to between 1 and 12"),
        (lambda: greedy_path(12, 13, _weights_score(WEIGHTS_12)),
         "down_to=13 is out of range for 12 layers"),
        (lambda: greedy_kept(0, 1, _weights_score(WEIGHTS_12)),
         "the model has 0 layers; there is nothing to keep"),
        (lambda: kept_after(12, [1, 2], 6),
         "path removes only 2 layers, keep=6 needs 6: compute the path down to keep=6 or fewer"),
        (lambda: kept_after(12, [1, 1], 11),
         "path [1, 1] removes a layer twice: a removal path lists each once"),
        (lambda: kept_after(12, [12], 11),
         "path [12] has layer 12, outside 12 layers: use indices 0 to 11"),
        (lambda: kept_after(12, [], 0),
         "keep=0 is out of range for 12 layers: choose keep between 1 and 12"),
    ],
)
def test_impossible_inputs_raise_one_line(call, message):
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        call()
    assert "\n" not in str(info.value)
