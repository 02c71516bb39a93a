"""The training loop: one LoRA adapter, one method, top to bottom.

    distillation (pd): a divergence (train.divergence, forward KL by default) between teacher and
         student at T = train.distill_temperature over the answer tokens; the teacher is the same
         model with the adapter off and the passage in its prompt, read from the teacher cache
         (top-k + tail) or recomputed online (train.teacher). train.distill_ce_weight adds
         cross-entropy on the answer tokens themselves; train.hidden_state_weight (online teacher
         only) adds the distance between the two models' hidden states at every layer.
         With train.on_policy_share a share of each batch's rows are the student's own answers
         to their questions, sampled with its adapter on (on_policy.py), scored by the online
         teacher and without the cross-entropy term; the rest are the expert's, as before
         (train.on_policy_mix=add: every row is the expert's, and the student's come on top).
    cross-entropy on answers (sft), or on the passages themselves (uft: every token but the
         first is an "answer").
    replay (train.replay=self, any method): each step adds a few of the base model's own replies
         to everyday prompts, with KL(base || student) at T=1 on their tokens, weighted by
         train.replay_weight: it pulls what the documents did not ask for back to the base model.
         train.replay=open-book replays the method's own answers with their passage in the prompt
         instead, so that the student still reads a passage as the base model does (pd+rag).

Batches group rows of similar length (train/data.py: LengthGroupedBatches).

Accelerate places the model and data (CPU, one GPU, or DDP with `accelerate launch`; under DDP
each process takes its share of every batch, so N processes take the same steps as one). After each
epoch the main process writes a checkpoint (adapter, optimizer, scheduler, RNG) to OUT/checkpoints/epoch-N;
a rerun resumes from the last one and ends with the same adapter as an uninterrupted run, because
each epoch's shuffle comes from (seed, epoch) alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.data_loader import prepare_data_loader
from accelerate.utils import DataLoaderConfiguration, DistributedType, send_to_device, set_seed
from peft import set_peft_model_state_dict
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from promptdistill.config import TrainConfig
from promptdistill.errors import UserError
from promptdistill.files import folder_in_place, process_count, write_atomic
from promptdistill.methods import Method, Training
from promptdistill.models import add_lora, answer_logits, answer_outputs, cast_frozen_linears, share_input_casts
from promptdistill.teacher import TeacherCache, online_teacher
from promptdistill.train.data import Collator, Example, LengthGroupedBatches, ReplayRows
from promptdistill.train.on_policy import AnswersAhead, on_policy_rows, student_answers
from promptdistill.train.losses import (cross_entropy, distill_loss, hidden_state_distance, in_chunks,
                                       support_distill_loss, token_weights, top_k_distill_loss)
from promptdistill.train.tracking import accelerator_options

log = logging.getLogger(__name__)


def batch_loss(training: Training, student, batch: dict[str, torch.Tensor], config: TrainConfig,
               peft_model=None, terms: dict[str, float] | None = None) -> torch.Tensor:
    """The loss of one batch, over the answer tokens only. `student` may be a DDP or FSDP wrapper
    around `peft_model`, where the online teacher switches the adapter off. With `terms` (a tracker
    logs them), distillation's terms go in it: the divergence, the answers' cross-entropy (whatever
    its weight in the loss), and the hidden-state distance where it is trained on."""
    mask = batch["answer_mask"]
    hidden = training is Training.ANSWERS_DISTILL and config.hidden_state_weight > 0
    student_logits, student_states = answer_outputs(
        student, batch["student_input_ids"], batch["student_attention_mask"], mask.shape[1], batch["student_shared"],
        hidden_states=hidden,
    )
    targets = [batch["answer_ids"][mask]]
    if training is Training.ANSWERS_DISTILL:
        if "teacher_token_ids" in batch:
            targets += [batch[key][mask] for key in ("teacher_token_ids", "teacher_logprobs", "teacher_tail_mass")]
        else:
            teacher_logits, teacher_states = online_teacher(peft_model or student, batch, wrapped=student,
                                                            hidden_states=hidden)
            targets.append(teacher_logits[mask])
    weights = token_weights(mask, config.loss_reduction)
    loss = in_chunks(partial(token_loss, training, config), student_logits[mask], targets, weights)
    distance = hidden_state_distance(student_states[:, mask], teacher_states[:, mask], weights) if hidden else None
    if distance is not None:
        loss = loss + config.hidden_state_weight * distance
    if terms is not None and training is Training.ANSWERS_DISTILL:
        with torch.no_grad():
            answers = in_chunks(partial(token_loss, Training.ANSWERS_CE, config), student_logits[mask].detach(),
                                targets[:1], weights).item()
        terms["cross_entropy"] = answers
        terms["distillation"] = loss.item() - config.distill_ce_weight * answers
        if distance is not None:
            terms["hidden_states"] = distance.item()
            terms["distillation"] -= config.hidden_state_weight * distance.item()
    return loss


def token_loss(training: Training, config: TrainConfig, student_logits: torch.Tensor, answer_ids: torch.Tensor,
               *teacher: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The weighted loss of some answer tokens: cross-entropy, or the divergence from the teacher
    (cached: its top-k ids, log-probabilities and tail mass; online: its logits, over the whole
    vocabulary or train.online_top_k tokens) plus
    train.distill_ce_weight x cross-entropy."""
    if training in (Training.ANSWERS_CE, Training.PASSAGES):
        return cross_entropy(student_logits, answer_ids, weights)
    if len(teacher) == 3:
        loss = top_k_distill_loss(student_logits, *teacher, config.distill_temperature, config.divergence,
                                  config.jsd_beta, weights)
    elif config.online_top_k:
        loss = support_distill_loss(student_logits, teacher[0], config.distill_temperature, config.online_top_k,
                                    config.online_support, config.divergence, config.jsd_beta, weights)
    else:
        loss = distill_loss(student_logits, teacher[0], config.distill_temperature, config.divergence,
                            config.jsd_beta, weights)
    if config.distill_ce_weight:
        loss = loss + config.distill_ce_weight * cross_entropy(student_logits, answer_ids, weights)
    return loss


def counted_units(batch: dict, reduction: str) -> torch.Tensor:
    """What a batch's loss averages over (train.loss_reduction): its answer tokens [B, A], or its rows [B]."""
    return batch["answer_mask"] if reduction == "token" else batch["answer_mask"].any(dim=1)


def micro_batches(batch: dict, max_tokens: int, reduction: str) -> list[tuple[dict, float]]:
    """`batch` cut into runs of rows of at most `max_tokens` student tokens each (rows x width past
    the shared prefix; one row at least), each with its share of the batch's loss: the parts'
    losses times their shares sum to the whole batch's, so their gradients do too, for less
    memory (a batch of 384-token passages holds several GB of activations). 0: no cut."""
    rows, width = batch["student_input_ids"].shape
    per_part = max(1, max_tokens // max(1, width - batch["student_shared"])) if max_tokens else rows
    if per_part >= rows:
        return [(batch, 1.0)]
    counted = counted_units(batch, reduction)
    total = counted.sum().item()
    parts = []
    for start in range(0, rows, per_part):
        part = {key: value[start:start + per_part] if torch.is_tensor(value) else value for key, value in batch.items()}
        parts.append((part, counted[start:start + per_part].sum().item() / total))
    return parts


def weighted_parts(batches: list[tuple[dict, TrainConfig]], max_tokens: int,
                   reduction: str) -> list[tuple[dict, float, TrainConfig]]:
    """Each batch's micro_batches with its share of the step's loss, and the config its loss
    reads: the expert's answers and the student's own (on-policy) together weigh as one batch."""
    units = [counted_units(batch, reduction).sum().item() for batch, _ in batches]
    return [(part, share * count / sum(units), part_config) for (batch, part_config), count in zip(batches, units)
            for part, share in micro_batches(batch, max_tokens, reduction)]


def replay_loss(student, batch: dict[str, torch.Tensor], peft_model=None) -> torch.Tensor:
    """KL(base || student) at T=1 over the tokens of the base model's own replies."""
    mask = batch["answer_mask"]
    student_logits = answer_logits(
        student, batch["student_input_ids"], batch["student_attention_mask"], mask.shape[1], batch["student_shared"]
    )[mask]
    base_logits = online_teacher(peft_model or student, batch, wrapped=student)[0][mask]
    return distill_loss(student_logits, base_logits, 1.0)


def cpu_processes() -> bool:
    """Several processes on a machine without CUDA (started by `accelerate launch --multi_gpu` or
    torchrun) train on the CPU over gloo: Accelerate does so only when told `cpu`."""
    return process_count() > 1 and not torch.cuda.is_available()


def process_state() -> PartialState:
    """Accelerate's view of this process among those training together."""
    return PartialState(cpu=cpu_processes())


def train_adapter(model, pad_id: int, examples: list[Example], method: Method, config: TrainConfig,
                  out_dir: Path, seed: int, teacher_cache: TeacherCache | None = None, resume_key: str = "",
                  replay_examples: list[Example] | None = None, mixed_precision: str = "none",
                  logs: Path | None = None, initial_adapter: Path | None = None) -> dict:
    """Train a LoRA adapter on `examples`; write OUT/adapter and OUT/metrics.json; return metrics.

    Distillation reads its teacher from `teacher_cache` when given, else computes it online.
    With `replay_examples` (train.data.reply_examples), every step adds the replay term on
    max(1, round(batch_size * train.replay_ratio)) of them.
    Checkpoints in OUT are resumed from only if they were written under the same `resume_key`
    (the training stage's key: same settings and inputs); otherwise they are removed. The adapter
    already in OUT stays until the new one replaces it: with `initial_adapter` (an update,
    update.py) training starts from that adapter's weights instead of a fresh LoRA.
    With `mixed_precision` "bf16" (models.training_precision chooses it) the forward passes run
    under bfloat16 autocast; the adapter, optimizer and losses stay float32, the adapted
    layers' frozen weights of `model` are cast to bfloat16 in place, and the products that read
    one input share one bfloat16 copy of it (models.share_input_casts). Autocast here, not
    Accelerate's mixed_precision, which is fixed for the life of a process.
    """
    out_dir = Path(out_dir)
    # split_batches: train.batch_size is the global batch, which LengthGroupedBatches splits over
    # the processes; Accelerate then steps the scheduler once per optimizer step.
    accelerator = Accelerator(gradient_accumulation_steps=config.gradient_accumulation_steps,
                              dataloader_config=DataLoaderConfiguration(split_batches=True),
                              cpu=cpu_processes(), **accelerator_options(config.tracker, logs) if logs else {})
    if accelerator.distributed_type not in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU):
        raise UserError(f"training under {accelerator.distributed_type.value} is not supported: checkpoints and the "
                        "adapter are saved unsharded; launch with DDP (accelerate launch --multi_gpu)")
    if accelerator.is_main_process:
        key_file = out_dir / "resume_key"
        if not key_file.is_file() or key_file.read_text() != resume_key:
            shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(key_file, resume_key)  # replaced, not written in place: it may be a link (compare.py)
    accelerator.wait_for_everyone()
    set_seed(seed)
    if accelerator.device.type == "cpu":  # its backward beats SDPA's on a CPU, most under autocast (docs/speed.md)
        model.set_attn_implementation("eager")
    student = add_lora(model, config)
    if initial_adapter is not None:
        set_peft_model_state_dict(student, load_file(initial_adapter / "adapter_model.safetensors"))
    if mixed_precision == "bf16":
        cast_frozen_linears(student, torch.bfloat16)
        share_input_casts(student, torch.bfloat16)
    student.train()

    batches = LengthGroupedBatches([example.length for example in examples], config.batch_size, seed,
                                   process_index=accelerator.process_index, num_processes=accelerator.num_processes)
    # Not sharded again by Accelerate (num_processes=1): every process walks the same batches, and
    # the loader's end still closes a gradient-accumulation cycle. It yields each batch's examples,
    # of which on-policy training (on_policy.py) answers some itself before they are collated.
    loader = prepare_data_loader(DataLoader(examples, batch_sampler=batches, collate_fn=list), accelerator.device,
                                 num_processes=1, process_index=0, put_on_device=False)
    collate, on_policy_collate = Collator(pad_id, teacher_cache), Collator(pad_id)
    on_policy_share = config.on_policy_share if method.training is Training.ANSWERS_DISTILL else 0.0
    on_policy_config = dataclasses.replace(config, distill_ce_weight=0.0)  # no cross-entropy on its own samples
    replay = None
    if replay_examples:
        replay = ReplayRows(replay_examples, max(1, round(config.batch_size * config.replay_ratio)), seed,
                            Collator(pad_id))
    optimizer = torch.optim.AdamW(
        [p for p in student.parameters() if p.requires_grad],
        lr=config.learning_rate, weight_decay=config.weight_decay,
    )
    steps_per_epoch = math.ceil(len(loader) / config.gradient_accumulation_steps)
    total_steps = steps_per_epoch * config.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, round(config.warmup_ratio * total_steps), total_steps)
    student, optimizer, scheduler = accelerator.prepare(student, optimizer, scheduler)
    peft_model = accelerator.unwrap_model(student)  # the same modules; student may be a DDP wrapper
    own_answers = AnswersAhead(examples, on_policy_share, config.on_policy_ahead, partial(
        student_answers, peft_model, pad_id=pad_id, temperature=config.on_policy_temperature,
        max_tokens=config.on_policy_max_tokens))
    if accelerator.num_processes > 1:
        log.info("%s: %d processes (%s), each takes 1/%d of every batch of %d", method.name, accelerator.num_processes,
                 accelerator.distributed_type.value, accelerator.num_processes, config.batch_size)

    autocast = torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=mixed_precision == "bf16")
    history: list[dict] = []
    start_epoch = 0
    last = last_checkpoint(out_dir)
    if last is not None:
        start_epoch, history = resume(peft_model, optimizer, scheduler, last)
        log.info("%s: resuming after epoch %d from %s", method.name, start_epoch, last)
    tracked = bool(logs and config.tracker)
    if tracked:
        accelerator.init_trackers(f"train-{method.name}", config={key: value for key, value in vars(config).items()
                                                                  if isinstance(value, (int, float, str, bool))})
    step = start_epoch * steps_per_epoch

    for epoch in range(start_epoch, config.epochs):
        loader.set_epoch(epoch)
        own_answers.start_epoch(list(batches) if on_policy_share else [])
        epoch_started = time.time()
        total_loss, total_replay, batch_number, sampling_seconds = 0.0, 0.0, 0, 0.0
        for rows in tqdm(loader, desc=f"{method.name} epoch {epoch + 1}/{config.epochs}", leave=False,
                          disable=not accelerator.is_local_main_process):
            with accelerator.accumulate(student):
                sampled = on_policy_rows(len(rows), on_policy_share)
                expert_rows = rows if config.on_policy_mix == "add" else rows[sampled:]
                both = [(send_to_device(collate(expert_rows), accelerator.device), config)] if expert_rows else []
                if sampled:
                    started = time.time()
                    with autocast:
                        answered = own_answers.for_batch(batch_number, rows[:sampled])
                    sampling_seconds += time.time() - started
                    both.append((send_to_device(on_policy_collate(answered), accelerator.device), on_policy_config))
                parts = weighted_parts(both, config.max_batch_tokens, config.loss_reduction)
                batch_total = torch.zeros((), device=accelerator.device)
                terms: dict[str, float] = {"on_policy_rows": sampled} if sampled else {}
                for number, (part, share, part_config) in enumerate(parts):
                    last = number == len(parts) - 1
                    part_terms: dict[str, float] | None = {} if tracked else None
                    with nullcontext() if last else accelerator.no_sync(student):  # DDP syncs once, at the last
                        with autocast:
                            loss = share * batch_loss(method.training, student, part, part_config, peft_model,
                                                      part_terms)
                            if replay is not None and last:
                                replayed = replay_loss(student, send_to_device(replay.batch(epoch, batch_number),
                                                                               accelerator.device), peft_model)
                        batch_total += loss.detach()
                        for name, value in (part_terms or {}).items():
                            terms[name] = terms.get(name, 0.0) + share * value
                        if replay is not None and last:
                            total_replay += replayed.item()  # every process replays the same rows
                            terms["replay_kl"] = replayed.item()
                            loss = loss + config.replay_weight * replayed
                        accelerator.backward(loss)
                batch_loss_value = accelerator.reduce(batch_total, "mean").item()  # the global batch's loss
                total_loss += batch_loss_value
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(student.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                if accelerator.sync_gradients and tracked:
                    step += 1
                    accelerator.log({"loss": batch_loss_value, "learning_rate": scheduler.get_last_lr()[0], **terms},
                                    step=step)
            batch_number += 1
        history.append({"epoch": epoch + 1, "loss": total_loss / batch_number, "lr": scheduler.get_last_lr()[0],
                        "seconds": round(time.time() - epoch_started, 2)})
        if replay is not None:
            history[-1]["replay_kl"] = total_replay / batch_number
        if on_policy_share:
            history[-1]["sampling_seconds"] = round(sampling_seconds, 2)
        log.info("%s epoch %d/%d  loss %.4f", method.name, epoch + 1, config.epochs, history[-1]["loss"])
        if tracked:
            accelerator.log({f"epoch_{name}": value for name, value in history[-1].items() if name != "epoch"},
                            step=step)
        if accelerator.is_main_process:
            save_checkpoint(peft_model, optimizer, scheduler, history, out_dir, epoch + 1,
                            keep_earlier=config.keep_checkpoints == "all")
        accelerator.wait_for_everyone()

    metrics = {"method": method.name, "examples": len(examples), "epochs": history}
    if accelerator.is_main_process:
        with folder_in_place(out_dir / "adapter") as staging:  # frozen base weights stay out of it
            peft_model.save_pretrained(staging, save_embedding_layers=False)
        write_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    accelerator.wait_for_everyone()  # the other processes go on only once the adapter is written
    if tracked:
        accelerator.end_training()
    peft_model.eval()
    return metrics


def save_checkpoint(student, optimizer, scheduler, history: list[dict], out_dir: Path, epoch: int,
                    keep_earlier: bool = False) -> None:
    """Write OUT/checkpoints/epoch-N atomically: a half-written checkpoint is never resumed from.
    Earlier epochs' checkpoints are removed once it is in place, unless `keep_earlier`."""
    target = out_dir / "checkpoints" / f"epoch-{epoch}"
    with folder_in_place(target) as staging:
        student.save_pretrained(staging, save_embedding_layers=False)
        torch.save(
            {"epoch": epoch, "history": history, "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
             # LoRA dropout on a GPU draws from the CUDA generators: without them a resumed run differs.
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            staging / "training_state.pt",
        )
    if not keep_earlier:
        for earlier in checkpoints(out_dir):
            if earlier != target:
                shutil.rmtree(earlier)


def checkpoints(out_dir: Path) -> list[Path]:
    found = [path for path in (out_dir / "checkpoints").glob("epoch-*") if path.name[6:].isdigit()]
    return sorted(found, key=lambda path: int(path.name[6:]))


def last_checkpoint(out_dir: Path) -> Path | None:
    return (checkpoints(out_dir) or [None])[-1]


def resume(student, optimizer, scheduler, checkpoint: Path) -> tuple[int, list[dict]]:
    set_peft_model_state_dict(student, load_file(checkpoint / "adapter_model.safetensors"))
    state = torch.load(checkpoint / "training_state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["epoch"], state["history"]
