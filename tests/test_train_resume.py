import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import promptdistill.train.loop as loop
from promptdistill.config import TrainConfig
from promptdistill.methods import METHODS

from conftest import assert_same_adapter, give_adapter_an_effect, killed_after_epoch, make_model
from test_train_data import examples

CONFIG = TrainConfig(epochs=3, learning_rate=1e-2, batch_size=2, lora_rank=4, lora_alpha=8, lora_dropout=0.1)


def train(tokenizer, out_dir, method):
    batch = examples(tokenizer) * 3  # 6 examples, 3 batches an epoch
    return loop.train_adapter(make_model(len(tokenizer)), tokenizer.pad_token_id, batch, METHODS[method], CONFIG,
                            out_dir, seed=7)


def test_length_grouped_batches_cover_every_example_once_and_change_by_epoch():
    from promptdistill.train.data import LengthGroupedBatches

    lengths = [5, 50, 6, 51, 7, 52, 8, 53]
    batches = LengthGroupedBatches(lengths, batch_size=2, seed=1, group_batches=4)
    first = batches.batches()
    assert sorted(i for batch in first for i in batch) == list(range(8))
    assert all(abs(lengths[batch[0]] - lengths[batch[-1]]) <= 2 for batch in first)  # short with short
    assert batches.batches() == first  # the same (seed, epoch) gives the same batches
    batches.set_epoch(1)
    assert batches.batches() != first


@pytest.mark.parametrize("method", ["pd", "sft"])
def test_interrupted_training_resumes_to_the_same_adapter(tokenizer, tmp_path, monkeypatch, method):
    whole = train(tokenizer, tmp_path / "whole", method)

    with killed_after_epoch(monkeypatch, 2):
        train(tokenizer, tmp_path / "resumed", method)
    assert not (tmp_path / "resumed" / "adapter").exists()
    resumed = train(tokenizer, tmp_path / "resumed", method)

    assert [e["loss"] for e in resumed["epochs"]] == pytest.approx([e["loss"] for e in whole["epochs"]], abs=1e-6)
    assert_same_adapter(tmp_path / "whole" / "adapter", tmp_path / "resumed" / "adapter")
    assert sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir()) == ["epoch-3"]


def test_every_checkpoint_is_kept_when_asked(tokenizer, tmp_path):
    batch = examples(tokenizer) * 3
    config = dataclasses.replace(CONFIG, keep_checkpoints="all")
    loop.train_adapter(make_model(len(tokenizer)), tokenizer.pad_token_id, batch, METHODS["sft"], config, tmp_path, seed=7)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch-1", "epoch-2", "epoch-3"]


def test_a_new_adapter_replaces_the_old_one_without_deleting_it_first(tmp_path, monkeypatch):
    from promptdistill import files

    target, staging = tmp_path / "adapter", tmp_path / "adapter.tmp"
    target.mkdir()
    (target / "weights").write_text("old")
    staging.mkdir()
    (staging / "weights").write_text("new")
    real_replace = files.os.replace

    def crash_on_second_rename(source, destination):
        if Path(source) == staging:
            raise OSError("killed")
        real_replace(source, destination)

    monkeypatch.setattr(files.os, "replace", crash_on_second_rename)
    with pytest.raises(OSError):
        files.replace_folder(staging, target)
    assert sorted(path.read_text() for path in tmp_path.rglob("weights")) == ["new", "old"]  # both still on disk
    monkeypatch.setattr(files.os, "replace", real_replace)
    files.replace_folder(staging, target)
    assert (target / "weights").read_text() == "new"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["adapter"]


def test_training_lowers_the_loss(tokenizer, tmp_path):
    metrics = train(tokenizer, tmp_path / "run", "sft")
    losses = [epoch["loss"] for epoch in metrics["epochs"]]
    assert losses[-1] < losses[0]


def test_a_full_disk_mid_checkpoint_leaves_no_half_written_folder(tokenizer, tmp_path, monkeypatch):
    import errno

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(loop.torch, "save", disk_full)
    with pytest.raises(OSError):
        train(tokenizer, tmp_path / "run", "sft")
    assert sorted(path.name for path in (tmp_path / "run" / "checkpoints").iterdir()) == []
    assert not (tmp_path / "run" / "adapter").exists()


def test_training_precision_follows_the_model_dtype_and_the_setting():
    from promptdistill.config import ModelConfig
    from promptdistill.models import training_precision

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    bf16, fp32 = ModelConfig(dtype="bfloat16"), ModelConfig(dtype="float32")
    assert training_precision(bf16, "auto", cpu) == (torch.float32, "bf16")  # weights cast per product
    assert training_precision(bf16, "auto", gpu) == (torch.bfloat16, "bf16")
    assert training_precision(bf16, "none", cpu) == (torch.bfloat16, "none")
    assert training_precision(fp32, "auto", cpu) == (torch.float32, "none")
    assert training_precision(fp32, "bf16", cpu) == (torch.float32, "bf16")


def test_bfloat16_autocast_trains_float32_adapters_close_to_float32_training(tokenizer, tmp_path):
    """Under autocast the products run in bfloat16 (losses differ at bfloat16 rounding, not
    more), the adapter stays float32, and one process can train in either precision in turn."""
    config = dataclasses.replace(CONFIG, lora_dropout=0.0)
    runs = {}
    for number, precision in enumerate(("bf16", "none", "bf16")):
        out = tmp_path / f"{number}-{precision}"
        metrics = loop.train_adapter(make_model(len(tokenizer)), tokenizer.pad_token_id, examples(tokenizer) * 3,
                                     METHODS["pd"], config, out, seed=7, mixed_precision=precision)
        runs.setdefault(precision, []).append(([epoch["loss"] for epoch in metrics["epochs"]],
                                               load_file(out / "adapter" / "adapter_model.safetensors")))
    assert runs["bf16"][0][0] == runs["bf16"][1][0]  # the same again after a float32 run
    (mixed_losses, mixed), (plain_losses, plain) = runs["bf16"][0], runs["none"][0]
    assert mixed_losses != plain_losses and mixed_losses == pytest.approx(plain_losses, rel=0.05)
    assert {tensor.dtype for tensor in mixed.values()} == {torch.float32}
    assert max((mixed[key] - plain[key]).abs().max().item() for key in plain) < 0.05


@pytest.mark.parametrize("method", ["sft", "pd"])
def test_casting_the_frozen_weights_to_bfloat16_trains_the_very_adapter_autocast_trains(tokenizer, tmp_path, method,
                                                                                       monkeypatch):
    """Autocast reads every frozen linear weight in bfloat16 anyway: cast once (models.cast_frozen_linears),
    training ends with the same adapter, bit for bit, as with the weights cast at every use."""
    config = dataclasses.replace(CONFIG, lora_dropout=0.0)
    runs, models = [], []
    for number, cast in enumerate((True, False)):
        if not cast:
            monkeypatch.setattr(loop, "cast_frozen_linears", lambda model, dtype: None)
        models.append(make_model(len(tokenizer)))
        loop.train_adapter(models[-1], tokenizer.pad_token_id, examples(tokenizer) * 3, METHODS[method], config,
                           tmp_path / str(number), seed=7, mixed_precision="bf16")
        runs.append(load_file(tmp_path / str(number) / "adapter" / "adapter_model.safetensors"))
    cast, plain = runs
    assert cast.keys() == plain.keys() and all(torch.equal(cast[key], plain[key]) for key in plain)
    assert max(tensor.abs().max().item() for tensor in plain.values()) > 1e-3  # it did train
    layers = models[0].model.layers[0]
    assert layers.self_attn.q_proj.weight.dtype == layers.mlp.down_proj.weight.dtype == torch.bfloat16
    assert models[0].get_input_embeddings().weight.dtype == torch.float32  # tied to the output layer: left alone
    assert models[1].model.layers[0].self_attn.q_proj.weight.dtype == torch.float32


def test_products_that_read_one_input_share_one_bfloat16_copy_and_the_same_gradients(tokenizer):
    """models.share_input_casts: q, k and v (and the MLP's gate and up) read one bfloat16 copy of
    their input instead of a copy each, frozen product and adapter alike; every gradient is the
    one autocast's own casts give, bit for bit, and the backward pass keeps 3 copies fewer per
    layer (2 of the attention's input, 1 of the MLP's)."""
    from promptdistill.models import add_lora, cast_frozen_linears, share_input_casts

    ids = torch.randint(4, len(tokenizer), (2, 8), generator=torch.Generator().manual_seed(0))
    results = []
    for shared in (False, True):
        student = add_lora(make_model(len(tokenizer)), dataclasses.replace(CONFIG, lora_dropout=0.0))
        cast_frozen_linears(student, torch.bfloat16)
        if shared:
            share_input_casts(student, torch.bfloat16)
        give_adapter_an_effect(student, std=1.0, seed=1)
        kept = {}

        def keep(tensor):
            kept[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor), \
                torch.autocast("cpu", dtype=torch.bfloat16):
            loss = student(input_ids=ids).logits.float().logsumexp(-1).mean()
        loss.backward()
        results.append((loss.item(), {name: parameter.grad for name, parameter in student.named_parameters()
                                      if parameter.requires_grad}, sum(kept.values())))
    (own_loss, own_grads, own_bytes), (shared_loss, shared_grads, shared_bytes) = results
    assert shared_loss == own_loss
    assert own_grads.keys() == shared_grads.keys() and len(own_grads) == 2 * 2 * 7  # 2 layers, 7 adapted products
    assert all(torch.equal(own_grads[name], shared_grads[name]) for name in own_grads)
    assert all(grad.abs().max() > 0 for grad in own_grads.values())
    copy = ids.numel() * 32 * 2  # rows x tokens x hidden size x 2 bytes
    assert own_bytes - shared_bytes == 2 * 3 * copy


@pytest.mark.parametrize("method, reduction", [("sft", "token"), ("pd", "sequence"), ("uft", "token")])
def test_a_batch_run_in_parts_trains_the_same_adapter_as_run_whole(tokenizer, tmp_path, method, reduction):
    """train.max_batch_tokens cuts a batch of 4 rows into parts of one row: the parts' gradients
    add up to the whole batch's, so every epoch's loss and the adapter are those of the whole run."""
    config = dataclasses.replace(CONFIG, batch_size=4, lora_dropout=0.0, loss_reduction=reduction)
    runs = []
    for max_batch_tokens in (0, 1):
        out = tmp_path / f"{max_batch_tokens}"
        metrics = loop.train_adapter(make_model(len(tokenizer)), tokenizer.pad_token_id, examples(tokenizer) * 4,
                                     METHODS[method], dataclasses.replace(config, max_batch_tokens=max_batch_tokens),
                                     out, seed=7)
        runs.append(([epoch["loss"] for epoch in metrics["epochs"]],
                     load_file(out / "adapter" / "adapter_model.safetensors")))
    (whole_losses, whole), (parts_losses, parts) = runs
    assert parts_losses == pytest.approx(whole_losses, rel=1e-5, abs=1e-7)  # pd: KL of near-equal models
    assert max((parts[key] - whole[key]).abs().max().item() for key in whole) < 1e-5
    assert max(tensor.abs().max().item() for tensor in whole.values()) > 1e-3  # it did train


def test_micro_batches_cut_rows_by_tokens_past_the_shared_prefix_and_weigh_them_by_the_reduction():
    answer_mask = torch.tensor([[0, 1, 1], [1, 1, 1], [0, 0, 1]], dtype=torch.bool)
    batch = {"student_input_ids": torch.zeros(3, 10, dtype=torch.long), "student_shared": 4,
             "answer_mask": answer_mask, "answer_ids": torch.ones(3, 3, dtype=torch.long)}
    assert loop.micro_batches(batch, 0, "token") == [(batch, 1.0)]
    assert loop.micro_batches(batch, 18, "token") == [(batch, 1.0)]  # 3 rows x 6 tokens past the prefix
    parts = loop.micro_batches(batch, 12, "token")  # 2 rows a part
    assert [part["answer_mask"].tolist() for part, _ in parts] == [answer_mask[:2].tolist(), answer_mask[2:].tolist()]
    assert [share for _, share in parts] == [5 / 6, 1 / 6]  # answer tokens
    assert all(part["student_shared"] == 4 for part, _ in parts)
    assert [share for _, share in loop.micro_batches(batch, 12, "sequence")] == [2 / 3, 1 / 3]  # answers
    assert len(loop.micro_batches(batch, 1, "token")) == 3  # never fewer than one row
