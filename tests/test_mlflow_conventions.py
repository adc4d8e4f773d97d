"""MLflow as its UI and users expect it: the experiment's kind, dataset inputs with MLflow's own
source types, runs:/ URIs read without MLflow's internals."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sbert_exp.config.schema import TrackingConfig
from sbert_exp.tracking import registry
from sbert_exp.tracking.runs import Tracker
from sbert_exp.tracking.tags import EXPERIMENT_KIND_TAG, UI_TRAINING_VIEW


def _client(uri: str):
    from sbert_exp.tracking import uris

    return uris.client(uri)


def test_experiment_kind_is_set_on_a_new_and_on_an_old_experiment(tmp_path, caplog):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with caplog.at_level(logging.INFO, logger="sbert_exp.tracking.runs"), \
            Tracker(TrackingConfig(uri=uri, experiment="new")).run("job"):
        pass
    client = _client(uri)
    new = client.get_experiment_by_name("new")
    assert new.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    # The link the tool prints opens the training runs, not the GenAI overview.
    assert f"/#/experiments/{new.experiment_id}?workflowType=machine_learning" in caplog.text

    old = client.create_experiment("old")  # as an earlier version of the tool made it
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    with Tracker(TrackingConfig(uri=uri, experiment="old")).run("job"):
        pass
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"

    # A kind chosen in the UI's selector stays as chosen.
    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    with Tracker(TrackingConfig(uri=uri, experiment="chosen")).run("job"):
        pass
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_the_installed_ui_picks_the_training_view_from_the_link():
    """MLflow 3.17.2's UI chooses GenAI or training pages from `?workflowType=` (or the browser's
    remembered switch), not from the experiment's tag: when a new MLflow changes that, this
    fails, and docs/metrics.md and tags.UI_TRAINING_VIEW need a look."""
    import mlflow

    build = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    bundles = sorted(build.glob("main.*.js"))
    if not bundles:
        pytest.skip("this MLflow has no UI build (mlflow-skinny)")
    main = bundles[0].read_text(encoding="utf-8", errors="replace")
    key, value = UI_TRAINING_VIEW.split("=")
    assert '"mlflow.workflowType"' in main
    assert f'get("{key}")' in main
    assert f'MACHINE_LEARNING="{value}"' in main


def test_dataset_inputs_read_back_with_mlflow_source_types(tmp_path):
    from mlflow.data import get_source
    from mlflow.data.sources import HuggingFaceDatasetSource, LocalArtifactDatasetSource

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    local = str(tmp_path / "sts-test.csv")
    digest = "0123456789abcdef" * 4
    with Tracker(TrackingConfig(uri=uri, experiment="tests")).run("job") as run:
        run.log_datasets([
            ("snli_stsb/sts_test", digest, local, "evaluation"),
            ("hub_snli_stsb/sts_dev", "hub:sentence-transformers/stsb:None:validation",
             "sentence-transformers/stsb", "validation"),
            ("hub_snli_stsb/nli_train", "hub:stanfordnlp/snli:plain_text:train",
             "stanfordnlp/snli", "training"),
        ])
    inputs = {d.dataset.name: d for d in _client(uri).get_run(run.run_id).inputs.dataset_inputs}
    assert sorted(inputs) == ["hub_snli_stsb/nli_train", "hub_snli_stsb/sts_dev",
                              "snli_stsb/sts_test"]

    test = inputs["snli_stsb/sts_test"]
    assert (test.dataset.source_type, test.dataset.digest) == ("local", digest[:36])
    assert [(t.key, t.value) for t in test.tags] == [("mlflow.data.context", "evaluation")]
    source = get_source(test)  # MLflow itself reads the source back
    assert isinstance(source, LocalArtifactDatasetSource)
    assert source.uri == local

    dev = inputs["hub_snli_stsb/sts_dev"]
    assert dev.dataset.source_type == "hugging_face"
    assert dev.dataset.digest == "hub:sentence-transformers/stsb:None:"  # 36 characters kept
    assert [(t.key, t.value) for t in dev.tags] == [("mlflow.data.context", "validation")]
    source = get_source(dev)
    assert isinstance(source, HuggingFaceDatasetSource)
    assert (source.path, source.config_name, source.split) == (
        "sentence-transformers/stsb", None, "validation")

    train = get_source(inputs["hub_snli_stsb/nli_train"])
    assert (train.path, train.config_name, train.split) == ("stanfordnlp/snli", "plain_text",
                                                            "train")
    assert inputs["hub_snli_stsb/nli_train"].tags[0].value == "training"


@pytest.mark.parametrize(("uri", "parsed"), [
    ("runs:/0a1b2c/model", ("0a1b2c", "model")),
    ("runs:/0a1b2c/model/", ("0a1b2c", "model")),
    ("runs:/0a1b2c/report/report.md", ("0a1b2c", "report/report.md")),
    ("runs:/0a1b2c", ("0a1b2c", "")),
    ("runs://profile/0a1b2c/model", ("0a1b2c", "model")),
    ("models:/m-0a1b2c", None),
    ("models:/name@recommended", None),
    ("/tmp/model", None),
])
def test_runs_uris_are_parsed(uri, parsed):
    assert registry.parse_runs_uri(uri) == parsed


@pytest.mark.parametrize("uri", ["runs:/", "runs:", "runs:0a1b2c/model", "runs://profile"])
def test_malformed_runs_uris_are_refused(uri):
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="not a runs URI"):
        registry.parse_runs_uri(uri)


def test_a_runs_uri_registers_the_run_s_folder(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = _client(uri)
    run = client.create_run(client.create_experiment("tests")).info.run_id
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "MLmodel").write_text("flavors: {}\n")
    client.log_artifacts(run, str(folder), "model")
    assert registry.register(uri, f"runs:/{run}/model/", "tests-m") == "1"
    version = client.get_model_version("tests-m", "1")
    assert (version.run_id, version.source) == (
        run, f"{client.get_run(run).info.artifact_uri}/model")


def test_a_registry_set_elsewhere_in_the_process_does_not_redirect_register(tmp_path,
                                                                            monkeypatch):
    """The store named is the store used: a registry URI another caller set (MLflow's setters
    export it to the environment) is not where the model is registered."""
    uri, other = (f"sqlite:///{tmp_path / name}" for name in ("mlflow.db", "other.db"))
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", other)
    client = _client(uri)
    run = client.create_run(client.create_experiment("tests")).info.run_id
    client.log_text(run, "flavors: {}\n", "model/MLmodel")
    assert registry.register(uri, f"runs:/{run}/model", "tests-m") == "1"
    assert client.get_model_version_by_alias("tests-m", "recommended").run_id == run
    assert not (tmp_path / "other.db").exists()


@pytest.mark.parametrize("explicit", [None, "sqlite:////set/by/hand.db"])
@pytest.mark.parametrize("env", [None, "sqlite:////from/env.db"])
def test_using_points_the_fluent_api_at_a_store_and_puts_everything_back(
        explicit, env, monkeypatch):
    import os

    import mlflow

    from sbert_exp.tracking import uris

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    if env:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
    mlflow.set_tracking_uri(explicit)
    try:
        before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri(),
                  os.environ.get("MLFLOW_TRACKING_URI"), os.environ.get("MLFLOW_REGISTRY_URI"))
        with uris.using("sqlite:////inside.db"):
            assert mlflow.get_tracking_uri() == mlflow.get_registry_uri() == "sqlite:////inside.db"
        assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri(),
                os.environ.get("MLFLOW_TRACKING_URI"),
                os.environ.get("MLFLOW_REGISTRY_URI")) == before
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        mlflow.set_tracking_uri(None)
        assert mlflow.get_tracking_uri() != "sqlite:////inside.db"
    finally:
        mlflow.set_tracking_uri(None)
