"""One run's logging calls (params, metrics, tags, inputs, artifacts, a model), each a tracking
call that Ctrl-C cannot cut in half; and how a run is marked FAILED."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sbert_exp.tracking import uris
from sbert_exp.tracking.tags import LOGGED_MODEL_TAG
from sbert_exp.utils import interrupts
from sbert_exp.utils.versions import versions

log = logging.getLogger(__name__)


@contextlib.contextmanager
def call() -> Iterator[None]:
    """A job's tracking call: a Ctrl-C that came before it (even one swallowed on the way) stops
    the job here; one that comes during it waits for the store to answer (see interrupts)."""
    interrupts.check()
    with interrupts.shielded():
        yield


class Run:
    """One MLflow run; a no-op when tracking is disabled."""

    def __init__(self, client: Any, run_id: str | None) -> None:
        self._client = client
        self.run_id = run_id

    def log_params(self, params: Mapping[str, str]) -> None:
        if self.run_id is None:
            return
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        with call():
            for i in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
                self._client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        with call():
            self.write_metrics(metrics, step)

    def write_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """`log_metrics` without its Ctrl-C check, for a caller already in a shielded block
        that must write even after a Ctrl-C (a sweep's parent run, closing)."""
        if self.run_id is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self._client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if self.run_id is None:
            return
        with call():
            for key, value in tags.items():
                self._client.set_tag(self.run_id, key, value)

    def log_datasets(self, datasets: Sequence[tuple[str, str, str, str]]) -> None:
        """Log (name, digest, source, context) as the run's dataset inputs (the Dataset column):
        `source` a local path or a Hub id, `context` training, validation or evaluation.

        Each is an MLflow dataset with one of MLflow's own sources (`local` for a file,
        `hugging_face` for a Hub id, as `mlflow.log_input` logs them), so the UI shows where
        it came from and links the Hub ones.
        """
        if self.run_id is None or not datasets:
            return
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import HuggingFaceDatasetSource, LocalArtifactDatasetSource
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = []
        for name, digest, source, context in datasets:
            if digest.startswith("hub:"):
                # data.digests.split_digest names a Hub split "hub:<id>:<config name>:<split>".
                prefix = f"hub:{source}:"
                named = digest[len(prefix):].rsplit(":", 1) if digest.startswith(prefix) else []
                config_name, split = ([None if v == "None" else v for v in named]
                                      if len(named) == 2 else [None, None])
                origin = HuggingFaceDatasetSource(source, config_name=config_name, split=split)
            else:
                origin = LocalArtifactDatasetSource(source)
            # MLflow keeps at most 36 characters of a digest.
            logged = MetaDataset(origin, name=name, digest=digest[:36]).to_dict()
            inputs.append(DatasetInput(
                dataset=Dataset(name=logged["name"], digest=logged["digest"],
                                source_type=logged["source_type"], source=logged["source"]),
                tags=[InputTag("mlflow.data.context", context)]))
        with call():
            self._client.log_inputs(self.run_id, datasets=inputs)

    def log_model(self, model: Any, uri: str) -> str | None:
        """Log `model` (a SentenceTransformer) under the run with MLflow's sentence_transformers
        flavor; returns its URI, also set as the run's LOGGED_MODEL_TAG.

        MLflow logs models into the active run of its fluent API only, which ends the run
        (FINISHED) when it closes: call this last, when the run is done anyway.
        """
        if self.run_id is None:
            return None
        import mlflow
        import mlflow.sentence_transformers

        interrupts.check()  # not shielded: an upload may take minutes
        with uris.using(uri), mlflow.start_run(run_id=self.run_id):
            info = mlflow.sentence_transformers.log_model(
                model, name="model",
                # Pinned as here, instead of MLflow inferring them by loading the model in a
                # subprocess.
                pip_requirements=[f"{p}=={v}" for p, v in versions(
                    ("torch", "transformers", "sentence-transformers")).items()])
        self.set_tags({LOGGED_MODEL_TAG: info.model_uri})
        return info.model_uri

    def log_folder_model(self, folder: Path, name: str, metrics: Mapping[str, float],
                         tag: str) -> str | None:
        """Log a saved folder (an export) as a logged model of this run, its files as they are,
        with `metrics` linked to it; returns its URI (models:/<model id>), also set as the
        run's `tag`. `mlflow.artifacts.download_artifacts(uri)` gives the folder back."""
        if self.run_id is None:
            return None
        from mlflow.entities import LoggedModelStatus

        interrupts.check()  # not shielded: an upload may take minutes
        run = self._client.get_run(self.run_id)
        model = self._client.create_logged_model(
            run.info.experiment_id, name=name, source_run_id=self.run_id,
            model_type="sentence-transformers folder")
        self._client.log_model_artifacts(model.model_id, str(folder))
        self._client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        with call():
            for key, value in metrics.items():  # linked: the model's page shows them
                self._client.log_metric(self.run_id, key, float(value), model_id=model.model_id)
            self._client.set_tag(self.run_id, tag, f"models:/{model.model_id}")
        return f"models:/{model.model_id}"

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.run_id is None or not path.exists():
            return
        interrupts.check()  # not shielded: an upload may take minutes
        if path.is_dir():
            self._client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self._client.log_artifact(self.run_id, str(path), artifact_path)


def end_failed(client: Any, run_id: str, error: BaseException) -> None:
    """Mark a run FAILED with the error as a tag. Marking it may itself fail (a store gone
    away); the job's own error is what must propagate, so that failure is only logged."""
    try:
        with interrupts.shielded():
            client.set_tag(run_id, "error", f"{type(error).__name__}: {error}"[:5000])
            client.set_terminated(run_id, status="FAILED")
    except Exception as e:
        log.warning("could not mark run %s FAILED (%s: %s); the next command marks it KILLED",
                    run_id, type(e).__name__, e)
