"""Export for serving: a saved model as ONNX (fp32 or int8) or torch int8, and loading it back.

An export folder is the saved SentenceTransformer (so it still loads as a torch model) plus what
the backend runs and an `export.json` naming it:

    none        the saved model as is
    onnx        onnx/model.onnx                      fp32 ONNX of the encoder
    onnx_int8   onnx/model_qint8_avx512_vnni.onnx    the same, int8 by ONNX Runtime's dynamic
                                                     quantization (weights int8 per channel)
    torch_int8  nothing more: `load` quantizes the Linear layers to int8 as it loads
    bf16        the saved model with its weights in bf16 (half the folder), which torch
                encodes in bf16: `SentenceTransformer(path)` loads it so, as `load` does

The ONNX files sit where sentence-transformers' own backend functions put them, with the
inputs and output that Optimum's ORTModelForFeatureExtraction reads, for
`SentenceTransformer(path, backend="onnx", model_kwargs={"file_name": FILE})`. That call, like
sentence-transformers' `export_optimized_onnx_model` and `export_dynamic_quantized_onnx_model`,
goes through Optimum, which does not run with transformers 5: optimum-onnx 0.1.0, the newest,
requires transformers<4.58, and with 5.24 its import fails (`cannot import name
'get_parameter_dtype' from 'transformers.modeling_utils'`). So this module exports with torch's
ONNX exporter, quantizes with ONNX Runtime (the settings of Optimum's `avx512_vnni` config, which
sentence-transformers' function applies), and `load` runs the file in an ONNX Runtime session
inside the sentence-transformers pipeline (tokenizer, prompt, pooling unchanged).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from sbert_exp.config.schema import ExportBackend
from sbert_exp.errors import ConfigError
from sbert_exp.model.modeling import hf_model
from sbert_exp.utils.atomic import atomic_dir
from sbert_exp.utils.versions import MISSING, versions

log = logging.getLogger(__name__)


Backend = ExportBackend  # the `export` option's values

MANIFEST = "export.json"
ONNX_FILES = {
    Backend.onnx: "onnx/model.onnx",
    # sentence-transformers names a quantized file model_<weights dtype>_<Optimum config>.onnx.
    Backend.onnx_int8: "onnx/model_qint8_avx512_vnni.onnx",
}
OPSET = 17  # the ONNX opset the encoder is exported at
# The encoder inputs an exported graph may take, in the order the tokenizer gives them.
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Packages each backend needs beyond torch (import name -> pip name); onnxscript is what
# torch's ONNX exporter translates with.
NEEDS = {
    Backend.onnx: {"onnx": "onnx", "onnxruntime": "onnxruntime", "onnxscript": "onnxscript"},
    Backend.onnx_int8: {"onnx": "onnx", "onnxruntime": "onnxruntime", "onnxscript": "onnxscript"},
}


def available(backend: Backend) -> str | None:
    """None if `backend` can export and load here, else one line naming what is missing and
    the fix."""
    backend = Backend(backend)
    missing = [pip for module, pip in NEEDS.get(backend, {}).items()
               if importlib.util.find_spec(module) is None]
    if missing:
        return (f"export={backend} needs {', '.join(missing)}, which "
                f"{'is' if len(missing) == 1 else 'are'} not installed: pip install -e '.[export]'")
    if backend is Backend.torch_int8 and not hasattr(torch.ao.quantization, "quantize_dynamic"):
        return (f"export={backend} needs torch.ao.quantization.quantize_dynamic, which this torch "
                f"{torch.__version__} no longer has: use export=onnx_int8")
    if backend is Backend.torch_int8 and not _quantized_engine():
        return (f"export={backend} needs a torch build with a quantized engine (x86, fbgemm or "
                f"qnnpack); this one has {torch.backends.quantized.supported_engines}: "
                "use export=onnx_int8")
    return None


def check_available(backend: Backend) -> None:
    """Raise ConfigError with `available`'s line when `backend` cannot run here."""
    reason = available(backend)
    if reason is not None:
        raise ConfigError(reason)


def export(model_dir: Path, backend: Backend, out_dir: Path) -> Path:
    """Write the saved SentenceTransformer in `model_dir` to `out_dir` in `backend`'s layout.

    `out_dir` appears complete or not at all (an existing one is replaced only on success).
    Returns `out_dir`.
    """
    backend = Backend(backend)
    check_available(backend)
    from sentence_transformers import SentenceTransformer

    out_dir = Path(out_dir)
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.eval()
    if backend is Backend.bf16:
        model.to(torch.bfloat16)
    with atomic_dir(out_dir) as work:
        model.save(str(work))
        file_name = ONNX_FILES.get(backend)
        if backend is Backend.onnx:
            export_onnx(model, work / file_name)
        elif backend is Backend.onnx_int8:
            fp32 = work / "onnx" / ".model_fp32.onnx"
            export_onnx(model, fp32)
            quantize_onnx(fp32, work / file_name)
            fp32.unlink()
        manifest = {"backend": str(backend), "file_name": file_name, "versions": _versions(backend)}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    log.info("exported %s as %s to %s", model_dir, backend, out_dir)
    return out_dir


def load(path: Path, backend: Backend | None = None, threads: int | None = None):
    """The exported model at `path` as a SentenceTransformer that encodes with its backend on CPU.

    `backend` defaults to the one `export.json` names; a different one is refused, except
    `none`, which loads the folder's torch fp32 model. ONNX Runtime runs on `threads` threads,
    by default as many as torch uses, so that timings of the two compare.
    """
    from sentence_transformers import SentenceTransformer

    path = Path(path)
    written = Backend(json.loads((path / MANIFEST).read_text())["backend"]) \
        if (path / MANIFEST).is_file() else Backend.none
    backend = written if backend is None else Backend(backend)
    if backend not in (written, Backend.none):
        raise ConfigError(f"{path} was exported for export={written}, not {backend}: "
                          f"load it with backend={written} or none, or export it again")
    check_available(backend)
    # A bf16 folder loads in bf16 (its config's dtype) whatever `backend` asks: `none` is the
    # folder's own torch model, and there is no fp32 copy of its weights to load.
    kwargs = {"dtype": torch.bfloat16} if written is Backend.bf16 else {}
    model = SentenceTransformer(str(path), device="cpu", model_kwargs=kwargs)
    model.eval()
    if backend is Backend.torch_int8:
        # Dynamic quantization is a function of the fp32 weights alone: every load gives the
        # same int8 model, so the folder keeps the fp32 weights and no torch-version pickle.
        # Per channel: it costs less STSb than per tensor (docs/results.md, "Trimmed and
        # exported, untrained").
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        torch.ao.quantization.quantize_dynamic(model, {nn.Linear: qconfig}, inplace=True)
    elif backend in ONNX_FILES:
        run_with_onnxruntime(model, path / ONNX_FILES[backend], threads or torch.get_num_threads())
    return model


# ---------------------------------------------------------------- ONNX


class _LastHiddenState(nn.Module):
    """The encoder with its token states as the only output."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        given = {"attention_mask": attention_mask, "token_type_ids": token_type_ids}
        extra = {k: v for k, v in given.items() if v is not None}
        return self.encoder(input_ids=input_ids, **extra).last_hidden_state


def _encoder_inputs(model, sentences: list[str]) -> dict[str, torch.Tensor]:
    features = model.preprocess(sentences)
    return {k: features[k] for k in ENCODER_INPUTS if k in features}


def export_onnx(model, target: Path) -> None:
    """The encoder as an ONNX graph, by torch's TorchScript exporter (`dynamo=False`).

    On e5_small keep 6 the graph the TorchScript exporter traces runs faster in ONNX Runtime
    than the dynamo exporter's, and quantizes to a faster int8 graph (docs/benchmarks.md).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    # Two sentences of different length: a batch and a padded length above 1.
    sample = _encoder_inputs(model, ["a man is playing a guitar on the street", "a dog runs"])
    # XLM-R tokenizers (e5_small) give no token_type_ids: the graph takes what the tokenizer gives.
    axes = {name: {0: "batch", 1: "tokens"} for name in [*sample, "last_hidden_state"]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            _LastHiddenState(hf_model(model)).eval(), tuple(sample.values()), str(target),
            input_names=list(sample), output_names=["last_hidden_state"], dynamic_axes=axes,
            opset_version=OPSET, dynamo=False)


def quantize_onnx(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Optimum's AutoQuantizationConfig.avx512_vnni(is_static=False): int8 weights per channel,
    # uint8 activations, full range, every op ONNX Runtime can quantize dynamically.
    quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True,
                     reduce_range=False)


class _OnnxRuntimeEncoder(nn.Module):
    """Stands in for the Hugging Face encoder: same inputs and output, computed by ONNX Runtime."""

    def __init__(self, file: Path, config, threads: int):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(file), options,
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.config = config

    def forward(self, **features: torch.Tensor):
        from transformers.modeling_outputs import BaseModelOutput

        feed = {name: features[name].cpu().numpy() for name in self.input_names}
        (states,) = self.session.run(["last_hidden_state"], feed)
        return BaseModelOutput(last_hidden_state=torch.from_numpy(states))


def run_with_onnxruntime(model, file: Path, threads: int) -> None:
    # sentence-transformers 6.2's Transformer module calls `self.model(**features)` and reads
    # `self.model.config`; its own backend="onnx" puts Optimum's ORTModel there the same way.
    transformer = model[0]
    if not isinstance(getattr(transformer, "model", None), nn.Module):
        raise ConfigError(f"{type(transformer).__name__} holds no encoder to run with ONNX "
                          "Runtime: only sentence-transformers Transformer models export")
    transformer.model = _OnnxRuntimeEncoder(file, transformer.model.config, threads)


def _quantized_engine() -> bool:
    return any(e != "none" for e in torch.backends.quantized.supported_engines)


def _versions(backend: Backend) -> dict[str, str]:
    names = ["torch", "transformers", "sentence-transformers", *NEEDS.get(backend, {}).values()]
    return {k: v for k, v in versions(names).items() if v != MISSING}
