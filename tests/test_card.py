"""A saved model's card says what the model is, in the job's folder and in the logged model."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_tiny_job, tiny_overrides
from sbert_exp.config.schema import CardConfig
from sbert_exp.forms.card import SECTION, Card, section
from sbert_exp.tracking import uris


def test_the_section_names_the_base_layers_recipe_and_scores():
    card = Card("e5_small", CardConfig("intfloat/multilingual-e5-small", "mit",
                                       ["multilingual", "hi"]),
                [0, 1, 2, 9, 10, 11], 12, "middle removed", 15513,
                ["distillation from the base (all sentences, 1 epoch)", "STS (384 pairs, 1 epoch)"],
                {"sts_test/spearman_cosine": 0.82071, "base_model/sts_test/spearman_cosine": 0.8397,
                 "bitext/en-hi/accuracy": 0.5, "speed/speedup_vs_unpruned": 2.0})
    assert section(card) == (
        f"{SECTION}\n\nMade with sbert_exp, by layer pruning.\n\n"
        "- **Base model:** e5_small (`intfloat/multilingual-e5-small`), licence mit\n"
        "- **Languages:** multilingual, hi\n"
        "- **Layers kept:** 6 of 12: 0 1 2 9 10 11 (middle removed)\n"
        "- **Vocabulary:** 15,513 tokens\n"
        "- **Recovery:** distillation from the base (all sentences, 1 epoch) -> "
        "STS (384 pairs, 1 epoch)\n\n"
        "| score | this model | the base as it is |\n|---|---|---|\n"
        "| STSb test, Spearman of cosines | 0.8207 | 0.8397 |\n"
        "| bitext/en-hi/accuracy | 0.5000 | - |\n")


def test_a_saved_and_a_logged_model_carry_the_card(tiny_bert, tmp_path):
    import mlflow

    from sbert_exp.tracking.tags import LOGGED_MODEL_TAG

    out = tmp_path / "job"
    run_tiny_job([*tiny_overrides(tiny_bert, tmp_path, phase="sts"), "pruning.keep=3",
                  "pruning.strategy=middle", "eval.speed_rounds=0", "tracking.log_model=true",
                  "base_model.card.license=mit", "base_model.card.language=[en,hi]",
                  "base_model.card.origin=someone/tiny"], out)
    readme = (out / "model" / "README.md").read_text()
    front = readme.split("---")[1]
    assert "license: mit" in front and "- en\n- hi" in front and "sbert_exp" in front
    assert "- **Layers kept:** 3 of 12: 0 1 11 (middle removed)" in readme
    assert "- **Recovery:** STS (32 pairs, 1 epoch)" in readme
    assert "- **Base model:** tiny_bert (`someone/tiny`), licence mit" in readme
    assert "| STSb test, Spearman of cosines |" in readme

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    with uris.using(f"sqlite:///{tmp_path / 'mlflow.db'}"):
        local = Path(mlflow.artifacts.download_artifacts(run.data.tags[LOGGED_MODEL_TAG],
                                                         dst_path=str(tmp_path / "logged")))
    logged = next(local.rglob("README.md")).read_text()
    assert SECTION in logged and "- **Layers kept:** 3 of 12: 0 1 11 (middle removed)" in logged


@pytest.mark.parametrize("name", ["e5_small", "minilm_l6", "muril", "mahabert_v2"])
def test_every_embedded_and_study_base_states_its_licence_and_languages(name):
    from conftest import compose

    card = compose([f"base_model={name}"])[0].base_model.card
    assert card.license and card.language and card.origin
