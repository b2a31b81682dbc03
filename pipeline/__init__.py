"""The stages and everything around them: CLI, config, data, tasks, tuning, submission, MLflow."""

# The process's thread policy, first: it sets how OpenMP threads wait before torch or
# scikit-learn loads OpenMP (models/threads.py).
import models.threads  # noqa: F401
