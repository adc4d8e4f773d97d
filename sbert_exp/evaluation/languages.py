"""Bitext retrieval and agreement with the teacher: the metrics of the language sets
(`sbert_exp.data.languages` reads the sets; see it for what each measures)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from sbert_exp.data.languages import Loaded
from sbert_exp.evaluation.intervals import Sample, agreement_sample, bitext_sample


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def bitext_hits(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row i of `first` translates row i of `second`: for each row, whether its nearest
    neighbour by cosine on the other side is its translation, forward and backward."""
    sim = _unit(first) @ _unit(second).T
    target = np.arange(len(sim))
    return sim.argmax(axis=1) == target, sim.argmax(axis=0) == target


def bitext_accuracy(first: np.ndarray, second: np.ndarray) -> float:
    """The share of rows, in both directions, whose translation is retrieved (`bitext_hits`),
    averaged."""
    forward, backward = bitext_hits(first, second)
    return (float(forward.mean()) + float(backward.mean())) / 2


def pair_cosines(emb: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    u = _unit(emb)
    return (u[pairs[:, 0]] * u[pairs[:, 1]]).sum(axis=1)


def agreement(model_emb: np.ndarray, teacher_emb: np.ndarray, pairs: np.ndarray) -> float:
    """Spearman correlation of the model's and the teacher's cosines over `pairs`; 0 where the
    model gives every pair the same cosine (it keeps none of the teacher's order)."""
    from scipy.stats import spearmanr

    ours = pair_cosines(model_emb, pairs)
    if np.ptp(ours) == 0:
        return 0.0
    return float(spearmanr(ours, pair_cosines(teacher_emb, pairs)).statistic)


def set_score(loaded: Loaded, table: Mapping[str, np.ndarray],
              teacher: Mapping[str, np.ndarray]) -> float:
    """The set's metric from embeddings already computed (sentence -> embedding); `teacher`:
    the unpruned teacher's, which agreement compares with."""
    if loaded.kind == "bitext":
        return bitext_accuracy(np.stack([table[s] for s in loaded.first]),
                               np.stack([table[s] for s in loaded.second]))
    return agreement(np.stack([table[s] for s in loaded.first]),
                     np.stack([teacher[s] for s in loaded.first]), loaded.pairs)


def set_sample(loaded: Loaded, table: Mapping[str, np.ndarray],
               teacher: Mapping[str, np.ndarray]) -> Sample:
    """The per-item columns of `set_score`, to draw again (`sbert_exp.evaluation.intervals`):
    bitext, each pair retrieved or not both ways; agreement, each pair's cosine, the model's and
    the teacher's."""
    first = np.stack([table[s] for s in loaded.first])
    if loaded.kind == "bitext":
        return bitext_sample(*bitext_hits(first, np.stack([table[s] for s in loaded.second])))
    return agreement_sample(pair_cosines(first, loaded.pairs),
                            pair_cosines(np.stack([teacher[s] for s in loaded.first]),
                                         loaded.pairs))


def language_evaluated(model, sets: Sequence[Loaded], teacher: Mapping[str, np.ndarray],
                       batch_size: int) -> tuple[dict[str, float], dict[str, Sample]]:
    """Every set's metric for `model`, and its sample; each distinct sentence encoded once."""
    if not sets:
        return {}, {}
    sentences = list(dict.fromkeys(s for loaded in sets for s in loaded.sentences))
    emb = model.encode(sentences, batch_size=batch_size, convert_to_numpy=True,
                       show_progress_bar=False)
    table = dict(zip(sentences, emb, strict=True))
    return ({loaded.metric: set_score(loaded, table, teacher) for loaded in sets},
            {loaded.metric: set_sample(loaded, table, teacher) for loaded in sets})


def language_scores(model, sets: Sequence[Loaded], teacher: Mapping[str, np.ndarray],
                    batch_size: int) -> dict[str, float]:
    """`language_evaluated`'s scores."""
    return language_evaluated(model, sets, teacher, batch_size)[0]
