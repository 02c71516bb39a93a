"""Training curves and results in a tracker (train.tracker): TensorBoard's event files, read back."""

import json

import pytest
from test_pipeline import ran, settings, write_inputs  # noqa: F401 (ran: a fixture)

from promptdistill import pipeline
from promptdistill.errors import UserError
from promptdistill.rundir import RunDir


def test_a_tracker_gets_every_step_s_loss_terms_and_learning_rate_and_the_results(tmp_path, tiny_model_dir, ran):  # noqa: F811
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    docs, tests = write_inputs(tmp_path)
    run = RunDir(tmp_path / "run")
    config = settings(tiny_model_dir, "methods=base,pd", "train.tracker=tensorboard", "train.distill_ce_weight=0.5",
                      "train.replay=self", "eval.retention=false")
    pipeline.prepare(run, config, docs, tests)
    pipeline.run_all(run, config)

    def scalars(folder):
        events = EventAccumulator(str(next((run.logs / folder).rglob("events.out.tfevents.*")).parent)).Reload()
        return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}

    training = scalars("train-pd")
    trained = json.loads((run.adapter_dir("pd") / "metrics.json").read_text())
    metrics, per_epoch = trained["epochs"], -(-trained["examples"] // config.train.batch_size)
    assert [step for step, _ in training["loss"]] == list(range(1, config.train.epochs * per_epoch + 1))
    assert {"loss", "learning_rate", "cross_entropy", "distillation", "replay_kl", "epoch_loss"} <= set(training)
    for (_, loss), (_, kl), (_, ce) in zip(training["loss"], training["distillation"], training["cross_entropy"]):
        assert loss == pytest.approx(kl + 0.5 * ce, rel=1e-4)  # the logged terms add up to the loss
    assert [value for _, value in training["epoch_loss"]] == pytest.approx([epoch["loss"] for epoch in metrics])
    results = scalars("results")
    report = json.loads((run.path / "report.json").read_text())
    assert results["test/pd/contains"][0][1] == pytest.approx(report["methods"]["pd"]["contains"])
    assert results["self-check/base/f1"][0][1] == pytest.approx(report["self_check"]["methods"]["base"]["f1"])


def test_a_tracker_that_is_not_installed_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    from promptdistill.train.tracking import accelerator_options

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="train.tracker=mlflow: the mlflow package is not installed; pip install mlflow"):
        accelerator_options("mlflow", tmp_path)
    assert accelerator_options("", tmp_path) == {}
