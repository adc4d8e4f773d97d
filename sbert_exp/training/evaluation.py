"""Embedding quality and speed: STS Spearman, NLI accuracy, encode throughput."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from datasets import Dataset
from torch import nn

from sbert_exp.model.modeling import layers, layers_view


def encode_unique(model, sentences: Sequence[str], batch_size: int) -> dict[str, np.ndarray]:
    """Embed each distinct sentence once; returns sentence -> embedding.

    `encode` prepends the model's default prompt (see `modeling.set_prefix_prompt`), as it does
    for anyone who loads the saved model.
    """
    unique = list(dict.fromkeys(sentences))
    emb = model.encode(unique, batch_size=batch_size, convert_to_numpy=True,
                       show_progress_bar=len(unique) > 1000)
    return dict(zip(unique, emb, strict=True))


def _pair_embeddings(model, pairs: Dataset, batch_size: int):
    s1, s2 = pairs["sentence1"], pairs["sentence2"]
    table = encode_unique(model, [*s1, *s2], batch_size)
    return np.stack([table[s] for s in s1]), np.stack([table[s] for s in s2])


def sts_scores(model, pairs: Dataset, batch_size: int) -> dict[str, float]:
    """Spearman and Pearson correlation of cosine similarity with the gold scores.

    Computed by sentence-transformers' own `EmbeddingSimilarityEvaluator`, so that anyone who
    reloads the saved model and runs that evaluator at the same batch size gets the logged score
    to the last digit. (Embedding each distinct sentence once would save 7.5% of the encoding
    on STSb test, but batches other sentences together, and padding alone moves Spearman by
    about 2e-6.)
    """
    from sentence_transformers.sentence_transformer.evaluation import (
        EmbeddingSimilarityEvaluator,
    )

    evaluator = EmbeddingSimilarityEvaluator(
        pairs["sentence1"], pairs["sentence2"], pairs["score"], batch_size=batch_size,
        similarity_fn_names=["cosine"], write_csv=False, show_progress_bar=False)
    scores = evaluator(model)
    return {name: float(scores[name]) for name in ("spearman_cosine", "pearson_cosine")}


def sts_from_embeddings(table: dict[str, np.ndarray], pairs: Dataset) -> dict[str, float]:
    """`sts_scores` from embeddings already computed (`table`: sentence -> embedding), as
    `EmbeddingSimilarityEvaluator` computes them: cosine of each pair against the gold scores."""
    from scipy.stats import pearsonr, spearmanr

    u = np.stack([table[s] for s in pairs["sentence1"]]).astype(np.float64)
    v = np.stack([table[s] for s in pairs["sentence2"]]).astype(np.float64)
    cosine = (u * v).sum(1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))
    gold = np.asarray(pairs["score"], dtype=np.float64)
    return {"spearman_cosine": float(spearmanr(gold, cosine).statistic),
            "pearson_cosine": float(pearsonr(gold, cosine).statistic)}


def nli_accuracy(model, classifier: nn.Linear, pairs: Dataset,
                 batch_size: int) -> dict[str, float]:
    """Accuracy of the SBERT softmax head on (u, v, |u - v|) over NLI pairs."""
    u, v = _pair_embeddings(model, pairs, batch_size)
    features = torch.from_numpy(np.concatenate([u, v, np.abs(u - v)], axis=1))
    weight = classifier.weight.detach().float().cpu()
    with torch.no_grad():
        logits = features @ weight.T + classifier.bias.detach().float().cpu()
    predicted = logits.argmax(dim=1).numpy()
    gold = np.asarray(pairs["label"])
    return {"accuracy": float((predicted == gold).mean())}


def _encode_seconds(model, sentences: list[str], batch_size: int) -> float:
    if torch.cuda.is_available() and str(model.device).startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    model.encode(sentences, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    if torch.cuda.is_available() and str(model.device).startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def speed_vs_unpruned(model, keep: Sequence[int], sentences: list[str], batch_size: int,
                      rounds: int) -> dict[str, float]:
    """Encode throughput with all layers and with `keep`, alternated on the same sentences.

    Both variants run in this process on the same weights (the pruned one is a view of the
    full stack), after one warm-up each; the best of `rounds` timings is kept.
    """
    full = list(range(len(layers(model))))
    # Keeping every layer is the unpruned model itself: time it once, the ratio is 1 by definition.
    variants = [("full", full)] if list(keep) == full else [("full", full), ("pruned", list(keep))]
    timings: dict[str, list[float]] = {"full": [], "pruned": []}
    for warmup in (True, *([False] * rounds)):
        for name, idx in variants:
            with layers_view(model, idx):
                seconds = _encode_seconds(model, sentences, batch_size)
            if not warmup:
                timings[name].append(seconds)
    full_s = min(timings["full"])
    pruned_s = min(timings["pruned"]) if timings["pruned"] else full_s
    return {
        "sentences_per_s": len(sentences) / pruned_s,
        "sentences_per_s_unpruned": len(sentences) / full_s,
        "speedup_vs_unpruned": full_s / pruned_s,
    }


def best_encode_seconds(models: dict[str, object], sentences: list[str], batch_size: int,
                        rounds: int) -> dict[str, float]:
    """The best of `rounds` encode timings of each model on the same sentences, the models
    alternating within each round after one warm-up each (as `speed_vs_unpruned`)."""
    timings: dict[str, list[float]] = {name: [] for name in models}
    for warmup in (True, *([False] * max(rounds, 1))):
        for name, model in models.items():
            seconds = _encode_seconds(model, sentences, batch_size)
            if not warmup:
                timings[name].append(seconds)
    return {name: min(values) for name, values in timings.items()}
