"""MLflow: the store, one run per job, tags, reading runs back, the model registry."""
