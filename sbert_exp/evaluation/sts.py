"""STS: Spearman and Pearson of cosine similarity against gold scores, as sentence-transformers'
EmbeddingSimilarityEvaluator computes them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from datasets import Dataset

from sbert_exp.evaluation.intervals import Sample, sts_sample


def encode_unique(model, sentences: Sequence[str], batch_size: int) -> dict[str, np.ndarray]:
    """Embed each distinct sentence once; returns sentence -> embedding.

    `encode` prepends the model's default prompt (see `modeling.set_prefix_prompt`), as it does
    for anyone who loads the saved model.
    """
    unique = list(dict.fromkeys(sentences))
    emb = model.encode(unique, batch_size=batch_size, convert_to_numpy=True,
                       show_progress_bar=len(unique) > 1000)
    return dict(zip(unique, emb, strict=True))


def _capturing_evaluator():
    """sentence-transformers' `EmbeddingSimilarityEvaluator`, keeping the embeddings it encodes
    (`embed_inputs`: the first and second sentences, in that order) for the pairs' cosines."""
    from sentence_transformers.sentence_transformer.evaluation import (
        EmbeddingSimilarityEvaluator,
    )

    class Capturing(EmbeddingSimilarityEvaluator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.captured: list[np.ndarray] = []

        def embed_inputs(self, model, sentences, **kwargs) -> np.ndarray:
            out = super().embed_inputs(model, sentences, **kwargs)
            self.captured.append(out)
            return out

    return Capturing


def sts_evaluated(model, pairs: Dataset, batch_size: int) -> tuple[dict[str, float], Sample]:
    """Spearman and Pearson correlation of cosine similarity with the gold scores, and the
    Spearman's sample (the gold scores and each pair's cosine: `intervals.sts_sample`).

    Computed by sentence-transformers' own `EmbeddingSimilarityEvaluator`, so that anyone who
    reloads the saved model and runs that evaluator at the same batch size gets the logged score
    to the last digit; the cosines are its own (`pairwise_cos_sim` of the embeddings it
    encoded), so the sample's Spearman is the logged one. (Embedding each distinct sentence once
    would save 7.5% of the encoding on STSb test, but batches other sentences together, and
    padding alone moves Spearman by about 2e-6.)
    """
    from sentence_transformers.util import pairwise_cos_sim

    evaluator = _capturing_evaluator()(
        pairs["sentence1"], pairs["sentence2"], pairs["score"], batch_size=batch_size,
        similarity_fn_names=["cosine"], write_csv=False, show_progress_bar=False)
    scores = evaluator(model)
    first, second = evaluator.captured
    cosines = pairwise_cos_sim(first, second).detach().cpu().numpy()
    return ({name: float(scores[name]) for name in ("spearman_cosine", "pearson_cosine")},
            sts_sample(pairs["score"], cosines))


def sts_scores(model, pairs: Dataset, batch_size: int) -> dict[str, float]:
    """`sts_evaluated`'s scores."""
    return sts_evaluated(model, pairs, batch_size)[0]


def table_cosines(table: dict[str, np.ndarray], pairs: Dataset) -> np.ndarray:
    """Each pair's cosine from embeddings already computed (`table`: sentence -> embedding)."""
    u = np.stack([table[s] for s in pairs["sentence1"]]).astype(np.float64)
    v = np.stack([table[s] for s in pairs["sentence2"]]).astype(np.float64)
    return (u * v).sum(1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))


def sts_from_embeddings(table: dict[str, np.ndarray], pairs: Dataset) -> dict[str, float]:
    """`sts_scores` from embeddings already computed (`table`: sentence -> embedding), as
    `EmbeddingSimilarityEvaluator` computes them: cosine of each pair against the gold scores."""
    from scipy.stats import pearsonr, spearmanr

    cosine = table_cosines(table, pairs)
    gold = np.asarray(pairs["score"], dtype=np.float64)
    return {"spearman_cosine": float(spearmanr(gold, cosine).statistic),
            "pearson_cosine": float(pearsonr(gold, cosine).statistic)}


def sample_from_embeddings(table: dict[str, np.ndarray], pairs: Dataset) -> Sample:
    """The Spearman's sample of `sts_from_embeddings`."""
    return sts_sample(pairs["score"], table_cosines(table, pairs))
