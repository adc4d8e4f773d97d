"""Vocabulary trimming: the tokens a corpus uses, a tokenizer rebuilt with only those, and the
word-embedding rows that go with them.

A multilingual base (e5_small: 250,002 Unigram pieces) spends most of its parameters on
embeddings of tokens a given corpus never produces. Keeping only the produced tokens, renumbered
in their old order, changes nothing the model computes on that corpus:

- Unigram (XLM-R, e5) takes the highest-scoring segmentation (Viterbi). Its pieces are all
  kept, and every other segmentation left to the trimmed tokenizer was open to the full one,
  scoring no better, except where a dropped one-character piece leaves a character unknown.
  An unknown character scores min(score) - 10, below any piece, as long as the minimum does
  not move: `used_token_ids` keeps the lowest-scoring piece. Ties go the same way too: the
  search keeps the first best candidate, and candidates keep their order.
- WordPiece (BERT, MuRIL, MiniLM) takes the longest piece in the vocabulary at each step. The
  chosen piece is kept and no longer one can appear. A word that fails half-way becomes [UNK]
  as a whole; `used_token_ids` keeps the pieces matched before the failure, so that the trimmed
  tokenizer fails at the same place instead of finding a shorter way through.

Hence the same token strings on the corpus, the same embedding rows, bit-identical embeddings.
Other tokenizer models (BPE, byte-level BPE, WordLevel) are refused: BPE merges reference
tokens that the corpus need not produce.
"""

from __future__ import annotations

import itertools
import json
import logging
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from sbert_exp.errors import ConfigError
from sbert_exp.model.modeling import hf_model

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

log = logging.getLogger(__name__)

SUPPORTED = ("Unigram", "WordPiece")
METASPACE = "\u2581"  # SentencePiece's word-start marker, the "▁" of Unigram pieces
BATCH = 4096  # texts per tokenizer call: work for the Rust threads, bounded lists of ids
# Token ids that the model config names; they move with the tokens they point to.
CONFIG_TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id")


@dataclass(frozen=True)
class TrimResult:
    """The word-embedding matrix before and after `trim` (position and type embeddings stay)."""

    old_vocab_size: int  # rows of the matrix (config.vocab_size), which may exceed the tokenizer
    new_vocab_size: int
    old_embedding_params: int
    new_embedding_params: int


def _spec(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """The `tokenizers` serialisation of a fast tokenizer; refuses models that cannot be trimmed."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"vocab=corpus needs a fast tokenizer, not {type(tokenizer).__name__}: "
                          "use vocab=none for this base model")
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    kind = spec["model"]["type"]
    if kind not in SUPPORTED:
        byte_level = "ByteLevel" in json.dumps(spec.get("pre_tokenizer"))
        detail = " (byte-level, as RoBERTa's)" if byte_level else ""
        raise ConfigError(f"vocab=corpus cannot rebuild a {kind} tokenizer{detail}: "
                          "use vocab=none for this base model")
    return spec


def check_files(model_dir: Path) -> None:
    """Refuse, from the model's files alone (before it loads), a tokenizer `trim` cannot
    rebuild: its `tokenizer.json` model, else what the slow tokenizer's files make of it
    (vocab.txt: WordPiece; sentencepiece.bpe.model: Unigram; vocab.json + merges.txt: BPE)."""
    spec = model_dir / "tokenizer.json"
    if spec.is_file():
        try:
            parsed = json.loads(spec.read_text(encoding="utf-8"))
            kind = parsed["model"]["type"]
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"vocab=corpus: {spec} is not a tokenizers file with a model type: "
                              "fix the file or use vocab=none") from None
        byte_level = "ByteLevel" in json.dumps(parsed.get("pre_tokenizer"))
    elif (model_dir / "merges.txt").is_file():
        kind, byte_level = "BPE", (model_dir / "vocab.json").is_file()
    elif (model_dir / "vocab.txt").is_file():
        kind, byte_level = "WordPiece", False
    elif any(model_dir.glob("*.model")):
        kind, byte_level = "Unigram", False
    else:
        raise ConfigError(f"vocab=corpus: {model_dir} has no tokenizer files (tokenizer.json, "
                          "vocab.txt, *.model): use vocab=none for this base model")
    if kind not in SUPPORTED:
        detail = " (byte-level, as RoBERTa's)" if byte_level else ""
        raise ConfigError(f"vocab=corpus cannot rebuild a {kind} tokenizer{detail}: "
                          "use vocab=none for this base model")


def _script(char: str) -> str:
    """The script of a character, approximated by the first word of its Unicode name
    ("DEVANAGARI", "LATIN", "CJK"); "" for characters without a name."""
    return unicodedata.name(char, "").partition(" ")[0]


def _pieces(model: dict[str, Any]) -> Iterable[tuple[str, int]]:
    """(piece, id) of the tokenizer model's own vocabulary (without added tokens)."""
    if model["type"] == "Unigram":
        return ((piece, i) for i, (piece, _) in enumerate(model["vocab"]))
    return model["vocab"].items()


def _single_char_ids(model: dict[str, Any], scripts: set[str]) -> set[int]:
    """Pieces that are one character of `scripts`, alone or with the word-start ("▁") or
    continuation ("##") marker: enough to spell any word of those scripts."""
    marker = METASPACE if model["type"] == "Unigram" else model["continuing_subword_prefix"]
    out = set()
    for piece, i in _pieces(model):
        core = piece.removeprefix(marker)
        if len(core) == 1 and _script(core) in scripts:
            out.add(i)
    return out


def _wordpiece_dead_end(word: str, vocab: Mapping[str, int], prefix: str,
                        max_chars: int) -> list[int]:
    """The ids that WordPiece's greedy longest match takes in `word` before it finds no piece
    and gives up on the whole word ([] for a word it tokenizes, or one too long to try), as in
    `tokenizers`' WordPiece::tokenize."""
    if len(word) > max_chars:
        return []
    ids: list[int] = []
    start = 0
    while start < len(word):
        for end in range(len(word), start, -1):
            piece = word[start:end] if start == 0 else prefix + word[start:end]
            if piece in vocab:
                ids.append(vocab[piece])
                start = end
                break
        else:
            return ids
    return []


def _unk_id(model: dict[str, Any]) -> int | None:
    """The id of the tokenizer model's unknown token (None for a Unigram model without one)."""
    return model["unk_id"] if model["type"] == "Unigram" else model["vocab"][model["unk_token"]]


def used_token_ids(tokenizer: PreTrainedTokenizerBase, texts: Iterable[str], min_count: int = 1,
                   single_chars: bool = False) -> list[int]:
    """The sorted ids to keep so that `trim` leaves the tokenization of `texts` unchanged.

    That is every token the tokenizer emits on `texts` at least `min_count` times, every special
    and added token, and what the guarantee needs (module docstring): the lowest-scoring
    Unigram piece, the pieces WordPiece tries in words it then gives up on. `min_count` > 1
    drops rare tokens, whose words then split differently: no guarantee there.

    `texts` must be what the model will tokenize, prompt included: with e5's "query: " prefix,
    pass "query: " + sentence, or the prefix's own tokens are dropped.

    `single_chars` also keeps every one-character piece of a script seen in `texts`, so that
    words outside the corpus still spell out in pieces instead of becoming unknown.
    """
    if min_count < 1:
        raise ValueError(f"min_count={min_count}: a token must occur at least once to be kept")
    model = _spec(tokenizer)["model"]
    unk = _unk_id(model)
    counts = np.zeros(len(tokenizer), dtype=np.int64)
    chars: set[str] = set()
    texts = iter(texts)
    while batch := list(itertools.islice(texts, BATCH)):
        encoded = tokenizer(batch, add_special_tokens=False, truncation=False, padding=False,
                            return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        flat = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int64)
        counts += np.bincount(flat, minlength=len(counts))
        if model["type"] == "WordPiece" and unk in flat:
            failed = [text for text, ids in zip(batch, encoded, strict=True) if unk in ids]
            np.add.at(counts, _dead_end_ids(tokenizer, model, failed), 1)
        if single_chars:
            chars.update("".join(batch))
    keep = set(np.flatnonzero(counts >= min_count).tolist())
    keep.update(tokenizer.all_special_ids, tokenizer.added_tokens_decoder)
    if unk is not None:
        keep.add(unk)
    if model["type"] == "Unigram":
        keep.add(int(np.argmin([score for _, score in model["vocab"]])))
    if single_chars:
        keep |= _single_char_ids(model, {_script(c) for c in chars} - {""})
    return sorted(keep)


def _dead_end_ids(tokenizer: PreTrainedTokenizerBase, model: dict[str, Any],
                  texts: list[str]) -> list[int]:
    """The pieces WordPiece matches in the words of `texts` that it then gives up on."""
    backend = tokenizer.backend_tokenizer
    ids = []
    for text in texts:
        if backend.normalizer is not None:
            text = backend.normalizer.normalize_str(text)
        words = ([w for w, _ in backend.pre_tokenizer.pre_tokenize_str(text)]
                 if backend.pre_tokenizer is not None else [text])
        for word in words:
            ids += _wordpiece_dead_end(word, model["vocab"], model["continuing_subword_prefix"],
                                       model["max_input_chars_per_word"])
    return ids


class _Renumbering:
    """Old id -> new id for the kept ids, in their old order; naming what a missing id breaks."""

    def __init__(self, ids: list[int], tokenizer: PreTrainedTokenizerBase) -> None:
        self.new = {old: new for new, old in enumerate(ids)}
        self.tokenizer = tokenizer

    def __call__(self, old: int, role: str) -> int:
        if old not in self.new:
            token = self.tokenizer.convert_ids_to_tokens(old)
            raise ValueError(f"keep_ids lacks id {old} ({token!r}), the {role}: "
                             "keep the ids that used_token_ids returns")
        return self.new[old]


def _renumber_processor(processor: dict[str, Any] | None, renumber: _Renumbering) -> None:
    """Renumber the special token ids that a post-processor adds around each text, in place."""
    if processor is None:
        return
    kind = processor["type"]
    if kind == "TemplateProcessing":
        for special in processor["special_tokens"].values():
            special["ids"] = [renumber(i, "post-processor's " + special["id"])
                              for i in special["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("cls", "sep"):
            token, old = processor[key]
            processor[key] = [token, renumber(old, f"post-processor's {key} token")]
    elif kind == "Sequence":
        for step in processor["processors"]:
            _renumber_processor(step, renumber)
    elif kind != "ByteLevel":  # ByteLevel only fixes offsets
        raise ConfigError(f"vocab=corpus cannot renumber a {kind} post-processor: "
                          "use vocab=none for this base model")


def trim_tokenizer(tokenizer: PreTrainedTokenizerBase,
                   keep_ids: Sequence[int]) -> PreTrainedTokenizerFast:
    """A new fast tokenizer holding only `keep_ids`, renumbered 0.. in their old order.

    Built from the `tokenizers` serialisation (model vocabulary, unknown token, added tokens,
    post-processor and padding ids renumbered), so normalizer and pre-tokenizer are the same
    objects. Wrapped as a plain `PreTrainedTokenizerFast` (transformers 5.x: `TokenizersBackend`),
    which saves and reloads as that tokenizer.json: a model-specific class (BertTokenizer) would
    rebuild its pipeline on reload. Raises before anything is built if a special or added token
    is missing from `keep_ids`.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = _spec(tokenizer)
    ids = sorted(set(keep_ids))
    if not ids or ids[0] < 0 or ids[-1] >= len(tokenizer):
        raise ValueError(f"keep_ids must be ids of the tokenizer, 0..{len(tokenizer) - 1}")
    renumber = _Renumbering(ids, tokenizer)
    model = spec["model"]
    if model["type"] == "Unigram":
        if model["unk_id"] is not None:
            model["unk_id"] = renumber(model["unk_id"], "unknown token")
        model["vocab"] = [model["vocab"][i] for i in ids if i < len(model["vocab"])]
    else:
        renumber(_unk_id(model), "unknown token")
        piece = {i: p for p, i in model["vocab"].items()}
        model["vocab"] = {piece[i]: renumber.new[i] for i in ids if i in piece}
    for added in spec["added_tokens"]:
        added["id"] = renumber(added["id"], f"added token {added['content']!r}")
    _renumber_processor(spec["post_processor"], renumber)
    if spec.get("padding"):  # left on the backend by the last padded call
        spec["padding"]["pad_id"] = renumber(spec["padding"]["pad_id"], "padding token")
    backend = Tokenizer.from_str(json.dumps(spec))
    # `tokenizers` numbers tokens added beyond the model's vocabulary itself, on load.
    old_tokens = tokenizer.convert_ids_to_tokens(ids)
    if [backend.id_to_token(i) for i in range(len(ids))] != old_tokens:
        raise RuntimeError("the rebuilt tokenizer numbers its tokens out of their old order")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, model_max_length=tokenizer.model_max_length,
        padding_side=tokenizer.padding_side, truncation_side=tokenizer.truncation_side,
        model_input_names=tokenizer.model_input_names,
        clean_up_tokenization_spaces=tokenizer.clean_up_tokenization_spaces,
        extra_special_tokens=tokenizer.extra_special_tokens, **tokenizer.special_tokens_map)


def trim(model: SentenceTransformer, keep_ids: Sequence[int]) -> TrimResult:
    """Keep only the tokens `keep_ids` (see `used_token_ids`), in place: the tokenizer, the
    word-embedding rows and the config's vocab size and token ids. Before anything changes,
    refuses a tokenizer or model it cannot trim (ConfigError) and ids that leave out a token
    the tokenizer or model needs (ValueError)."""
    # sentence-transformers 6.x: the Transformer module of a text model holds its tokenizer as
    # `processor`, and `tokenizer` is a read-only view of it.
    module = model[0]
    tokenizer = getattr(module, "tokenizer", None)
    if tokenizer is None or getattr(module, "processor", None) is not tokenizer:
        raise ConfigError(f"vocab=corpus trims text models only, and {type(module).__name__} "
                          "holds no plain tokenizer: use vocab=none for this base model")
    encoder = hf_model(model)
    embedding = encoder.get_input_embeddings()
    if encoder.get_output_embeddings() is not None:
        raise ConfigError(f"vocab=corpus does not trim the output layer of "
                          f"{type(encoder).__name__}: use vocab=none, or load the encoder alone")
    rows = embedding.num_embeddings
    ids = sorted(set(keep_ids))
    if ids and ids[-1] >= rows:
        raise ValueError(f"keep_ids holds id {ids[-1]}, beyond the {rows} embedding rows")
    new_tokenizer = trim_tokenizer(tokenizer, ids)
    renumber = _Renumbering(ids, tokenizer)
    config_ids = {field: renumber(old, f"config's {field}") for field in CONFIG_TOKEN_IDS
                  if isinstance(old := getattr(encoder.config, field, None), int)}
    padding_idx = (None if embedding.padding_idx is None
                   else renumber(embedding.padding_idx, "embedding's padding index"))
    # RoBERTa-style embeddings count positions from the pad id: it must not move.
    position_pad = getattr(getattr(encoder, "embeddings", None), "padding_idx", None)
    if position_pad is not None and renumber(position_pad, "pad token") != position_pad:
        raise ValueError(f"keep_ids moves the pad id {position_pad}, from which "
                         f"{type(encoder).__name__} counts positions: keep every id below it")

    index = torch.as_tensor(ids, device=embedding.weight.device)
    old_params = embedding.weight.numel()
    with torch.no_grad():
        embedding.weight = nn.Parameter(embedding.weight.index_select(0, index),
                                        requires_grad=embedding.weight.requires_grad)
    embedding.num_embeddings, embedding.padding_idx = len(ids), padding_idx
    for field, new in config_ids.items():
        setattr(encoder.config, field, new)
    encoder.config.vocab_size = len(ids)
    module.processor = new_tokenizer
    result = TrimResult(old_vocab_size=rows, new_vocab_size=len(ids),
                        old_embedding_params=old_params,
                        new_embedding_params=embedding.weight.numel())
    log.info("vocabulary trimmed from %d to %d tokens (word embeddings %.1fM -> %.1fM params)",
             rows, len(ids), old_params / 1e6, result.new_embedding_params / 1e6)
    return result
