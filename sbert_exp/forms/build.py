"""Build a form of a model (as it is, pruned, vocabulary-trimmed, exported, static) and load it
back: the one place that prunes, trims and exports."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sbert_exp.config.schema import BaseModelConfig, ExportBackend, Init
from sbert_exp.forms import export, vocab
from sbert_exp.forms.static import distill_static
from sbert_exp.model import modeling
from sbert_exp.utils.atomic import atomic_dir


@dataclass(frozen=True)
class Trim:
    """Keep the tokens of `corpus` (`vocab=corpus`: see sbert_exp.forms.vocab)."""
    corpus: Sequence[str]
    min_count: int = 1
    single_chars: bool = False


@dataclass(frozen=True)
class Form:
    """What to build from a base model: its `layers` (None: every one), its vocabulary
    trimmed (`trim`), exported as `backend`; or, with `static_dims`, static embeddings."""
    layers: Sequence[int] | None = None
    trim: Trim | None = None
    backend: ExportBackend = ExportBackend.none
    static_dims: int | None = None


def load_unpruned(base: BaseModelConfig, model_path: str, device: str = "cpu"):
    """The pretrained base model whole, in fp32: what every form is timed against."""
    return modeling.load_base(dataclasses.replace(base, init=Init.pretrained), device,
                              model_path)


def shape(model, layers: Sequence[int] | None, trim: Trim | None) -> vocab.TrimResult | None:
    """Prune a loaded model in place to `layers` (None: keep every layer), then trim its
    vocabulary to `trim`'s corpus; returns what trimming did (None: not trimmed)."""
    if layers is not None:
        modeling.prune(model, list(layers))
    if trim is None:
        return None
    ids = vocab.used_token_ids(model.tokenizer, trim.corpus, trim.min_count, trim.single_chars)
    return vocab.trim(model, ids)


def save(model, folder: Path) -> Path:
    """Save a SentenceTransformer into `folder`, which appears complete or not at all."""
    with atomic_dir(folder) as work:
        model.save(str(work))
    return folder


def export_saved(model_dir: Path, backend: ExportBackend, out: Path | None = None) -> Path:
    """Export a saved model as `backend` into `out` (default: model_<backend> beside it);
    returns the folder `load` reads (the saved model itself for backend none)."""
    if ExportBackend(backend) is ExportBackend.none:
        return model_dir
    return export.export(model_dir, backend, out or model_dir.with_name(f"model_{backend}"))


def build(base: BaseModelConfig, model_path: str, form: Form, out: Path) -> Path:
    """Write `form` of the base model in `model_path` into `out` and return the folder it
    loads from (`load`): out/static, out/model or out/model_<backend>."""
    out.mkdir(parents=True, exist_ok=True)
    if form.static_dims is not None:
        return distill_static(model_path, form.static_dims, base.prefix, out / "static")
    model = load_unpruned(base, model_path)
    shape(model, form.layers, form.trim)
    save(model, out / "model")
    return export_saved(out / "model", form.backend)


def load(folder: Path):
    """A built form, ready to encode on the CPU: a saved or static model as it was saved, an
    export through its backend (see sbert_exp.forms.export)."""
    return export.load(Path(folder))
