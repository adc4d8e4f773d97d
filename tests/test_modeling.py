"""Model internals on a tiny BERT: in-place pruning, save/reload, views, parameter counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sbert_exp.config.schema import BaseModelConfig, Pooling, Source
from sbert_exp.errors import ConfigError
from sbert_exp.model import modeling

SENTENCES = ["a man is playing a guitar .", "two dogs are running on the beach .", "a girl"]


def _base(path, num_layers=12) -> BaseModelConfig:
    return BaseModelConfig(name="tiny", source=Source.local, location=str(path),
                           num_layers=num_layers, pooling=Pooling.mean, max_seq_length=64)


@pytest.fixture
def model(tiny_bert):
    base = _base(tiny_bert)
    return modeling.load_base(base, "cpu", modeling.locate(base))


def test_prune_removes_layers_in_place_and_updates_config(model):
    stack = modeling.layers(model)
    kept_modules = [stack[0], stack[5], stack[11]]
    modeling.prune(model, [0, 5, 11])
    encoder = modeling.hf_model(model)
    assert encoder.config.num_hidden_layers == 3
    assert modeling.num_layers(model) == 3
    # The very same layer objects survive, in order: nothing was copied.
    assert all(a is b for a, b in zip(modeling.layers(model), kept_modules, strict=True))
    idx = [m.layer_idx for layer in modeling.layers(model) for m in layer.modules()
           if hasattr(m, "layer_idx")]
    assert idx == sorted(idx) and set(idx) == {0, 1, 2}


def test_pruned_model_reloads_with_same_layers_and_embeddings(model, tmp_path):
    from sentence_transformers import SentenceTransformer

    modeling.prune(model, [1, 2, 10])
    before = model.encode(SENTENCES, convert_to_numpy=True)
    model.save(str(tmp_path / "pruned"))
    reloaded = SentenceTransformer(str(tmp_path / "pruned"), device="cpu")
    assert modeling.hf_model(reloaded).config.num_hidden_layers == 3
    assert modeling.num_layers(reloaded) == 3
    after = reloaded.encode(SENTENCES, convert_to_numpy=True)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)
    original = modeling.layers(model)[1].state_dict()
    for key, value in modeling.layers(reloaded)[1].state_dict().items():
        assert torch.equal(value, original[key])


def test_pruning_changes_embeddings(model):
    full = model.encode(SENTENCES, convert_to_numpy=True)
    modeling.prune(model, [0, 1])
    pruned = model.encode(SENTENCES, convert_to_numpy=True)
    assert np.abs(full - pruned).max() > 1e-3


def test_layers_view_is_temporary_and_matches_pruning(model):
    full = model.encode(SENTENCES, convert_to_numpy=True)
    with modeling.layers_view(model, [0, 11]):
        assert modeling.num_layers(model) == 2
        assert modeling.hf_model(model).config.num_hidden_layers == 2
        viewed = model.encode(SENTENCES, convert_to_numpy=True)
    assert modeling.num_layers(model) == 12
    assert modeling.hf_model(model).config.num_hidden_layers == 12
    np.testing.assert_allclose(model.encode(SENTENCES, convert_to_numpy=True), full, atol=1e-6)
    modeling.prune(model, [0, 11])
    np.testing.assert_allclose(model.encode(SENTENCES, convert_to_numpy=True), viewed, atol=1e-6)


def test_param_counts_split_embeddings_and_encoder(model):
    before = modeling.param_counts(model)
    per_layer = sum(p.numel() for p in modeling.layers(model)[0].parameters())
    encoder = modeling.hf_model(model)
    assert before.embeddings == sum(p.numel() for p in encoder.embeddings.parameters())
    assert before.encoder == 12 * per_layer
    modeling.prune(model, [3, 4])
    after = modeling.param_counts(model)
    assert after.encoder == 2 * per_layer
    assert after.embeddings == before.embeddings
    assert before.total - after.total == 10 * per_layer
    assert after.size_mb == pytest.approx(before.size_mb - 10 * per_layer * 4 / 2**20, rel=1e-6)


def test_declared_depth_must_match_the_model(tiny_bert):
    base = _base(tiny_bert, num_layers=6)
    with pytest.raises(ConfigError, match=r"base_model.num_layers=6 but .* has 12 layers: "
                                          r"set base_model.num_layers=12"):
        modeling.load_base(base, "cpu", modeling.locate(base))


def test_local_model_without_config_is_rejected(tmp_path):
    from sbert_exp.errors import AssetError

    with pytest.raises(AssetError, match=r"is not a model directory \(no config.json\)"):
        modeling.locate(_base(tmp_path))


def test_uncached_hub_model_fails_fast_offline():
    from sbert_exp.errors import AssetError

    base = BaseModelConfig(name="muril", source=Source.hub, location="google/muril-base-cased",
                           num_layers=12)
    with pytest.raises(AssetError, match=r"base_model=muril: google/muril-base-cased is not in "
                                         r"the Hugging Face cache and HF_HUB_OFFLINE is set"):
        modeling.locate(base)


def test_hub_model_loads_from_the_local_cache(tiny_bert, tmp_path, monkeypatch):
    """The hub path is real code: seed an HF cache with the tiny model and load it by name."""
    import shutil

    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--someone--tiny-bert"
    commit = "0" * 40
    snapshot = repo / "snapshots" / commit
    shutil.copytree(tiny_bert, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    base = BaseModelConfig(name="tiny_hub", source=Source.hub, location="someone/tiny-bert",
                           num_layers=12)
    path = modeling.locate(base)
    assert path == str(snapshot)
    model = modeling.load_base(base, "cpu", path)
    assert modeling.num_layers(model) == 12


def test_random_init_keeps_architecture_and_replaces_weights(tiny_bert):
    import dataclasses

    from sbert_exp.config.schema import Init

    base = _base(tiny_bert)
    pretrained = modeling.load_base(base, "cpu", modeling.locate(base))
    scratch = dataclasses.replace(base, init=Init.random)
    a = modeling.load_base(scratch, "cpu", modeling.locate(base), seed=1)
    b = modeling.load_base(scratch, "cpu", modeling.locate(base), seed=1)
    c = modeling.load_base(scratch, "cpu", modeling.locate(base), seed=2)
    assert modeling.param_counts(a) == modeling.param_counts(pretrained)
    w = {n: p for n, p in modeling.hf_model(a).named_parameters()}
    w_pre = dict(modeling.hf_model(pretrained).named_parameters())
    w_b = dict(modeling.hf_model(b).named_parameters())
    w_c = dict(modeling.hf_model(c).named_parameters())
    name = "encoder.layer.3.attention.self.query.weight"
    assert not torch.equal(w[name], w_pre[name])  # new weights
    assert torch.equal(w[name], w_b[name])  # seeded
    assert not torch.equal(w[name], w_c[name])
    assert float(w[name].std()) == pytest.approx(0.02, rel=0.15)  # BERT's initializer_range
