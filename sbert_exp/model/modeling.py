"""Model internals: loading a base encoder, finding and pruning its layers, counting parameters."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sbert_exp.config.schema import BaseModelConfig, Init, Source
from sbert_exp.data import assets
from sbert_exp.errors import AssetError, ConfigError

# Where each architecture keeps its stack of layers, and the config field with its depth.
LAYER_PATHS = (
    ("encoder.layer", "num_hidden_layers"),  # BERT, RoBERTa, XLM-R, MPNet, ELECTRA
    ("transformer.layer", "n_layers"),  # DistilBERT
)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device} but no CUDA device is visible: use device=auto or cpu")
    return device


def locate(base: BaseModelConfig) -> str:
    """A local directory (embedded, local) or a Hub id already in the local cache."""
    if base.source is Source.embedded:
        return str(assets.resolve(base.location))
    if base.source is Source.local:
        path = Path(base.location).expanduser()
        if not (path / "config.json").is_file():
            raise AssetError(f"base_model.location={base.location} is not a model directory "
                             "(no config.json): point it to a saved Hugging Face or "
                             "sentence-transformers model")
        return str(path)
    return _hub_snapshot(base)


def _hub_snapshot(base: BaseModelConfig) -> str:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(base.location, revision=base.revision, local_files_only=True)
    except Exception:
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
            raise AssetError(
                f"base_model={base.name}: {base.location} is not in the Hugging Face cache "
                "and HF_HUB_OFFLINE is set: download it once online, or set "
                "base_model.source=local base_model.location=DIR") from None
    try:
        return snapshot_download(base.location, revision=base.revision, etag_timeout=10)
    except Exception as e:
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise AssetError(
            f"base_model={base.name}: could not download {base.location} ({reason}): "
            "go online once, or set base_model.source=local base_model.location=DIR") from None


def model_depth(path: str) -> int:
    """Number of encoder layers declared by the config.json of a model directory."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    for _, field in LAYER_PATHS:
        if hasattr(config, field):
            return int(getattr(config, field))
    raise ConfigError(f"{path}: config.json declares no layer count: only encoder "
                      "architectures with a layer stack (BERT, RoBERTa, MPNet, DistilBERT) prune")


def check_depth(base: BaseModelConfig, path: str) -> None:
    """The model at `path` has the declared `base_model.num_layers` (read from its config.json)."""
    depth = model_depth(path)
    if depth != base.num_layers:
        raise ConfigError(f"base_model.num_layers={base.num_layers} but {base.location} has "
                          f"{depth} layers: set base_model.num_layers={depth}")


def load_base(base: BaseModelConfig, device: str, path: str, seed: int = 0):
    """Load the base encoder found at `path` (see `locate`), checking its depth first."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    check_depth(base, path)
    if Path(path, "modules.json").is_file():
        model = SentenceTransformer(path, device=device)
    else:
        encoder = Transformer(path, max_seq_length=base.max_seq_length)
        pooling = Pooling(encoder.get_embedding_dimension(), pooling_mode=base.pooling.value)
        model = SentenceTransformer(modules=[encoder, pooling], device=device)
    model.max_seq_length = base.max_seq_length
    set_prefix_prompt(model, base.prefix)
    if base.init is Init.random:
        reinitialize(model, seed)
    return model


# The prompt names that sentence-transformers 6.x looks up: `encode` takes the default one,
# `encode_query` the "query" one, `encode_document` the "document" one.
PROMPT_NAMES = ("query", "document")


def set_prefix_prompt(model, prefix: str) -> None:
    """Make `prefix` the model's default prompt, so that `encode` prepends it and `save` keeps it.

    The same prefix goes before every sentence, so every prompt name holds it: a reloaded model
    gives the evaluated embeddings through `encode`, `encode_query` and `encode_document` alike.
    Pooling keeps averaging over the prompt's tokens too, as when the prefix was part of the text.
    An empty prefix sets no prompt.
    """
    if not prefix:
        return
    model.prompts.update(dict.fromkeys(PROMPT_NAMES, prefix))
    model.default_prompt_name = PROMPT_NAMES[0]
    model.set_pooling_include_prompt(True)


def default_prompt(model) -> str | None:
    """The prompt that `encode` prepends when given none (None where the model has none)."""
    name = model.default_prompt_name
    return model.prompts.get(name) if name is not None else None


def reinitialize(model: nn.Module, seed: int) -> None:
    """Replace every weight of the encoder by BERT's initialisation, N(0, initializer_range).

    Done by hand: transformers' own `_init_weights` skips weights it marked as loaded.
    """
    encoder = hf_model(model)
    std = getattr(encoder.config, "initializer_range", 0.02)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                fresh = torch.randn(module.weight.shape, generator=generator) * std
                module.weight.copy_(fresh)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    module.bias.zero_()
                if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()


def hf_model(model: nn.Module) -> nn.Module:
    """The Hugging Face encoder inside a SentenceTransformer (or the module itself)."""
    first = model[0] if isinstance(model, nn.Sequential) else model
    return getattr(first, "auto_model", first)


def _layer_owner(encoder: nn.Module) -> tuple[nn.Module, str, str]:
    for path, depth_field in LAYER_PATHS:
        owner_path, _, attr = path.rpartition(".")
        owner = encoder.get_submodule(owner_path) if hasattr(encoder, owner_path) else None
        if owner is not None and isinstance(getattr(owner, attr, None), nn.ModuleList):
            return owner, attr, depth_field
    raise ConfigError(f"{type(encoder).__name__} keeps no layer stack at "
                      f"{' or '.join(p for p, _ in LAYER_PATHS)}: this architecture cannot prune")


def layers(model: nn.Module) -> nn.ModuleList:
    owner, attr, _ = _layer_owner(hf_model(model))
    return getattr(owner, attr)


def num_layers(model: nn.Module) -> int:
    return len(layers(model))


def _renumber(kept: Sequence[nn.Module]) -> None:
    # Attention modules carry the index of their layer (for KV caches); keep it truthful.
    for new_idx, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx


def prune(model: nn.Module, keep: Sequence[int]) -> None:
    """Keep only the layers `keep` (ascending indices), in place, and update the config."""
    encoder = hf_model(model)
    owner, attr, depth_field = _layer_owner(encoder)
    stack = getattr(owner, attr)
    kept = [stack[i] for i in keep]
    setattr(owner, attr, nn.ModuleList(kept))
    _renumber(kept)
    setattr(encoder.config, depth_field, len(kept))


@contextlib.contextmanager
def layers_view(model: nn.Module, keep: Sequence[int]) -> Iterator[None]:
    """Run the model with only the layers `keep` for the duration of the block; no copy is made."""
    encoder = hf_model(model)
    owner, attr, depth_field = _layer_owner(encoder)
    full = getattr(owner, attr)
    depth = getattr(encoder.config, depth_field)
    setattr(owner, attr, nn.ModuleList([full[i] for i in keep]))
    setattr(encoder.config, depth_field, len(keep))
    try:
        yield
    finally:
        setattr(owner, attr, full)
        setattr(encoder.config, depth_field, depth)


def hidden_states(model: nn.Module, sentences: Sequence[str],
                  batch_size: int = 32) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The token states entering and leaving every layer on `sentences` (the model's prompt
    prepended, as `encode` does): n + 1 float32 tensors [sentences, tokens, hidden], all padded
    to one length, and their [sentences, tokens] attention mask. Index 0 is the embeddings'
    output, index i the output of layer i - 1."""
    encoder = hf_model(model)
    features = model.preprocess(list(sentences), prompt=default_prompt(model))
    inputs = {k: v for k, v in features.items()
              if k in ("input_ids", "attention_mask", "token_type_ids")}
    states: list[list[torch.Tensor]] = [[] for _ in range(num_layers(model) + 1)]
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(inputs["input_ids"]), batch_size):
                batch = {k: v[i:i + batch_size].to(model.device) for k, v in inputs.items()}
                output = encoder(**batch, output_hidden_states=True)
                for layer, h in enumerate(output.hidden_states):
                    states[layer].append(h.float().cpu())
    finally:
        encoder.train(was_training)
    return [torch.cat(s) for s in states], inputs["attention_mask"].cpu()


@contextlib.contextmanager
def all_layer_states(model: nn.Module) -> Iterator[None]:
    """While the block runs, the model's forward also returns the token states entering and
    leaving every layer, as `features["all_layer_embeddings"]` (index 0: the embeddings' output,
    index i: layer i - 1's). sentence-transformers 6.3's Transformer module adds them when the
    encoder's config asks for hidden states; the sentence embedding is unchanged."""
    config = hf_model(model).config
    before = config.output_hidden_states
    config.output_hidden_states = True
    try:
        yield
    finally:
        config.output_hidden_states = before


def freeze_embeddings(model: nn.Module) -> None:
    """Stop training the encoder's embeddings (the optimizer skips them)."""
    embeddings = getattr(hf_model(model), "embeddings", None)
    if embeddings is None:
        raise ConfigError(f"{type(hf_model(model)).__name__} has no embeddings module: "
                          "set phase.freeze_embeddings=false")
    embeddings.requires_grad_(False)


@dataclass(frozen=True)
class ParamCounts:
    total: int
    embeddings: int
    encoder: int
    trainable: int  # parameters the optimizer updates
    size_mb: float  # bytes of all parameters and buffers, in MiB


def param_counts(model: nn.Module) -> ParamCounts:
    encoder = hf_model(model)
    embeddings = getattr(encoder, "embeddings", None)
    emb = sum(p.numel() for p in embeddings.parameters()) if embeddings is not None else 0
    enc = sum(p.numel() for p in layers(model).parameters())
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return ParamCounts(total=total, embeddings=emb, encoder=enc, trainable=trainable,
                       size_mb=size / 2**20)


def disk_mb(model_dir: Path) -> float:
    """The size of a saved model's files, in MiB (a hard-linked file counts once per name)."""
    return sum(f.stat().st_size for f in Path(model_dir).rglob("*") if f.is_file()) / 2**20
