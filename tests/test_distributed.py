"""Training on two processes (`accelerate launch`, DDP over gloo on the CPU) against one process
with the same global batch: the same adapter within float tolerance, one set of files."""

import json
import os
import shutil
import socket
import subprocess
import sys
from functools import partial

import pytest
import torch
from safetensors.torch import load_file

from promptdistill import pipeline, retention
from promptdistill.files import read_jsonl, write_jsonl
from promptdistill.methods import METHODS
from promptdistill.rundir import RunDir

from test_pipeline import scripted_backend, settings, write_inputs


def promptdistill(*arguments: str, processes: int = 1) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "promptdistill"]
    if processes > 1:
        with socket.socket() as probe:  # a free port for the processes to meet on, not the default 29500
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                    "--main_process_port", str(port), "-m", "promptdistill"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "300"}  # log lines unwrapped
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        environment.pop(name, None)
    return subprocess.run([*launcher, *arguments], capture_output=True, text=True, env=environment, timeout=600)


@pytest.fixture
def answered(tmp_path, tiny_model_dir, monkeypatch):
    """A run with questions, answers and replay replies written (by the scripted expert): what
    `promptdistill train` reads. pd's teacher is online, so DDP runs the adapter-off forward.
    In float32: bfloat16 products round differently for other batch shapes, and training carries
    that beyond the tolerance."""
    monkeypatch.setattr(pipeline, "make_backend", scripted_backend)
    docs, tests = write_inputs(tmp_path)
    config = settings(tiny_model_dir, "methods=sft,pd", "model.dtype=float32", "train.teacher=online",
                      "train.lora_dropout=0",
                      "train.batch_size=4", "train.loss_reduction=sequence", "synth.questions_per_passage=4",
                      "train.replay=self", "train.replay_weight=0.5", "train.keep_checkpoints=all")
    run = RunDir(tmp_path / "one")
    pipeline.prepare(run, config, docs, tests)
    pipeline.questions(run, config)
    for name in ("sft", "pd"):
        pipeline.answers(run, config, METHODS[name])
    # Questions that open alike, so the student's rows share a prefix that each process reads once
    # for its own rows (a second forward through the DDP wrapper before the backward).
    opening = "velmora was founded in 1623 by tobin quarrel . " * 2
    write_jsonl(run.questions, [{**question, "question": opening + question["question"]}
                                for question in read_jsonl(run.questions)])
    retention.replay_replies(run, config, partial(pipeline.generation_backend, config))
    shutil.copytree(run.path, tmp_path / "two")
    return run, RunDir(tmp_path / "two")


def test_two_processes_train_the_adapter_one_process_trains(answered):
    one, two = answered
    single = promptdistill("train", str(one.path))
    assert single.returncode == 0, single.stderr[-3000:]
    # ...in parts of one row each: DDP syncs the gradients once, after the last part.
    launched = promptdistill("train", str(two.path), "--set", "train.max_batch_tokens=1", processes=2)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert two.load_config().train.max_batch_tokens == 1

    for name in ("sft", "pd"):
        expected = load_file(one.adapter(name) / "adapter_model.safetensors")
        actual = load_file(two.adapter(name) / "adapter_model.safetensors")
        assert expected.keys() == actual.keys()
        assert any(tensor.abs().sum() > 0 for key, tensor in expected.items() if "lora_B" in key)  # it trained
        for key in expected:
            torch.testing.assert_close(actual[key], expected[key], atol=1e-4, rtol=1e-3)
        losses = [[epoch[value] for value in ("loss", "replay_kl")
                   for epoch in json.loads((run.adapter_dir(name) / "metrics.json").read_text())["epochs"]]
                  for run in (one, two)]
        assert losses[1] == pytest.approx(losses[0], rel=1e-3)
        manifests = [json.loads(run.manifest(f"train-{name}").read_text()) for run in (one, two)]
        assert manifests[0]["key"] == manifests[1]["key"]
    assert launched.stderr.count("train-pd: running") == 1  # the main process alone reports
    assert "pd: 2 processes (MULTI_CPU), each takes 1/2 of every batch of 4" in launched.stderr

    rerun = promptdistill("train", str(two.path), processes=2)  # both processes find the stages done
    assert rerun.returncode == 0 and rerun.stderr.count("done, skipping") >= 2, rerun.stderr[-3000:]

    # As if stopped after epoch 1 of 2: the two processes resume from its checkpoint, to the same adapter.
    finished = load_file(two.adapter("pd") / "adapter_model.safetensors")
    for leftover in (two.adapter("pd"), two.adapter_dir("pd") / "checkpoints" / "epoch-2"):
        shutil.rmtree(leftover)
    resumed = promptdistill("train", str(two.path), "--method", "pd", processes=2)
    assert resumed.returncode == 0 and "pd: resuming after epoch 1" in resumed.stderr, resumed.stderr[-3000:]
    for key, tensor in load_file(two.adapter("pd") / "adapter_model.safetensors").items():
        torch.testing.assert_close(tensor, finished[key], atol=1e-6, rtol=1e-5)


def test_only_training_runs_on_several_processes(answered):
    _, two = answered
    launched = promptdistill("evaluate", str(two.path), processes=2)
    assert launched.returncode != 0
    assert "only `promptdistill train` runs on several processes (2 were launched)" in launched.stderr


def test_sharded_training_is_refused_in_one_line(tokenizer, tmp_path, monkeypatch):
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    import promptdistill.train.loop as loop
    from promptdistill.config import TrainConfig
    from promptdistill.errors import UserError

    from conftest import make_model
    from test_train_data import examples

    class FullyShardedAccelerator(Accelerator):  # what `accelerate launch --use_fsdp` would give on GPUs
        distributed_type = DistributedType.FSDP

    monkeypatch.setattr(loop, "Accelerator", FullyShardedAccelerator)
    with pytest.raises(UserError, match="training under FSDP is not supported: .*launch with DDP"):
        loop.train_adapter(make_model(len(tokenizer)), tokenizer.pad_token_id, examples(tokenizer), METHODS["sft"],
                           TrainConfig(epochs=1), tmp_path / "out", seed=0)
