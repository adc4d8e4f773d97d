"""Training and evaluation: the fine-tuning stages, the distillation teacher, the evaluators."""
