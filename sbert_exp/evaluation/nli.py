"""NLI: accuracy of the SBERT softmax head on (u, v, |u - v|)."""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset
from torch import nn

from sbert_exp.evaluation.sts import encode_unique


def _pair_embeddings(model, pairs: Dataset, batch_size: int):
    s1, s2 = pairs["sentence1"], pairs["sentence2"]
    table = encode_unique(model, [*s1, *s2], batch_size)
    return np.stack([table[s] for s in s1]), np.stack([table[s] for s in s2])


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
