"""Vocabulary trimming on tiny WordPiece, Unigram and Devanagari models: same tokens and
bit-identical embeddings on the corpus, unseen words still tokenized, save and reload."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sbert_exp.errors import ConfigError
from sbert_exp.forms.vocab import TrimResult, trim, trim_tokenizer, used_token_ids
from sbert_exp.model.modeling import hf_model

ENGLISH = ["A man is playing a guitar.", "Two dogs are running on the beach!",
           "A woman is slicing an onion.", "The girl is riding a horse, outside."]
# Sentences the tiny Unigram tokenizer is trained on; ENGLISH is a part of them.
UNIGRAM_TRAIN = ENGLISH + [
    "A young boy is playing the piano.", "Three children are eating in the field.",
    "An old man is cooking.", "A black cat is sitting on the car.",
    "People are walking in the street.", "The woman is brushing her hair.",
    "A big dog jumps over a small ball.", "Men are dancing and singing outside.",
    "The quick brown fox jumps over the lazy zebra.", "Two women are talking by the water.",
] * 3
MARATHI = ["मुलगा फुटबॉल खेळत आहे.", "एक महिला कांदा चिरत आहे.", "कुत्रा गवतावर धावत आहे.",
           "र्‍हस्व स्वर लहान असतो."]
HINDI = ["लड़का फुटबॉल खेल रहा है।", "एक औरत प्याज़ काट रही है।", "आदमी गिटार बजा रहा है।",
         "कुत्ता घास पर दौड़ रहा है।"]
BPE_REFUSAL = ("vocab=corpus cannot rebuild a BPE tokenizer (byte-level, as RoBERTa's): "
               "use vocab=none for this base model")


def _load(path: Path):
    """A SentenceTransformer as `modeling.load_base` builds one: Transformer + mean pooling."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    encoder = Transformer(str(path), max_seq_length=60)
    return SentenceTransformer(modules=[encoder, Pooling(encoder.get_embedding_dimension())],
                               device="cpu")


def _save_tiny(out: Path, backend, config, specials: dict[str, str]) -> Path:
    """Save a `tokenizers` backend as a fast tokenizer with a random tiny encoder of `config`."""
    from transformers import AutoModel, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=60,
                                        **specials)
    tokenizer.save_pretrained(out)
    config.vocab_size = len(tokenizer)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_xlmr(tmp_path_factory) -> Path:
    """An XLM-R-like model: a trained Unigram with Metaspace, <s> <pad> </s> <unk> at ids 0-3
    and <mask> added after the pieces, and a 2-layer XLM-R encoder (hidden 32)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import UnigramTrainer
    from transformers import XLMRobertaConfig

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    backend = Tokenizer(models.Unigram())
    backend.normalizer = normalizers.NFKC()
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    backend.train_from_iterator(UNIGRAM_TRAIN, UnigramTrainer(
        vocab_size=150, special_tokens=specials, unk_token="<unk>", show_progress=False))
    backend.add_special_tokens(["<mask>"])
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)])
    config = XLMRobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=64,
                              type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    return _save_tiny(tmp_path_factory.mktemp("tiny_xlmr"), backend, config, {
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
        "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"})


@pytest.fixture(scope="module")
def tiny_muril(tmp_path_factory) -> Path:
    """A MuRIL-like cased WordPiece BERT trained on Marathi and Hindi, loaded as MuRIL is
    (BertTokenizer from vocab.txt, do_lower_case=False)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from tokenizers.trainers import WordPieceTrainer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = tmp_path_factory.mktemp("tiny_muril")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.train_from_iterator(MARATHI + HINDI, WordPieceTrainer(
        vocab_size=200, special_tokens=specials, show_progress=False))
    vocab = sorted(backend.get_vocab().items(), key=lambda item: item[1])
    (out / "vocab.txt").write_text("".join(piece + "\n" for piece, _ in vocab), encoding="utf-8")
    BertTokenizerFast(vocab=str(out / "vocab.txt"), do_lower_case=False).save_pretrained(out)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=64)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory) -> Path:
    """A RoBERTa-like model with a trained byte-level BPE tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer
    from transformers import RobertaConfig

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.train_from_iterator(ENGLISH, BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    backend.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    config = RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=64, pad_token_id=1)
    return _save_tiny(tmp_path_factory.mktemp("tiny_roberta"), backend, config, {
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"})


CASES = {"wordpiece": ("tiny_bert", ENGLISH), "unigram": ("tiny_xlmr", ENGLISH),
         "devanagari": ("tiny_muril", MARATHI)}


@pytest.fixture(params=list(CASES))
def case(request):
    """(a fresh model, its corpus) for each tokenizer kind."""
    fixture, corpus = CASES[request.param]
    model = _load(request.getfixturevalue(fixture))
    return model, corpus


def _tokens(model, texts: list[str]) -> list[list[str]]:
    tokenizer = model.tokenizer
    return [tokenizer.convert_ids_to_tokens(ids) for ids in tokenizer(texts)["input_ids"]]


def test_trim_keeps_corpus_tokens_and_embeddings_bit_identical(case):
    model, corpus = case
    old_tokenizer, old_rows = model.tokenizer, hf_model(model).config.vocab_size
    keep = used_token_ids(model.tokenizer, corpus)
    tokens = _tokens(model, corpus)
    before = model.encode(corpus, convert_to_tensor=True)  # leaves its padding on the backend

    result = trim(model, keep)

    hidden = hf_model(model).config.hidden_size
    assert result == TrimResult(old_vocab_size=old_rows, new_vocab_size=len(keep),
                                old_embedding_params=old_rows * hidden,
                                new_embedding_params=len(keep) * hidden)
    assert len(keep) < old_rows
    assert hf_model(model).config.vocab_size == len(model.tokenizer) == len(keep)
    assert hf_model(model).get_input_embeddings().weight.shape == (len(keep), hidden)
    assert _tokens(model, corpus) == tokens
    assert model.tokenizer.convert_ids_to_tokens(list(range(len(keep)))) == \
        old_tokenizer.convert_ids_to_tokens(keep)
    assert torch.equal(model.encode(corpus, convert_to_tensor=True), before)


def test_used_token_ids_are_the_corpus_tokens_and_the_special_ones(tiny_bert):
    tokenizer = _load(tiny_bert).tokenizer
    emitted = {i for ids in tokenizer(ENGLISH, add_special_tokens=False)["input_ids"] for i in ids}
    assert used_token_ids(tokenizer, ENGLISH) == sorted(emitted | {0, 1, 2, 3, 4})
    assert used_token_ids(tokenizer, iter(ENGLISH)) == used_token_ids(tokenizer, ENGLISH)
    assert used_token_ids(tokenizer, []) == [0, 1, 2, 3, 4]


def test_min_count_drops_rare_tokens_but_never_special_ones(tiny_bert):
    tokenizer = _load(tiny_bert).tokenizer
    kept = used_token_ids(tokenizer, ["a dog", "a cat"], min_count=2)
    assert tokenizer.convert_ids_to_tokens(kept) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                                     "[MASK]", "a"]
    with pytest.raises(ValueError, match="min_count=0"):
        used_token_ids(tokenizer, ENGLISH, min_count=0)


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_xlmr"])
def test_trimmed_model_saves_and_reloads_as_plain_sentence_transformer(fixture, request,
                                                                       tmp_path):
    from sentence_transformers import SentenceTransformer

    model = _load(request.getfixturevalue(fixture))
    keep = used_token_ids(model.tokenizer, ENGLISH)
    trim(model, keep)
    before = model.encode(ENGLISH, convert_to_tensor=True)
    model.save(str(tmp_path / "trimmed"))

    reloaded = SentenceTransformer(str(tmp_path / "trimmed"), device="cpu")
    assert hf_model(reloaded).config.vocab_size == len(reloaded.tokenizer) == len(keep)
    assert _tokens(reloaded, ENGLISH) == _tokens(model, ENGLISH)
    assert torch.equal(reloaded.encode(ENGLISH, convert_to_tensor=True), before)


@pytest.mark.parametrize(("fixture", "corpus", "unseen"),
                         [("tiny_bert", ENGLISH, "zebra"),
                          ("tiny_xlmr", ENGLISH, "zebra"),
                          ("tiny_muril", MARATHI, "प्याज़")])
def test_unseen_word_becomes_unknown_or_with_single_chars_spells_out(fixture, corpus, unseen,
                                                                    request):
    path = request.getfixturevalue(fixture)
    plain, spelled = _load(path), _load(path)
    original = _tokens(plain, corpus)
    trim(plain, used_token_ids(plain.tokenizer, corpus))
    keep = used_token_ids(spelled.tokenizer, corpus, single_chars=True)
    trim(spelled, keep)

    plain_ids = plain.tokenizer(unseen, add_special_tokens=False)["input_ids"]
    assert plain.tokenizer.unk_token_id in plain_ids
    ids = spelled.tokenizer(unseen, add_special_tokens=False)["input_ids"]
    assert spelled.tokenizer.unk_token_id not in ids
    pieces = spelled.tokenizer.convert_ids_to_tokens(ids)
    assert "".join(p.removeprefix("##") for p in pieces).lstrip("\u2581") == unseen
    assert spelled.encode([unseen]).shape == (1, 32)
    assert _tokens(spelled, corpus) == original  # the corpus is unchanged


def test_single_chars_keep_only_scripts_seen_in_the_corpus(tiny_muril):
    tokenizer = _load(tiny_muril).tokenizer
    english_only = used_token_ids(tokenizer, ["a man"], single_chars=True)
    assert english_only == used_token_ids(tokenizer, ["a man"])  # no Latin pieces to add
    added = sorted(set(used_token_ids(tokenizer, ["आहे"], single_chars=True))
                   - set(used_token_ids(tokenizer, ["आहे"])))
    pieces = tokenizer.convert_ids_to_tokens(added)
    assert {"ए", "##ा", "##़", "क"} <= set(pieces)
    assert all(len(p.removeprefix("##")) == 1 for p in pieces), pieces


def _handmade(model, unk: str):
    """A fast tokenizer around a hand-made `tokenizers` model: Unigram with Metaspace
    (unknown token "<unk>") or WordPiece with BERT's pre-tokenizer."""
    from tokenizers import Tokenizer, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(model)
    backend.pre_tokenizer = (pre_tokenizers.Metaspace() if unk == "<unk>"
                             else pre_tokenizers.BertPreTokenizer())
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=unk)


def test_unigram_keeps_its_lowest_scoring_piece_so_unknown_scores_do_not_move():
    """The unknown-character score is min(score) - 10. Without the lowest piece ("q", -40) a
    trimmed minimum of -12 would make "▁cat" + <unk> (-23) beat "▁ca" + "ts" (-24) on "cats"."""
    from tokenizers import models

    vocab = [("<unk>", 0.0), ("▁ca", -12.0), ("ts", -12.0), ("▁cat", -1.0), ("s", -30.0),
             ("q", -40.0)]
    tokenizer = _handmade(models.Unigram(vocab, unk_id=0), "<unk>")
    corpus = ["cats cat"]
    assert tokenizer.tokenize(corpus[0]) == ["▁ca", "ts", "▁cat"]

    keep = used_token_ids(tokenizer, corpus)
    assert tokenizer.convert_ids_to_tokens(keep) == ["<unk>", "▁ca", "ts", "▁cat", "q"]
    assert trim_tokenizer(tokenizer, keep).tokenize(corpus[0]) == ["▁ca", "ts", "▁cat"]
    without_lowest = trim_tokenizer(tokenizer, keep[:-1]).tokenize(corpus[0])
    assert without_lowest[:2] == ["▁cat", "s"]  # "s" is the text of an <unk> token here


def test_wordpiece_keeps_pieces_of_words_it_gives_up_on():
    """On "abc" the greedy match takes "ab", finds no "##c" and gives [UNK]; without "ab" the
    trimmed tokenizer would find "a" + "##bc" instead."""
    from tokenizers import models

    vocab = {"[UNK]": 0, "ab": 1, "a": 2, "##bc": 3, "x": 4}
    tokenizer = _handmade(models.WordPiece(vocab, unk_token="[UNK]"), "[UNK]")
    corpus = ["abc a xbc"]
    assert tokenizer.tokenize(corpus[0]) == ["[UNK]", "a", "x", "##bc"]

    keep = used_token_ids(tokenizer, corpus)
    assert keep == [0, 1, 2, 3, 4]
    assert trim_tokenizer(tokenizer, keep).tokenize(corpus[0]) == ["[UNK]", "a", "x", "##bc"]
    assert trim_tokenizer(tokenizer, [0, 2, 3, 4]).tokenize("abc") == ["a", "##bc"]


def test_byte_level_bpe_is_refused_before_anything_changes(tiny_roberta):
    model = _load(tiny_roberta)
    tokenizer, weight = model.tokenizer, hf_model(model).get_input_embeddings().weight
    with pytest.raises(ConfigError) as refused:
        used_token_ids(tokenizer, ENGLISH)
    assert str(refused.value) == BPE_REFUSAL
    with pytest.raises(ConfigError) as refused:
        trim(model, list(range(10)))
    assert str(refused.value) == BPE_REFUSAL
    assert model.tokenizer is tokenizer
    assert hf_model(model).get_input_embeddings().weight is weight
    assert hf_model(model).config.vocab_size == weight.shape[0]


def test_missing_special_token_is_refused_before_anything_changes(tiny_xlmr):
    model = _load(tiny_xlmr)
    tokenizer, rows = model.tokenizer, hf_model(model).config.vocab_size
    keep = [i for i in used_token_ids(tokenizer, ENGLISH) if i != tokenizer.mask_token_id]
    with pytest.raises(ValueError, match=r"keep_ids lacks id \d+ \('<mask>'\), the added token"):
        trim(model, keep)
    with pytest.raises(ValueError, match=rf"id {rows + 5}, beyond the {rows} embedding rows"):
        trim(model, [0, 1, 2, 3, rows + 5])
    with pytest.raises(ValueError, match="keep_ids must be ids of the tokenizer"):
        trim(model, [-1, 0, 1, 2, 3])
    assert model.tokenizer is tokenizer and hf_model(model).config.vocab_size == rows


def test_encoder_with_an_output_layer_is_refused(tiny_bert):
    from transformers import BertForMaskedLM

    model = _load(tiny_bert)
    model[0].model = BertForMaskedLM(hf_model(model).config)
    with pytest.raises(ConfigError, match="does not trim the output layer of BertForMaskedLM"):
        trim(model, used_token_ids(model.tokenizer, ENGLISH))


@pytest.mark.slow
def test_real_e5_tokenizer_tokenizes_the_corpus_the_same_after_trimming():
    """The embedded multilingual e5_small tokenizer (250,002 pieces), on prefixed sentences."""
    from transformers import AutoTokenizer

    from sbert_exp.data.assets import cache_dir

    path = cache_dir() / "e5_small"
    if not (path / "tokenizer.json").is_file():
        pytest.skip(f"e5_small is not prepared in {path}: run `make assets`")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    corpus = [f"query: {s}" for s in [*ENGLISH, *MARATHI, *HINDI,
                                      "The quick brown fox, aged 7, jumps over 2 lazy dogs!"]]
    keep = used_token_ids(tokenizer, corpus, single_chars=True)
    trimmed = trim_tokenizer(tokenizer, keep)
    assert len(trimmed) == len(keep) < 2000
    assert trimmed(corpus)["input_ids"] == [[keep.index(i) for i in ids]
                                            for ids in tokenizer(corpus)["input_ids"]]
    unseen = trimmed("query: दिल्ली zebra")["input_ids"]
    assert tokenizer.unk_token_id not in tokenizer("query: दिल्ली zebra")["input_ids"]
    assert trimmed.unk_token_id not in unseen


# ------------------------------------------------------------------ the vocab config group


def _vocab_job(tiny_bert: Path, tmp_path: Path, name: str, *more: str) -> dict[str, float]:
    from conftest import run_tiny_job, tiny_overrides

    return run_tiny_job([*tiny_overrides(tiny_bert, tmp_path, phase="none"), "pruning.keep=3",
                         "eval.speed_rounds=0", *more], tmp_path / name)


@pytest.mark.slow
def test_vocab_corpus_job_trims_and_saves_a_model_with_the_same_embeddings(tiny_bert, tmp_path):
    """A corpus file of three sentences: the saved model keeps their tokens and the special
    ones, and embeds them bit-identically to the untrimmed pruned model."""
    from sentence_transformers import SentenceTransformer

    corpus = ["a man is playing a guitar", "two dogs are running on the beach", "people dance"]
    (tmp_path / "corpus.txt").write_text("\n".join(corpus) + "\n")
    full = _vocab_job(tiny_bert, tmp_path, "full")
    trimmed = _vocab_job(tiny_bert, tmp_path, "trimmed", "vocab=corpus",
                         "vocab.training_splits=false", f"vocab.files=[{tmp_path}/corpus.txt]",
                         "vocab.single_chars=false")
    vocab_size = len((tiny_bert / "vocab.txt").read_text().split())
    assert full["model/vocab_size"] == vocab_size
    models = {name: SentenceTransformer(str(tmp_path / name / "model"), device="cpu")
              for name in ("full", "trimmed")}
    kept = used_token_ids(models["full"].tokenizer, corpus)
    assert trimmed["model/vocab_size"] == len(kept) < vocab_size
    assert hf_model(models["trimmed"]).get_input_embeddings().num_embeddings == len(kept)
    assert trimmed["model/params_embeddings"] == (full["model/params_embeddings"]
                                                  - 32 * (vocab_size - len(kept)))
    assert trimmed["model/disk_mb"] < full["model/disk_mb"]
    assert torch.equal(*(m.encode(corpus, convert_to_tensor=True) for m in models.values()))


@pytest.mark.parametrize(("more", "message"), [
    (["vocab.files=[{tmp}/none.txt]"],
     "vocab.files[0]: file {tmp}/none.txt does not exist: fix the path"),
    (["vocab.files=[{tmp}/empty.txt]"],
     "vocab.files[0]: {tmp}/empty.txt holds no sentences: write one sentence per line"),
    (["vocab.min_count=0"], "vocab.min_count=0 is invalid: it must be at least 1"),
    (["vocab.training_splits=false"],
     "vocab=corpus has no text: dataset=snli_stsb gives no training split (or "
     "vocab.training_splits=false) and vocab.files is empty: add "
     "vocab.files=[path/to/text.txt]"),
], ids=["missing", "empty", "min_count", "no_text"])
def test_bad_vocab_input_is_one_line_before_any_model_loads(more, message, tiny_bert, tmp_path,
                                                            monkeypatch):
    from sbert_exp.errors import UserError
    from sbert_exp.model import modeling

    monkeypatch.setattr(modeling, "load_base", lambda *a, **k: pytest.fail("model loaded"))
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(UserError) as caught:
        _vocab_job(tiny_bert, tmp_path, "job", "vocab=corpus",
                   *[m.format(tmp=tmp_path) for m in more])
    assert str(caught.value) == message.format(tmp=tmp_path)
    assert not (tmp_path / "mlflow.db").exists()


def test_bpe_base_model_is_refused_from_its_files(tiny_roberta, tmp_path, monkeypatch):
    from conftest import run_tiny_job, tiny_overrides
    from sbert_exp.model import modeling

    monkeypatch.setattr(modeling, "load_base", lambda *a, **k: pytest.fail("model loaded"))
    overrides = [o if not o.startswith("base_model.location=")
                 else f"base_model.location={tiny_roberta}"
                 for o in tiny_overrides(tiny_roberta, tmp_path, phase="none")]
    overrides = [o if not o.startswith("base_model.num_layers=") else "base_model.num_layers=2"
                 for o in overrides]
    with pytest.raises(ConfigError) as caught:
        run_tiny_job([*overrides, "pruning.keep=1", "vocab=corpus"], tmp_path / "job")
    assert str(caught.value) == ("vocab=corpus cannot rebuild a BPE tokenizer (byte-level, as "
                                 "RoBERTa's): use vocab=none for this base model")
    assert not (tmp_path / "mlflow.db").exists()
