"""The study's Marathi and Hindi setups, offline, on small fixtures written here."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

import sbert_exp.train  # noqa: F401  (registers the schema for hydra's compose)
from conftest import CONF, compose, tiny_overrides
from sbert_exp.data.inputs import load_data
from sbert_exp.errors import DataError
from sbert_exp.job.run import run_job

MARATHI_STS = [
    ("मुलगा फुटबॉल खेळत आहे.", "एक मुलगा चेंडू खेळत आहे.", "4.2"),
    ("स्त्री भाजी कापत आहे.", "एक महिला कांदा चिरत आहे.", "3.5"),
    ("कुत्रा गवतावर धावत आहे.", "माणूस गिटार वाजवत आहे.", "0.0"),
    ("र्‍हस्व स्वर लहान असतो.", "दीर्घ स्वर मोठा असतो.", "1.6"),
]
HINDI_STS = [
    ("लड़का फुटबॉल खेल रहा है।", "एक लड़का गेंद से खेल रहा है।", "4.0"),
    ("महिला सब्ज़ी काट रही है।", "एक औरत प्याज़ काट रही है।", "3.2"),
    ("कुत्ता घास पर दौड़ रहा है।", "आदमी गिटार बजा रहा है।", "0.2"),
]
NLI = [("मुलगा खेळत आहे.", "मुलगा झोपला आहे.", 2), ("मुलगा खेळत आहे.", "एक मूल खेळत आहे.", 0),
       ("स्त्री गात आहे.", "स्त्री आनंदी आहे.", 1), ("स्त्री गात आहे.", "कोणी गात आहे.", -1)]


def _write(root: Path, lang: str, code: str, sts) -> dict[str, Path]:
    folder = root / lang
    folder.mkdir(parents=True)
    files = {}
    for split in ("train", "test"):
        rows = [f"main-captions\tMSRvid\t2012test\t{i:04d}\t{score}\t{a}\t{b}"
                for i, (a, b, score) in enumerate(sts)]
        files[split] = folder / f"sts-{split}-{code}.tsv"
        files[split].write_text("\n".join(rows) + "\n", encoding="utf-8")
    files["nli"] = folder / "xnli.jsonl"
    files["nli"].write_text("".join(
        json.dumps({"premise": p, "hypothesis": h, "label": lab}, ensure_ascii=False) + "\n"
        for p, h, lab in NLI), encoding="utf-8")
    return files


@pytest.mark.parametrize(("lang", "code", "sts", "base"),
                         [("marathi", "mr", MARATHI_STS, "muril"),
                          ("hindi", "hi", HINDI_STS, "muril")])
def test_language_preset_reads_local_files(lang, code, sts, base, tmp_path, monkeypatch):
    files = _write(tmp_path, lang, code, sts)
    monkeypatch.setenv("SBERT_EXP_DATA", str(tmp_path))
    cfg, _ = compose([f"experiment={lang}", "dataset.nli_train.source=local",
                      f"dataset.nli_train.location={files['nli']}", "dataset.nli_test=null"])
    assert cfg.base_model.name == base and cfg.dataset.name == lang
    assert cfg.dataset.sts_test.location == str(files["test"])
    data = load_data(cfg)
    assert len(data.sts_test) == len(sts)
    assert data.sts_test[0] == {"sentence1": sts[0][0], "sentence2": sts[0][1],
                                "score": pytest.approx(float(sts[0][2]) / 5)}
    assert sorted(data.nli_train["label"]) == [0, 1, 2]  # the -1 row is skipped


def test_language_preset_sweeps_the_study_models():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        mr = hydra_compose("train", ["experiment=marathi"], return_hydra_config=True)
        hi = hydra_compose("train", ["experiment=hindi"], return_hydra_config=True)
        grid = hydra_compose("train", ["experiment=grid"], return_hydra_config=True)
    assert mr.hydra.sweeper.params == {"base_model": "muril,mahabert_v2",
                                       "pruning.keep": "2,6,12",
                                       "pruning.strategy": "top,middle,bottom"}
    assert hi.hydra.sweeper.params["base_model"] == "muril,hindbert_v2"
    assert grid.hydra.sweeper.params["pruning.keep"] == "2,6,12"


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_job_of_every_preset_passes_its_checks(preset):
    """Expand a preset's sweep as Hydra's basic sweeper does; each job must plan cleanly."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from sbert_exp.job.checks import plan
    from sbert_exp.pruning.strategies import SCORED

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        swept = hydra_compose("train", [f"experiment={preset}"],
                              return_hydra_config=True).hydra.sweeper.params or {}
    grid = [[f"{key}={value}" for value in str(values).split(",")]
            for key, values in swept.items()]
    jobs = [list(job) for job in itertools.product(*grid)] or [[]]
    for job in jobs:
        cfg, _ = compose([f"experiment={preset}", *job])
        kept = plan(cfg)
        if kept is None:  # a scored strategy: the layers are chosen once the model loads
            assert cfg.pruning.strategy in SCORED and cfg.pruning.keep is not None, job
        else:
            assert len(kept) == cfg.pruning.keep or cfg.pruning.keep is None, job


def test_marathi_baselines_compare_equal_depth():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    for preset, small in (("marathi_baselines_keep6", "mahabert_small"),
                          ("marathi_baselines_keep2", "mahabert_smaller")):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            swept = hydra_compose("train", [f"experiment={preset}"],
                                  return_hydra_config=True).hydra.sweeper.params
        assert swept["base_model"].split(",")[-1] == small
        assert swept["base_model.init"] == "pretrained,random"
        cfg, _ = compose([f"experiment={preset}", f"base_model={small}"])
        assert cfg.base_model.num_layers == int(swept["pruning.keep"])
        assert cfg.dataset.name == "marathi"


def test_hub_nli_offline_names_the_local_fix(tmp_path, monkeypatch):
    _write(tmp_path, "marathi", "mr", MARATHI_STS)
    monkeypatch.setenv("SBERT_EXP_DATA", str(tmp_path))
    cfg, _ = compose(["experiment=marathi"])
    with pytest.raises(DataError, match=r"dataset.nli_train: could not load Hub dataset "
                                        r"'Divyanshu/indicxnli' .* set dataset.nli_train."
                                        r"source=local dataset.nli_train.location=FILE"):
        load_data(cfg)


def test_marathi_job_end_to_end_on_fixtures(tiny_bert, tmp_path, monkeypatch):
    files = _write(tmp_path, "marathi", "mr", MARATHI_STS)
    monkeypatch.setenv("SBERT_EXP_DATA", str(tmp_path))
    overrides = [o for o in tiny_overrides(tiny_bert, tmp_path) if not o.startswith("phase=")]
    cfg, dict_cfg = compose(["experiment=marathi", *overrides, "pruning.keep=2",
                             "dataset.nli_train.source=local",
                             f"dataset.nli_train.location={files['nli']}",
                             "dataset.nli_test.source=local",
                             f"dataset.nli_test.location={files['nli']}", "save_model=false"])
    metrics = run_job(cfg, tmp_path / "job", {}, None)
    assert metrics["train_nli/pairs"] == 3 and metrics["train_sts/pairs"] == 4
    assert json.loads((tmp_path / "job" / "metrics.json").read_text()) == pytest.approx(metrics)
