"""Training curves in the tracker people use (train.tracker), through Accelerate's trackers.

    tensorboard   event files in RUN/logs/ (`tensorboard --logdir RUN/logs`)
    trackio       a local trackio database in RUN/logs/trackio (`TRACKIO_DIR=RUN/logs/trackio trackio show`)
    wandb         Weights & Biases, offline, in RUN/logs/wandb (`wandb sync` sends it)
    mlflow        an MLflow store in RUN/logs/mlruns (`mlflow ui --backend-store-uri RUN/logs/mlruns`)

Training logs, at each optimizer step, the loss and its terms (pd: distillation and
cross-entropy; replay) and the learning rate, and each epoch's mean loss, as the run TRAIN-METHOD;
after the report, every method's results are logged as the run "results". The tracker's own
environment variables (WANDB_MODE, MLFLOW_TRACKING_URI, TRACKIO_DIR) take precedence, so nothing
leaves the machine unless they say so.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from promptdistill.errors import UserError

def accelerator_options(tracker: str, logs: Path) -> dict:
    """Accelerator(**these): the tracker, its files in `logs`, offline unless its environment says."""
    if not tracker:
        return {}
    if importlib.util.find_spec(tracker) is None:  # each tracker's package is named as the tracker
        raise UserError(f"train.tracker={tracker}: the {tracker} package is not installed; pip install {tracker}")
    logs.mkdir(parents=True, exist_ok=True)
    for variable, value in (("WANDB_MODE", "offline"), ("WANDB_DIR", str(logs)),
                            ("MLFLOW_TRACKING_URI", (logs / "mlruns").resolve().as_uri()),
                            ("TRACKIO_DIR", str(logs / "trackio"))):
        os.environ.setdefault(variable, value)
    return {"log_with": tracker, "project_dir": str(logs)}


def flat(values: dict, prefix: str = "") -> dict:
    """A nested dict of results as "a/b/c": number, the numbers alone (trackers log scalars)."""
    found = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            found.update(flat(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found[name] = value
    return found


def log_results(tracker: str, logs: Path, results: dict) -> None:
    """The report's results ({"test": {method: scores}, "self-check": ...}: accuracy, retention,
    drift) as scalars "test/pd/contains", logged once as the run "results"."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True, **accelerator_options(tracker, logs))
    accelerator.init_trackers("results")
    accelerator.log(flat(results), step=0)
    accelerator.end_training()
