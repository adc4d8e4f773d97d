"""The static form: token embeddings distilled from a model by model2vec, served as a plain
SentenceTransformer (sentence-transformers' StaticEmbedding), so that it saves, loads and
evaluates like every other form."""

from __future__ import annotations

import tempfile
from pathlib import Path

from sbert_exp.model import modeling
from sbert_exp.utils.atomic import atomic_dir


def distill_static(model_path: str, dims: int, prefix: str, out: Path) -> Path:
    """Distil static embeddings of `dims` dimensions (model2vec's PCA) from the model in
    `model_path` and save them into `out` as a SentenceTransformer that prepends `prefix` as
    its default prompt, as the model did; `SentenceTransformer(out)` loads it."""
    from model2vec.distill import distill
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    with tempfile.TemporaryDirectory(prefix="model2vec-") as tmp:
        distill(model_name=model_path, pca_dims=dims, device="cpu").save_pretrained(tmp)
        embedding = StaticEmbedding.from_model2vec(tmp)
    model = SentenceTransformer(modules=[embedding], device="cpu")
    modeling.set_prefix_prompt(model, prefix)
    with atomic_dir(out) as work:
        model.save(str(work))
    return out
