"""Export for serving: each backend's folder, its embeddings against torch, atomic writes."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sbert_exp.errors import ConfigError
from sbert_exp.forms import export
from sbert_exp.forms.export import Backend

ONNX_MISSING = export.available(Backend.onnx)
needs_onnx = pytest.mark.skipif(ONNX_MISSING is not None, reason=str(ONNX_MISSING))
# Lengths from 1 to 14 words, so that batches pad to different lengths.
SENTENCES = [
    "a man is playing a guitar",
    "dog",
    "two young children are playing with a ball in the field outside",
    "a woman is slicing an onion",
    "the black cat is sitting on the red car",
    "people are dancing and singing on the street at the beach with their dog",
    "a plane is taking off",
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def model_dir(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT as the pipeline saves a final model: pruned to 4 layers, with a prompt."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    from sbert_exp.model.modeling import prune, set_prefix_prompt

    encoder = Transformer(str(tiny_bert), max_seq_length=64)
    model = SentenceTransformer(modules=[encoder, Pooling(encoder.get_embedding_dimension())],
                                device="cpu")
    set_prefix_prompt(model, "query: ")
    prune(model, [0, 3, 7, 11])
    out = tmp_path_factory.mktemp("export_src") / "model"
    model.save(str(out))
    return out


@pytest.fixture(scope="module")
def no_token_types_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model with a tokenizer that gives no token_type_ids, as XLM-R's (e5_small)."""
    out = tmp_path_factory.mktemp("export_src") / "no_token_types"
    shutil.copytree(model_dir, out)
    config = json.loads((out / "tokenizer_config.json").read_text())
    config["model_input_names"] = ["input_ids", "attention_mask"]
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> np.ndarray:
    """Embeddings of SENTENCES by the saved torch fp32 model."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu").encode(SENTENCES, batch_size=3)


@pytest.fixture(scope="module")
def exported(model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Export folders by backend, each written once for the module."""
    root = tmp_path_factory.mktemp("exports")
    done: dict[Backend, Path] = {}

    def get(backend: Backend) -> Path:
        if backend not in done:
            done[backend] = export.export(model_dir, backend, root / str(backend))
        return done[backend]

    return get


@pytest.mark.parametrize("backend", [
    Backend.none, Backend.torch_int8, Backend.bf16,
    pytest.param(Backend.onnx, marks=needs_onnx), pytest.param(Backend.onnx_int8, marks=needs_onnx),
])
def test_layout(exported, backend: Backend) -> None:
    out = exported(backend)
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["backend"] == backend
    assert manifest["file_name"] == export.ONNX_FILES.get(backend)
    assert {"torch", "transformers", "sentence-transformers"} <= set(manifest["versions"])
    # The saved SentenceTransformer, prompt included, as the torch model of the folder.
    for name in ("modules.json", "config.json", "model.safetensors", "tokenizer.json",
                 "config_sentence_transformers.json", "1_Pooling/config.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 4
    onnx_files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.onnx*"))
    assert onnx_files == ([manifest["file_name"]] if manifest["file_name"] else [])
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "temp folder left"


@needs_onnx
@pytest.mark.parametrize("backend", [Backend.onnx, Backend.onnx_int8])
def test_onnx_file_is_what_optimum_reads(exported, backend: Backend) -> None:
    # Optimum's ORTModelForFeatureExtraction feeds the tokenizer's inputs by name and reads
    # last_hidden_state, batch and length free.
    import onnx

    model = onnx.load(str(exported(backend) / export.ONNX_FILES[backend]))
    onnx.checker.check_model(model)
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*model.graph.input, *model.graph.output]}
    assert list(dims) == ["input_ids", "attention_mask", "token_type_ids", "last_hidden_state"]
    assert all(isinstance(d[0], str) and isinstance(d[1], str) for d in dims.values())
    assert dims["last_hidden_state"][2] == 32


@needs_onnx
def test_onnx_embeddings_equal_torch(exported, reference: np.ndarray) -> None:
    model = export.load(exported(Backend.onnx))
    # Batches of 3, 3 and 1: other batch sizes and padded lengths than the export's sample.
    np.testing.assert_allclose(model.encode(SENTENCES, batch_size=3), reference, atol=1e-5)
    single = model.encode(SENTENCES[1:2])
    np.testing.assert_allclose(single, reference[1:2], atol=1e-5)


@needs_onnx
def test_onnx_without_token_type_ids(no_token_types_dir: Path, tmp_path: Path,
                                     reference: np.ndarray) -> None:
    import onnxruntime

    out = export.export(no_token_types_dir, Backend.onnx, tmp_path / "onnx")
    session = onnxruntime.InferenceSession(str(out / export.ONNX_FILES[Backend.onnx]))
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    # BERT reads absent token types as type 0, which the tokenizer gave before.
    np.testing.assert_allclose(export.load(out).encode(SENTENCES, batch_size=3), reference,
                               atol=1e-5)


@pytest.mark.parametrize("backend", [Backend.torch_int8,
                                     pytest.param(Backend.onnx_int8, marks=needs_onnx)])
def test_int8_embeddings_close_to_torch(exported, reference: np.ndarray,
                                        backend: Backend) -> None:
    model = export.load(exported(backend))
    embeddings = model.encode(SENTENCES, batch_size=3)
    # The tiny random BERT gives cosines of 0.99998 (e5_small keep 6: 0.99 and above).
    assert cosines(embeddings, reference).min() > 0.999
    assert not np.allclose(embeddings, reference, atol=1e-5)  # it did quantize


def test_torch_int8_quantizes_linear_layers(exported) -> None:
    from torch import nn

    model = export.load(exported(Backend.torch_int8))
    kinds = {type(m) for m in model.modules()}
    assert nn.Linear not in kinds
    assert any(k.__module__.startswith("torch.ao.nn.quantized.dynamic") for k in kinds)


@pytest.mark.parametrize("backend", [Backend.torch_int8,
                                     pytest.param(Backend.onnx_int8, marks=needs_onnx)])
def test_reloads_the_same(exported, backend: Backend) -> None:
    # Two loads of one folder give the same embeddings, with the saved prompt applied.
    out = exported(backend)
    first = export.load(out).encode(SENTENCES)
    again = export.load(out, backend)
    assert again.default_prompt_name == "query" and again.prompts["query"] == "query: "
    np.testing.assert_array_equal(again.encode(SENTENCES), first)


def test_every_folder_loads_as_its_torch_model(exported, reference: np.ndarray) -> None:
    from sentence_transformers import SentenceTransformer

    out = exported(Backend.torch_int8)
    np.testing.assert_allclose(SentenceTransformer(str(out)).encode(SENTENCES, batch_size=3),
                               reference, atol=1e-6)
    np.testing.assert_allclose(export.load(out, Backend.none).encode(SENTENCES, batch_size=3),
                               reference, atol=1e-6)


def test_the_bf16_folder_holds_bf16_weights_and_loads_in_bf16_everywhere(
        exported, model_dir: Path, reference: np.ndarray) -> None:
    import torch
    from safetensors import safe_open
    from sentence_transformers import SentenceTransformer

    out = exported(Backend.bf16)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    weights = (out / "model.safetensors").stat().st_size
    assert weights < 0.55 * (model_dir / "model.safetensors").stat().st_size
    for model in (export.load(out), export.load(out, Backend.none), SentenceTransformer(str(out))):
        assert model.dtype == torch.bfloat16
        embeddings = model.encode(SENTENCES, batch_size=3)
        assert embeddings.dtype == np.float32
        assert cosines(embeddings, reference).min() > 0.999
        assert not np.allclose(embeddings, reference, atol=1e-5)  # it did round


def test_load_refuses_another_backend(exported) -> None:
    out = exported(Backend.torch_int8)
    with pytest.raises(ConfigError, match="exported for export=torch_int8, not onnx"):
        export.load(out, Backend.onnx)


def test_failed_export_leaves_no_folder(model_dir: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(model, target: Path) -> None:
        target.parent.mkdir(parents=True)
        target.write_bytes(b"half an onnx file")
        raise RuntimeError("exporter failed")

    monkeypatch.setattr(export, "available", lambda backend: None)
    monkeypatch.setattr(export, "export_onnx", broken)
    with pytest.raises(RuntimeError, match="exporter failed"):
        export.export(model_dir, Backend.onnx, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []

    # A folder from an earlier export stays as it was.
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "export.json").write_text("{}")
    with pytest.raises(RuntimeError, match="exporter failed"):
        export.export(model_dir, Backend.onnx, tmp_path / "out")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["export.json"]


@pytest.mark.parametrize("backend", [Backend.onnx, Backend.onnx_int8])
def test_missing_backend_is_one_line(model_dir: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch, backend: Backend) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    line = (f"export={backend} needs onnxruntime, which is not installed: "
            "pip install -e '.[export]'")
    assert export.available(backend) == line
    with pytest.raises(ConfigError) as caught:
        export.export(model_dir, backend, tmp_path / "out")
    assert str(caught.value) == line
    assert not (tmp_path / "out").exists()
    assert export.available(Backend.none) is None
    assert export.available(Backend.torch_int8) is None


def test_backend_names() -> None:
    assert [str(b) for b in Backend] == ["none", "onnx", "onnx_int8", "torch_int8", "bf16"]
    with pytest.raises(ValueError):
        Backend("onnx-int8")


# ------------------------------------------------------------------ the export option of a job


def _export_job(tiny_bert: Path, tmp_path: Path, name: str, *more: str) -> dict[str, float]:
    from conftest import run_tiny_job, tiny_overrides

    return run_tiny_job([*tiny_overrides(tiny_bert, tmp_path, phase="none"), "pruning.keep=3",
                         *more], tmp_path / name)


@pytest.mark.parametrize("backend", [Backend.torch_int8, pytest.param(
    Backend.onnx_int8, marks=pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                                                reason="pip install -e '.[export]'"))])
def test_job_exports_scores_and_times_the_export(backend, tiny_bert, tmp_path):
    metrics = _export_job(tiny_bert, tmp_path, "job", f"export={backend}")
    folder = tmp_path / "job" / f"model_{backend}"
    assert json.loads((folder / "export.json").read_text())["backend"] == backend
    # int8 moves the tiny model's cosines a little; its ranking of STS pairs hardly.
    assert metrics["export/sts_test/spearman_cosine"] == pytest.approx(
        metrics["sts_test/spearman_cosine"], abs=0.02)
    assert metrics["export/speedup_vs_unpruned"] > 0 and metrics["export/disk_mb"] > 0
    # The same job again reuses the run, and links the export with the model.
    again = _export_job(tiny_bert, tmp_path, "again", f"export={backend}")
    assert again == metrics
    linked = tmp_path / "again" / f"model_{backend}" / "export.json"
    assert linked.stat().st_ino == (folder / "export.json").stat().st_ino


def test_a_job_builds_its_bf16_form_where_the_cpu_computes_in_bf16(tiny_bert, tmp_path):
    """precision=bf16 stands for a CPU with bf16 arithmetic (auto chooses it there); the job's
    training then runs in bf16 too. precision=fp32 builds no bf16 form."""
    metrics = _export_job(tiny_bert, tmp_path, "job", "precision=bf16", "export=torch_int8")
    folder = tmp_path / "job" / "model_bf16"
    assert json.loads((folder / "export.json").read_text())["backend"] == "bf16"
    assert metrics["bf16/sts_test/spearman_cosine"] == pytest.approx(
        metrics["sts_test/spearman_cosine"], abs=0.02)
    assert 0.4 < metrics["bf16/disk_mb"] / metrics["model/disk_mb"] < 0.6
    assert metrics["bf16/speedup_vs_unpruned"] > 0 and "export/disk_mb" in metrics
    # Each form's score with its interval, and its paired differences from the fp32 model it
    # was built from and from the base as it is.
    sts = "sts_test/spearman_cosine"
    for form in ("bf16", "export"):
        assert metrics[f"{form}/ci_low/{sts}"] < metrics[f"{form}/{sts}"] < metrics[
            f"{form}/ci_high/{sts}"]
        for against, level in (("vs_model", sts), ("vs_base", f"base_model/{sts}")):
            diff = metrics[f"{form}/{against}/{sts}"]
            assert diff == pytest.approx(metrics[f"{form}/{sts}"] - metrics[level], abs=1e-9)
            assert metrics[f"{form}/{against}/ci_low/{sts}"] <= diff <= metrics[
                f"{form}/{against}/ci_high/{sts}"]
    fp32 = _export_job(tiny_bert, tmp_path, "fp32", "precision=fp32")
    assert not any(k.startswith("bf16/") for k in fp32)
    assert not (tmp_path / "fp32" / "model_bf16").exists()


def test_export_without_a_saved_model_is_one_line(tiny_bert, tmp_path):
    from sbert_exp.errors import UserError

    with pytest.raises(UserError) as caught:
        _export_job(tiny_bert, tmp_path, "job", "export=onnx", "save_model=false")
    assert str(caught.value) == ("export=onnx exports the saved model: set save_model=true, "
                                 "or export=none")
    assert not (tmp_path / "mlflow.db").exists()
