"""Layer importance from hidden states: pure functions, tensors in, a score per layer/block out."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

# Scores and their choices. Higher block influence = a more important layer: keep_highest.
# Lower angular distance = a more redundant block: best_block_start, then remove_block.
# Greedy removal asks the caller's score of each candidate model: greedy_path, kept_after.


def _non_padding_tokens(hidden: Sequence[Tensor], mask: Tensor) -> list[Tensor]:
    """Each hidden state's non-padding token vectors, [tokens, hidden] in float64."""
    if len(hidden) < 2:
        raise ValueError(
            f"need at least 2 hidden states (the embeddings and one layer's output), "
            f"got {len(hidden)}"
        )
    shape = tuple(hidden[0].shape)
    if len(shape) != 3:
        raise ValueError(f"hidden states must be [batch, tokens, hidden], got shape {shape}")
    for i, h in enumerate(hidden):
        if tuple(h.shape) != shape:
            raise ValueError(
                f"hidden state {i} has shape {tuple(h.shape)}, but hidden state 0 has {shape}: "
                f"all must match"
            )
    if tuple(mask.shape) != shape[:2]:
        raise ValueError(
            f"mask has shape {tuple(mask.shape)}, but the hidden states' [batch, tokens] "
            f"is {shape[:2]}"
        )
    if not ((mask == 0) | (mask == 1)).all():
        raise ValueError("mask must hold only 0 (padding) and 1 (token)")
    keep = mask.bool()
    if not keep.any():
        raise ValueError("mask marks no token as non-padding: there is nothing to average")
    # Selecting tokens before any arithmetic keeps padding (garbage, even nan) out entirely.
    return [h[keep].to(torch.float64) for h in hidden]


def _token_cosines(a: Tensor, b: Tensor) -> Tensor:
    """Cosine of each token's two vectors, clamped to [-1, 1]."""
    dot = (a * b).sum(-1)
    # sqrt(|a|^2 |b|^2) rather than |a| |b|: sqrt(x * x) == x in IEEE arithmetic, so an
    # unchanged token has cosine exactly 1 (BI 0, angle 0), a negated one exactly -1.
    # The floor only matters for an all-zero vector, whose cosine is then 0, not nan.
    norms = ((a * a).sum(-1) * (b * b).sum(-1)).clamp_min(torch.finfo(torch.float64).tiny)
    return (dot / norms.sqrt()).clamp(-1.0, 1.0)


def block_influence(hidden: Sequence[Tensor], mask: Tensor) -> list[float]:
    """Block influence of each of the n layers: 1 - mean cos(layer input, layer output).

    `hidden` holds the n + 1 hidden states of an n-layer encoder, each [batch, tokens, hidden],
    as `output_hidden_states=True` returns them: index 0 is the embeddings' output, index i the
    output of layer i - 1; `mask` is the [batch, tokens] 0/1 attention mask. The mean runs over
    every non-padding token of the batch (each token counts once, so long sentences weigh
    more), in float64. BI is 0 for a layer that changes nothing and 2 for one that negates
    every token; a higher BI marks a more important layer (ShortGPT, Men et al. 2024).
    """
    tokens = _non_padding_tokens(hidden, mask)
    return [
        1.0 - _token_cosines(tokens[i], tokens[i + 1]).mean().item()
        for i in range(len(tokens) - 1)
    ]


def angular_distances(hidden: Sequence[Tensor], mask: Tensor, block: int) -> list[float]:
    """Angular distance across each run of `block` layers: one value per start 0 .. n - block.

    The value for start l is the mean over non-padding tokens of arccos(cos(hidden[l],
    hidden[l + block])) / pi, in [0, 1]: 0 when the block changes nothing, 1 when it negates
    every token (Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper Layers",
    who read the last token of a decoder; an encoder has no such token, so all are averaged).
    `hidden` and `mask` are as in `block_influence`. hidden[l] is layer l's input and
    hidden[l + block] layer l + block - 1's output, so start l scores removing layers
    l .. l + block - 1: `remove_block(n, best_block_start(distances), block)`. `block` may be
    0 to n - 1; block 0 (keep every layer) gives n + 1 zeros, so keep = n needs no special case.
    """
    tokens = _non_padding_tokens(hidden, mask)
    num_layers = len(tokens) - 1
    _check_block(num_layers, block)
    return [
        (torch.arccos(_token_cosines(tokens[start], tokens[start + block])) / math.pi)
        .mean()
        .item()
        for start in range(num_layers - block + 1)
    ]


def keep_highest(scores: Sequence[float], keep: int) -> list[int]:
    """Indices (ascending) of the `keep` highest scores; of equal scores the lower index wins.

    Breaking ties toward the lower layer makes the choice deterministic and, like the other
    strategies, favours the lower layers every later layer builds on.
    """
    _check_scores(scores, "scores")
    _check_count(len(scores), keep, "keep")
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return sorted(ranked[:keep])


def best_block_start(distances: Sequence[float]) -> int:
    """The start of the block with the smallest angular distance; ties go to the lowest start."""
    _check_scores(distances, "distances")
    return min(range(len(distances)), key=lambda i: (distances[i], i))


def remove_block(num_layers: int, start: int, block: int) -> list[int]:
    """Kept layer indices (ascending) after removing layers start .. start + block - 1."""
    _check_block(num_layers, block)
    last = num_layers - block
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= last:
        raise ValueError(
            f"start={start!r} is out of range for a block of {block} in {num_layers} layers: "
            f"choose start between 0 and {last}"
        )
    return list(range(start)) + list(range(start + block, num_layers))


def greedy_path(
    num_layers: int, down_to: int, score: Callable[[list[int]], float]
) -> list[int]:
    """Layers in the order greedy removal takes them out, until `down_to` layers remain.

    Each step tries removing every remaining layer, calls `score(kept)` (kept: the ascending
    layers that would remain, e.g. scored as the STS dev Spearman of a model with only those
    layers) and removes the layer whose removal scores highest; of equal scores the lower
    index goes. A nan score (e.g. Spearman of a model whose embeddings all coincide) ranks below
    every number rather than ending the search. A step depends only on the layers still
    there, so the path down to keep=2 starts with the path down to keep=6: compute it once for
    the smallest keep and read every larger keep off it with `kept_after`. That costs
    n + (n - 1) + ... + (down_to + 1) calls of `score` (75 for 12 layers down to 2).
    """
    _check_count(num_layers, down_to, "down_to")
    kept, path = list(range(num_layers)), []
    while len(kept) > down_to:
        # max over (score, -layer): the highest score, and of equal scores the lowest layer.
        best = max(kept, key=lambda layer: (_rank(score([i for i in kept if i != layer])), -layer))
        path.append(best)
        kept.remove(best)
    return path


def kept_after(num_layers: int, path: Sequence[int], keep: int) -> list[int]:
    """Kept layers (ascending) once the first num_layers - keep layers of `path` are removed."""
    _check_count(num_layers, keep, "keep")
    path = list(path)
    for layer in path:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < num_layers:
            raise ValueError(
                f"path {path} has layer {layer!r}, outside {num_layers} layers: "
                f"use indices 0 to {num_layers - 1}"
            )
    if len(set(path)) != len(path):
        raise ValueError(f"path {path} removes a layer twice: a removal path lists each once")
    if len(path) < num_layers - keep:
        raise ValueError(
            f"path removes only {len(path)} layers, keep={keep} needs {num_layers - keep}: "
            f"compute the path down to keep={keep} or fewer"
        )
    removed = set(path[: num_layers - keep])
    return [i for i in range(num_layers) if i not in removed]


def greedy_kept(num_layers: int, keep: int, score: Callable[[list[int]], float]) -> list[int]:
    """Kept layers (ascending) after greedy removal down to `keep`; see `greedy_path`."""
    return kept_after(num_layers, greedy_path(num_layers, keep, score), keep)


def _rank(value: float) -> float:
    value = float(value)
    return -math.inf if math.isnan(value) else value


def _check_count(num_layers: int, keep: int, name: str) -> None:
    if num_layers < 1:
        raise ValueError(f"the model has {num_layers} layers; there is nothing to keep")
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= num_layers:
        raise ValueError(
            f"{name}={keep!r} is out of range for {num_layers} layers: "
            f"choose {name} between 1 and {num_layers}"
        )


def _check_block(num_layers: int, block: int) -> None:
    if num_layers < 1:
        raise ValueError(f"the model has {num_layers} layers; there is no block to remove")
    if isinstance(block, bool) or not isinstance(block, int) or not 0 <= block < num_layers:
        raise ValueError(
            f"block={block!r} is out of range for {num_layers} layers: choose block between "
            f"0 and {num_layers - 1} (at least one layer must stay)"
        )


def _check_scores(scores: Sequence[float], name: str) -> None:
    if len(scores) == 0:
        raise ValueError(f"{name} is empty: there is nothing to choose from")
    for i, s in enumerate(scores):
        if math.isnan(s):
            raise ValueError(f"{name}[{i}] is nan: a score must be a number to be ranked")
