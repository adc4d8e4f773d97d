"""The names this tool gives MLflow tags and its limits on params."""

from __future__ import annotations

MAX_PARAM_CHARS = 6000  # MLflow's limit on one param value


PARENT_TAG = "mlflow.parentRunId"


SWEEP_TAG = "sbert_exp.sweep"


CONFIG_KEY_TAG = "sbert_exp.config_key"


REUSED_TAG = "sbert_exp.reused_from"


JOB_TAG = "sbert_exp.job"  # the job's number in its sweep


MODEL_DIR_TAG = "sbert_exp.model_dir"  # where the job saved its model


LOGGED_MODEL_TAG = "sbert_exp.logged_model"  # tracking.log_model=true: the logged model's URI
LOGGED_EXPORT_TAG = "sbert_exp.logged_export"  # and its export's (models:/<model id>)
LOGGED_BF16_TAG = "sbert_exp.logged_bf16"  # and its bf16 form's


# MLflow's experiment kind: model training, not GenAI (the UI's kind selector writes this tag).
# MLflow 3.17.2's UI opens every experiment in the view of the browser's GenAI / Model training
# switch (remembered per browser, default GenAI) and reads no tag for it: a link with
# ?workflowType=machine_learning (UI_TRAINING_VIEW) opens it on its training runs.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
UI_TRAINING_VIEW = "workflowType=machine_learning"


# Who runs a run: a rerun marks runs whose process is gone KILLED instead of leaving them RUNNING.
HOST_TAG, PID_TAG, PID_START_TAG = "sbert_exp.host", "sbert_exp.pid", "sbert_exp.pid_started"
SLURM_JOB_TAG = "sbert_exp.slurm_job"  # <cluster>:<job id> of a run made inside a SLURM job
