"""The teacher's store: chunked, appended, resumed after a kill, shared by content."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import compose, tiny_overrides
from sbert_exp.model import modeling
from sbert_exp.training import teacher

SENTENCES = [f"a man plays the guitar {i}" for i in range(40)] + ["two dogs run"] * 3


@pytest.fixture
def setup(tiny_bert, tmp_path, monkeypatch):
    root = tmp_path / "teacher_embeddings"
    monkeypatch.setattr(teacher, "STORES", teacher.STORES.moved(root.parent))
    monkeypatch.setattr(teacher, "CHUNK", 16)
    base = compose(tiny_overrides(tiny_bert, tmp_path))[0].base_model
    model = modeling.load_base(base, "cpu", str(tiny_bert))
    return base, str(tiny_bert), model, root


def _get(setup, sentences):
    base, path, model, _ = setup
    return teacher.embeddings(base, path, "cpu", sentences, 8, loaded=model)


def _store(root: Path) -> teacher.Store:
    [folder] = [p for p in root.iterdir() if p.is_dir()]
    return teacher.Store(folder)


def test_rows_are_the_models_embeddings_in_the_sentences_order(setup, caplog):
    caplog.set_level(logging.INFO, logger="sbert_exp.training.teacher")
    _, _, model, root = setup
    got = _get(setup, SENTENCES)
    assert got.computed and got.encoded == 41  # 40 + one distinct repeated sentence
    np.testing.assert_allclose(got.embeddings, model.encode(SENTENCES, batch_size=8), atol=1e-5)
    # Chunks of 16: three progress lines, the last one complete.
    progress = [r.getMessage() for r in caplog.records if "sentences encoded" in r.getMessage()]
    assert [p.split(": ")[1].split(" ")[0] for p in progress] == ["16/41", "32/41", "41/41"]
    assert progress[-1].endswith("ETA 0 s")
    store = _store(root)
    assert len(store.index()) == 41
    assert store.vectors.stat().st_size == 41 * 32 * 4  # hidden 32, float32


def test_a_later_set_encodes_only_what_the_store_lacks(setup):
    _, _, model, _ = setup
    _get(setup, SENTENCES[:20])
    again = _get(setup, SENTENCES[10:30])
    assert again.encoded == 10
    np.testing.assert_allclose(again.embeddings, model.encode(SENTENCES[10:30], batch_size=8),
                               atol=1e-5)
    read = _get(setup, SENTENCES[5:25])
    assert not read.computed and read.encoded == 0


def test_a_kill_mid_chunk_resumes_from_the_last_complete_chunk(setup, monkeypatch):
    _, _, model, root = setup
    calls = []
    encode = model.encode

    def dies_on_the_third_chunk(sentences, **kwargs):
        calls.append(len(sentences))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return encode(sentences, **kwargs)

    monkeypatch.setattr(model, "encode", dies_on_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        _get(setup, SENTENCES)
    store = _store(root)
    assert len(store.index()) == 32
    # A kill between a chunk's rows and its digests, and a digest line cut short: neither
    # half-written row counts.
    with open(store.vectors, "ab") as f:
        f.write(b"\0" * 32 * 4 * 3)
    with open(store.keys, "a") as f:
        f.write("0123abcd")
    assert len(store.index()) == 32
    monkeypatch.setattr(model, "encode", encode)
    resumed = _get(setup, SENTENCES)
    assert resumed.encoded == 9  # the 41 distinct sentences less the 32 stored
    np.testing.assert_allclose(resumed.embeddings, encode(SENTENCES, batch_size=8), atol=1e-5)
    assert store.vectors.stat().st_size == 41 * 32 * 4
    assert store.keys.stat().st_size == 41 * 41


def test_the_store_is_keyed_by_prompt_and_length(setup):
    base, path, model, root = setup
    import dataclasses

    _get(setup, SENTENCES[:4])
    prompted = dataclasses.replace(base, prefix="query: ")
    teacher.embeddings(prompted, path, "cpu", SENTENCES[:4], 8, loaded=model)
    shorter = dataclasses.replace(base, max_seq_length=8)
    teacher.embeddings(shorter, path, "cpu", SENTENCES[:4], 8, loaded=model)
    assert len([p for p in root.iterdir() if p.is_dir()]) == 3
