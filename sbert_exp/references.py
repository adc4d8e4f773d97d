"""What a user could ship instead of a pruned model, measured like the sweep's models.

`references=[...]` adds, for each base model of a sweep, MLflow runs tagged
`sbert_exp.reference` that score, time and size these forms on the job's own test sets, with the
job's timing code, against the same unpruned fp32 model:

- `as_is`: the base model as it is (every job logs it: `base_model/...`; listed for clarity);
- `int8`: the base quantized only (the int8 ONNX export, no pruning);
- `bf16`: the base as it is, its weights in bf16 and encoded in bf16 (`export=bf16`);
- `trimmed`, `trimmed_int8`: the base with only its vocabulary trimmed to the job's corpus
  (`vocab.*`; the training splits when the job keeps the whole vocabulary), then int8 ONNX;
- `static`, `static_<dims>`: static token embeddings distilled from the base by model2vec
  (`model2vec.distill`, PCA to 256 or `<dims>` dimensions), saved as a SentenceTransformer
  (`StaticEmbedding`) prompted like the base;
- any other embedded or configured base model (`minilm_l6`, ...): that model as it is.

Each is computed once per content (the base's files, the test sets, the corpus, the package
versions: `key`) and reused, in any later sweep, like a job; its folder lives in the asset cache.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sbert_exp import forms
from sbert_exp.config.location import CONF_DIR
from sbert_exp.config.schema import BaseModelConfig, ExportBackend, TrainConfig, VocabKind
from sbert_exp.data import languages
from sbert_exp.data.digests import model_digest
from sbert_exp.data.inputs import distinct_sentences, vocab_corpus
from sbert_exp.errors import ConfigError
from sbert_exp.evaluation import intervals
from sbert_exp.evaluation.intervals import Sample
from sbert_exp.forms import export
from sbert_exp.model import modeling
from sbert_exp.utils.cache import Cache

log = logging.getLogger(__name__)

REFERENCE_TAG = "sbert_exp.reference"  # the form, on a reference run
FORMS = ("as_is", "int8", "bf16", "trimmed", "trimmed_int8", "static")
STATIC_DIMS = 256  # model2vec's default PCA size
REFERENCES = Cache("references", version=2)  # a folder per reference model
# (version 2: static ones saved as SentenceTransformer folders)
# What the recommendation says when a reference wins: form -> the advice.
ADVICE = {
    "as_is": "use base_model={base} as it is, no pruning needed",
    "int8": "quantize the base: export base_model={base} to int8 ONNX, no pruning needed",
    "bf16": "serve the base in bf16: export base_model={base} to bf16, no pruning needed",
    "trimmed": "trim the base's vocabulary only: pruning=unpruned vocab=corpus, no pruning needed",
    "trimmed_int8": "trim the base's vocabulary and quantize it, no pruning needed",
    "static": "use static embeddings distilled from {base} (model2vec), no transformer needed",
    "peer": "use base_model={peer} as it is, no pruning needed",
}


@dataclass(frozen=True)
class Reference:
    name: str  # as configured: int8, static_64, minilm_l6
    form: str  # a FORMS entry, or "peer"
    dims: int | None = None  # static: the PCA size
    peer: BaseModelConfig | None = None  # peer: the other model

    def label(self, base: str) -> str:
        """How the report names it: `e5_small int8 (reference)`."""
        what = self.peer.name if self.peer is not None else f"{base} {self.name}"
        return f"{what} (reference)"


def peer_names() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "base_model").glob("*.yaml"))


def parse(name: str) -> Reference:
    """One entry of `references`; a ConfigError naming the choices for an unknown one."""
    if name in FORMS:
        return Reference(name, name, STATIC_DIMS if name == "static" else None)
    found = re.fullmatch(r"static_(\d+)", name)
    if found:
        dims = int(found.group(1))
        if dims < 2:
            raise ConfigError(f"references: {name} asks for {dims} dimensions: use at least 2")
        return Reference(name, "static", dims)
    if name in peer_names():
        return Reference(name, "peer", peer=_peer_config(name))
    raise ConfigError(f"references: unknown reference '{name}': choose from "
                      f"{', '.join(FORMS)}, static_<dims>, or a base model "
                      f"({', '.join(peer_names())})")


def _peer_config(name: str) -> BaseModelConfig:
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.structured(BaseModelConfig),
                             OmegaConf.load(CONF_DIR / "base_model" / f"{name}.yaml"))
    return OmegaConf.to_object(merged)


def plan(cfg: TrainConfig) -> list[Reference]:
    """The job's references, checked (before any model loads): a peer's files must be there, a
    static one needs model2vec, an int8 one ONNX Runtime."""
    found = [parse(n) for n in dict.fromkeys(cfg.references)]
    for ref in found:
        if ref.peer is not None:
            modeling.check_depth(ref.peer, modeling.locate(ref.peer))
        if ref.form == "static" and _model2vec_missing():
            raise ConfigError(f"references: {ref.name} needs model2vec: pip install "
                              "'sbert_exp[static]', or leave it out")
        if ref.form in ("int8", "trimmed_int8"):
            export.check_available(ExportBackend.onnx_int8)
        d, v = cfg.dataset, cfg.vocab
        if ref.form.startswith("trimmed") and d.nli_train is None and d.sts_train is None and (
                v.name is VocabKind.none or not (v.files or v.text)):
            raise ConfigError(f"references: {ref.name} keeps the tokens of the job's training "
                              f"text, and phase={cfg.phase.name} reads none: add vocab=corpus "
                              "(its training splits), or vocab.files=[...]")
    return [r for r in found if r.form != "as_is"]  # every job logs the base as it is


def _model2vec_missing() -> bool:
    import importlib.util

    return importlib.util.find_spec("model2vec") is None


def key(ref: Reference, parts: dict[str, str], cfg: TrainConfig) -> str:
    """What a reference's figures depend on: the base model's and test sets' contents and the
    package versions (`parts`, the job's fingerprint parts), the evaluation settings, the form;
    for a trimmed one, the corpus; for a peer, the peer's files."""
    wanted = ["device", "model", "data.sts_test"]
    shared = {k: v for k, v in parts.items()
              if k in wanted or k.startswith(("version.", "data.language."))}
    # A reference is measured in its own form's arithmetic, whatever the job trains in.
    shared["precision"] = "fp32"
    about: dict[str, object] = {
        "reference": ref.name, "parts": shared,
        "base_model": {k: v for k, v in dataclasses.asdict(cfg.base_model).items()
                       if k not in ("languages", "init", "card")},
        "eval": {k: getattr(cfg.eval, k) for k in ("batch_size", "speed_sentences",
                                                   "speed_rounds")},
        "languages": {n: cfg.eval.language_files.get(n, "embedded")
                      for n in languages.job_sets(cfg)},
    }
    if ref.form.startswith("trimmed"):
        about["vocab"] = dataclasses.asdict(corpus_config(cfg).vocab)
        about["corpus"] = {k: v for k, v in parts.items()
                           if k in ("data.nli_train", "data.sts_train")
                           or k.startswith(("data.vocab_files.", "data.text."))}
    if ref.peer is not None:
        about["peer"] = {"config": dataclasses.asdict(ref.peer),
                         "model": model_digest(ref.peer, modeling.locate(ref.peer))}
    return "ref-" + REFERENCES.key(about)[:20]


def corpus_config(cfg: TrainConfig) -> TrainConfig:
    """The config whose vocabulary corpus a trimmed reference keeps: the job's own when it
    trims, else `vocab=corpus` on the training splits."""
    if cfg.vocab.name is VocabKind.corpus:
        return cfg
    return dataclasses.replace(cfg, vocab=dataclasses.replace(cfg.vocab, name=VocabKind.corpus))


def folder(reference_key: str) -> Path:
    return REFERENCES.path(reference_key)


COMPLETE = ".complete"  # written last into a reference's folder
# The folder of a reference's cache entry that its model loads from.
LOADS = {"static": "static", "trimmed": "model", "int8": "model_onnx_int8",
         "trimmed_int8": "model_onnx_int8", "bf16": "model_bf16"}


def form_of(ref: Reference, trim: forms.Trim | None) -> forms.Form:
    """The form a reference is (`trim`: the corpus of a trimmed one)."""
    if ref.form == "static":
        return forms.Form(static_dims=ref.dims)
    backend = (ExportBackend.onnx_int8 if ref.form in ("int8", "trimmed_int8")
               else ExportBackend.bf16 if ref.form == "bf16" else ExportBackend.none)
    return forms.Form(trim=trim if ref.form.startswith("trimmed") else None, backend=backend)


def ensure(ref: Reference, cfg: TrainConfig, checked, out: Path | None = None
           ) -> tuple[object, Path, float]:
    """The reference loaded for CPU encoding, the folder it loads from, and the seconds it took
    to build (0 when its folder was already complete: `folder(key(...))`, shared with
    bench/peers.py)."""
    out = out or folder(key(ref, checked.fingerprint.parts, cfg))
    if ref.form == "peer":
        path = modeling.locate(ref.peer)
        return modeling.load_base(ref.peer, "cpu", path), Path(path), 0.0
    started = time.perf_counter()
    built = not (out / COMPLETE).is_file()
    if built:
        trim = None
        if ref.form.startswith("trimmed"):
            corpus = vocab_corpus(corpus_config(cfg), languages.held_out(checked.data.languages),
                                  {})
            trim = forms.Trim(corpus, cfg.vocab.min_count, cfg.vocab.single_chars)
        forms.build(cfg.base_model, checked.model_path, form_of(ref, trim), out)
        (out / COMPLETE).write_text(json.dumps({"reference": ref.name}) + "\n")
    seconds = time.perf_counter() - started if built else 0.0
    model_dir = out / LOADS[ref.form]
    return forms.load(model_dir), model_dir, seconds


def measure(served, unpruned, data, lang_teacher: dict, cfg: TrainConfig, batch_size: int,
            model_dir: Path, seconds: float,
            base: Mapping[str, Sample] | None = None) -> dict[str, float]:
    """The reference's metrics, named as a job's final ones (`forms.measure`: STSb, the
    language sets, their intervals, the speedup over the unpruned fp32 base, the size of the
    folder it loads from), the seconds it took to build, and with `base` (the base's samples),
    each score's paired difference from the base as it is (vs_base/...)."""
    sentences = distinct_sentences(data.sts_test)[: cfg.eval.speed_sentences]
    metrics, samples = forms.measure(served, model_dir, unpruned, data.sts_test, sentences,
                                     language_sets=data.languages, teacher=lang_teacher,
                                     batch_size=batch_size, rounds=cfg.eval.speed_rounds)
    if base is not None:
        metrics.update(intervals.versus(samples, base, intervals.VS_BASE))
    metrics["time/build_s"] = seconds
    return metrics


def run(ref: Reference, cfg: TrainConfig, checked, batch_size: int, lang_teacher: dict,
        base: Mapping[str, Sample] | None = None) -> tuple[dict[str, float], Path]:
    """Build (or find, in the asset cache) and measure one reference on the CPU (`base`: see
    `measure`)."""
    served, model_dir, seconds = ensure(ref, cfg, checked)
    unpruned = (forms.load_unpruned(cfg.base_model, checked.model_path)
                if cfg.eval.speed_rounds else None)
    metrics = measure(served, unpruned, checked.data, lang_teacher, cfg, batch_size, model_dir,
                      seconds, base)
    log.info("reference %s: %s", ref.label(cfg.base_model.name),
             ", ".join(f"{k} = {v:.4f}" for k, v in metrics.items()))
    return metrics, model_dir
