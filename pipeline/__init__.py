"""Stages and orchestration: CLI, config, ingest, validation, k-fold, tuning, submission, MLflow."""
