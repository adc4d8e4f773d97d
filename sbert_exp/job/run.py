"""One job: check the config, read data, load, time, prune, fine-tune in stages, evaluate, save."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from sbert_exp import references
from sbert_exp.config.schema import (
    Init,
    TrainConfig,
)
from sbert_exp.data.inputs import eval_batch_size
from sbert_exp.job.checks import Checked, check
from sbert_exp.job.reuse import config_claim, link_model, remove_partial_saves, restore
from sbert_exp.job.steps import (
    base_evaluated,
    datasets_of,
    language_teacher,
    train_and_evaluate,
)
from sbert_exp.pruning.rules import pruning_label
from sbert_exp.tracking.runs import Tracker
from sbert_exp.tracking.tags import (
    CONFIG_KEY_TAG,
    JOB_TAG,
    LOGGED_BF16_TAG,
    LOGGED_EXPORT_TAG,
    LOGGED_MODEL_TAG,
    MODEL_DIR_TAG,
    REUSED_TAG,
)
from sbert_exp.utils.atomic import write_text

log = logging.getLogger(__name__)


def run_job(cfg: TrainConfig, output_dir: Path, params: dict[str, str],
            tags: dict[str, str] | None = None, parent_run_id: str | None = None,
            job: int | None = None) -> dict[str, float]:
    """Run one pruning experiment; returns the metrics also written to output_dir/metrics.json.

    A finished run with the same fingerprint (config, device, precision, package versions,
    file contents: see `sbert_exp.job.fingerprint`) is reused instead of trained again, its
    saved model linked into this job's folder; with cfg.force only a run of this sweep
    (`parent_run_id`) is. A tracked job takes its config's lock beside the store first, so
    parallel jobs with one config train it once: the others wait, then reuse. A job
    that already finished in an earlier attempt of the same sweep (`job`, its number) only
    restores its folder.
    """
    started = time.perf_counter()
    # 1. Check the config, the model's files and every data split: cheap, and before any load.
    checked = check(cfg)
    tracker = Tracker(cfg.tracking)
    if parent_run_id is None:
        tracker.end_dead_runs()  # a sweep does this once, before its jobs
    # Jobs with one config take turns (a lock beside a SQLite store, a claim on a server), so
    # that parallel launchers and sweeps started anywhere that log there train it once.
    metrics = _run(cfg, checked, tracker, output_dir, params, tags, parent_run_id, job, started)
    if checked.references and not cfg.tracking.enabled:
        log.info("references: tracking.enabled=false, so no run would hold them: skipped")
        return metrics
    for ref in checked.references:
        _reference(cfg, checked, tracker, ref, params, parent_run_id)
    return metrics


def _run(cfg: TrainConfig, checked: Checked, tracker: Tracker, output_dir: Path,
         params: dict[str, str], tags: dict[str, str] | None, parent_run_id: str | None,
         job: int | None, started: float) -> dict[str, float]:
    kept, fp = checked.kept, checked.fingerprint
    run_name = "-".join([cfg.base_model.name, *pruning_label(
        cfg.pruning.keep, cfg.pruning.strategy, cfg.pruning.layers)])
    if cfg.base_model.init is Init.random:
        run_name += "-random"
    tags = {**(tags or {}), CONFIG_KEY_TAG: fp.key}
    if job is not None:
        tags[JOB_TAG] = str(job)
    params = {**params, **{f"fingerprint.{k}": v for k, v in fp.parts.items()}}
    if kept is not None:
        params["pruning.kept_layers"] = ",".join(map(str, kept))
    remove_partial_saves(output_dir)
    with config_claim(tracker, fp.key):
        if parent_run_id is not None and job is not None:
            done = tracker.find_finished(fp.key, parent_run_id, job)
            if done and restore(done, cfg.save_model, output_dir):
                log.info("job %d already finished in this sweep (run %s): folder restored",
                         job, done[0].run_id)
                return done[0].metrics
        if cfg.force and parent_run_id is None:
            previous = []
        else:
            previous = tracker.find_finished(fp.key, parent_run_id if cfg.force else None)
        model = output_dir / "model"
        if previous and cfg.save_model and not link_model(previous, model):
            log.info("finished run %s has no saved model left: training again",
                     previous[0].run_id)
            previous = []
        if previous:
            origin = previous[0]
            log.info("same config as finished run %s: reusing its results (force=true reruns)",
                     origin.run_id)
            reuse_tags = {**tags, REUSED_TAG: origin.run_id}
            if cfg.save_model:
                reuse_tags[MODEL_DIR_TAG] = str(model.resolve())
            # The same models: the report can register them from here.
            reuse_tags.update({tag: uri for tag, uri in ((LOGGED_MODEL_TAG, origin.logged_model),
                                                         (LOGGED_EXPORT_TAG, origin.logged_export),
                                                         (LOGGED_BF16_TAG, origin.logged_bf16))
                               if uri})
            with tracker.run(run_name, tags=reuse_tags, parent_run_id=parent_run_id) as run:
                run.log_params({"pruning.kept_layers": origin.kept_layers or "", **params})
                run.log_metrics(origin.metrics)
                write_text(output_dir / "metrics.json",
                           json.dumps(origin.metrics, indent=2, sort_keys=True))
                run.log_artifact(output_dir / "metrics.json")
            return origin.metrics
        with tracker.run(run_name, tags=tags, parent_run_id=parent_run_id) as run:
            run.log_params(params)
            run.log_datasets(datasets_of(cfg, fp))
            return train_and_evaluate(cfg, checked, output_dir, run, started)


def _reference(cfg: TrainConfig, checked: Checked, tracker: Tracker, ref: references.Reference,
               params: dict[str, str], parent_run_id: str | None) -> None:
    """One reference run of this base model in this sweep (none if the sweep has it already):
    reused from a finished run with the same key whose folder is still there, else measured."""
    key = references.key(ref, checked.fingerprint.parts, cfg)
    tags = {CONFIG_KEY_TAG: key, references.REFERENCE_TAG: ref.form}
    name = f"{cfg.base_model.name}-reference-{ref.name}"
    ref_params = {k: v for k, v in params.items() if k.startswith(("base_model.", "eval."))}
    ref_params.update({"reference.name": ref.name, "reference.form": ref.form,
                       "reference.label": ref.label(cfg.base_model.name)})
    with config_claim(tracker, key):
        if parent_run_id is not None and tracker.find_finished(key, parent_run_id):
            return
        previous = [] if cfg.force else [
            r for r in tracker.find_finished(key)
            if r.model_dir and Path(r.model_dir).exists()]
        if previous:
            log.info("reference %s: reusing finished run %s", ref.name, previous[0].run_id)
            with tracker.run(name, tags={**tags, REUSED_TAG: previous[0].run_id,
                                         MODEL_DIR_TAG: previous[0].model_dir},
                             parent_run_id=parent_run_id) as run:
                run.log_params(ref_params)
                run.log_metrics(previous[0].metrics)
            return
        bs = eval_batch_size(cfg.eval.batch_size, "cpu")
        lang_teacher = language_teacher(cfg, checked, checked.device, bs)
        base = base_evaluated(cfg, checked, bs, lang_teacher)[1]
        with tracker.run(name, tags=tags, parent_run_id=parent_run_id) as run:
            run.log_params(ref_params)
            metrics, model_dir = references.run(ref, cfg, checked, bs, lang_teacher, base)
            run.set_tags({MODEL_DIR_TAG: str(model_dir.resolve())})
            run.log_metrics(metrics)
