"""The teacher signal: the student's own weights with the adapter switched off and the passage in
the prompt.

Two ways to get it:
  online  recomputed at every step over the full vocabulary (the paper's way); the teacher reads
          the whole passage again for every question in every epoch.
  cached  one pass before training stores, for each answer token, the teacher's top-k token ids
          and log-probabilities at the distillation temperature plus the probability mass left
          over (the tail), in safetensors shards under RUN_DIR/teacher/. The pass computes each
          passage's prefix once (KV cache) and reuses it for all questions about that passage.

The cache format knows nothing of how it was filled: any backend that can return the teacher's
top-k log-probabilities of given answer tokens (vLLM's prompt log-probabilities, for one) can
write the same shards with `write_teacher_cache`.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from promptdistill.errors import UserError
from promptdistill.files import write_atomic
from promptdistill.generation.core import side_by_side
from promptdistill.models import answer_outputs

log = logging.getLogger(__name__)

SHARD_TOKENS = 1 << 20  # answer tokens per shard file


@torch.no_grad()
def online_teacher(peft_model, batch: dict[str, torch.Tensor], wrapped=None,
                   hidden_states: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Teacher logits [B, A, V] at the answer positions of the open-book sequences, and with
    `hidden_states` its layers' outputs there [L, B, A, D] (else None).

    Under DDP or FSDP the forward goes through the `wrapped` model (FSDP gathers its shards
    there) while the adapter is switched off on the PEFT model inside it.
    """
    with peft_model.disable_adapter():
        return answer_outputs(
            wrapped or peft_model, batch["teacher_input_ids"], batch["teacher_attention_mask"],
            batch["answer_ids"].shape[1], hidden_states=hidden_states,
        )


@dataclass
class TeacherTargets:
    """The cached teacher distribution over one answer's tokens (n tokens, top k)."""

    answer_ids: torch.Tensor  # [n]   the answer tokens, to check alignment on reading
    token_ids: torch.Tensor  # [n, k] teacher's top-k token ids at each answer position
    logprobs: torch.Tensor  # [n, k] their log-probabilities at the distillation temperature
    tail_mass: torch.Tensor  # [n]   probability of every other token together


def top_k_targets(logits: torch.Tensor, answer_ids: torch.Tensor, top_k: int, temperature: float) -> TeacherTargets:
    """Reduce teacher logits [n, V] at the answer positions to cached targets."""
    logprobs = F.log_softmax(logits.float() / temperature, dim=-1)
    top_logprobs, top_ids = logprobs.topk(min(top_k, logprobs.shape[-1]), dim=-1)
    # The mass of the other tokens summed directly, not as 1 - top mass: exact when it is tiny,
    # and exactly 0 when k covers the vocabulary.
    tail_mass = logprobs.scatter(-1, top_ids, float("-inf")).logsumexp(dim=-1).exp()
    return TeacherTargets(answer_ids.clone(), top_ids.to(torch.int32), top_logprobs, tail_mass)


def tempered_targets(entries: list[dict[int, float]], answer_ids: list[int], top_k: int, temperature: float,
                     vocab_size: int) -> TeacherTargets:
    """Cached targets from a server's raw (temperature 1) top-k log-probabilities, one dict
    {token id: log-probability} per answer position (vLLM's prompt_logprobs).

    At temperature T a kept token's probability is exp(l / T) / Z_T, exact up to Z_T. Of the
    tail only its mass m at T=1 is known, not its tempered weight: that lies between m * p_k^(1/T-1)
    (the tail made of tokens as likely as the least likely one kept, p_k) and
    (V-k)^(1-1/T) * m^(1/T) (spread evenly over the other V-k tokens). The estimate is their
    geometric mean: exact at T=1, and at T=2 on the built-in model's demo answers within 0.04 of
    the exact tail mass (docs/teacher-cache.md).
    """
    for entry in entries:
        if len(entry) < top_k:
            raise UserError(f"the server gave {len(entry)} log-probabilities at an answer position, fewer than "
                            f"the {top_k} asked for (train.teacher_top_k)")
    # vLLM adds the actual token past the top k: each position keeps its k likeliest.
    kept = [sorted(entry.items(), key=lambda item: -item[1])[:top_k] for entry in entries]
    raw = torch.tensor([[logprob for _, logprob in row] for row in kept], dtype=torch.float64)  # [n, k]
    mass = (1 - raw.exp().sum(-1)).clamp(min=0)
    thick = mass * raw.min(-1).values.exp() ** (1 / temperature - 1)
    thin = (vocab_size - top_k) ** (1 - 1 / temperature) * mass ** (1 / temperature)
    tail_weight = (thick * thin).sqrt()
    log_z = torch.logsumexp(torch.cat([raw / temperature, tail_weight.log()[:, None]], dim=-1), dim=-1)
    token_ids = torch.tensor([[token for token, _ in row] for row in kept], dtype=torch.int32)
    logprobs = raw / temperature - log_z[:, None]
    tail_mass = (tail_weight.log() - log_z).exp()
    return TeacherTargets(torch.tensor(answer_ids), token_ids, logprobs.float(), tail_mass.float())


@torch.no_grad()
def prefix_shared_teacher_targets(
    model, prefix_ids: list[int], suffixes: list[tuple[list[int], list[int]]], top_k: int,
    temperature: float, batch_size: int,
) -> list[TeacherTargets]:
    """Teacher targets for several (suffix prompt, answer) pairs after one shared prefix.

    The prefix (chat header and passage) runs once; its KV cache is copied for each batch of
    suffixes (the question, then the answer), which are right-padded after it.
    """
    device = next(model.parameters()).device
    prefix = torch.tensor([prefix_ids], device=device)
    prefix_cache = model(input_ids=prefix, use_cache=True).cache
    targets = []
    for start in range(0, len(suffixes), batch_size):
        chunk = suffixes[start:start + batch_size]
        width = max(len(prompt) + len(answer) for prompt, answer in chunk)
        input_ids = torch.zeros((len(chunk), width), dtype=torch.long, device=device)
        suffix_mask = torch.zeros((len(chunk), width), dtype=torch.long, device=device)
        for row, (prompt, answer) in enumerate(chunk):
            input_ids[row, :len(prompt) + len(answer)] = torch.tensor(prompt + answer)
            suffix_mask[row, :len(prompt) + len(answer)] = 1
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(len(chunk))
        attention_mask = torch.cat([torch.ones((len(chunk), len(prefix_ids)), dtype=torch.long, device=device),
                                    suffix_mask], dim=1)
        position_ids = torch.arange(len(prefix_ids), len(prefix_ids) + width, device=device).expand(len(chunk), -1)
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       cache=cache, use_cache=True).logits
        for row, (prompt, answer) in enumerate(chunk):
            # Suffix position j predicts token j+1; the first answer token follows the prompt.
            # (An empty suffix prompt would need the prefix's last logits; prompts always end
            # with the assistant header, so it is never empty.)
            positions = slice(len(prompt) - 1, len(prompt) - 1 + len(answer))
            targets.append(top_k_targets(logits[row, positions], torch.tensor(answer), top_k, temperature))
    return targets


def write_teacher_cache(out_dir: Path, keys: list[str], targets: list[TeacherTargets], settings: dict) -> None:
    """Write targets as safetensors shards plus index.json {key: [shard, row]}, atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    index: dict[str, list[int]] = {}
    shards: list[list[int]] = [[]]
    tokens_in_shard = 0
    for row, target in enumerate(targets):
        if shards[-1] and tokens_in_shard + len(target.answer_ids) > SHARD_TOKENS:
            shards.append([])
            tokens_in_shard = 0
        shards[-1].append(row)
        tokens_in_shard += len(target.answer_ids)
    for shard_number, rows in enumerate(shards):
        chosen = [targets[row] for row in rows]
        lengths = torch.tensor([0] + [len(t.answer_ids) for t in chosen])
        tensors = {
            "offsets": lengths.cumsum(0),
            "answer_ids": torch.cat([t.answer_ids for t in chosen]).to(torch.int32),
            "token_ids": torch.cat([t.token_ids for t in chosen]),
            "logprobs": torch.cat([t.logprobs for t in chosen]),
            "tail_mass": torch.cat([t.tail_mass for t in chosen]),
        }
        path = out_dir / f"shard-{shard_number:05d}.safetensors"
        temporary = path.with_name(f".{path.name}.tmp")
        save_file({name: tensor.contiguous().cpu() for name, tensor in tensors.items()}, str(temporary))
        temporary.replace(path)
        for position, row in enumerate(rows):
            index[keys[row]] = [shard_number, position]
    write_atomic(out_dir / "index.json", json.dumps({"settings": settings, "entries": index}) + "\n")


class TeacherCache:
    """Read cached teacher targets by key (an example's: train/data.py)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        manifest = json.loads((self.directory / "index.json").read_text(encoding="utf-8"))
        self.settings = manifest["settings"]
        self.entries = manifest["entries"]
        self.shards: dict[int, dict[str, torch.Tensor]] = {}

    def _shard(self, number: int) -> dict[str, torch.Tensor]:
        if number not in self.shards:
            with safe_open(str(self.directory / f"shard-{number:05d}.safetensors"), framework="pt") as file:
                self.shards[number] = {name: file.get_tensor(name) for name in file.keys()}
        return self.shards[number]

    def __getitem__(self, key: str) -> TeacherTargets:
        shard_number, row = self.entries[key]
        shard = self._shard(shard_number)
        start, end = shard["offsets"][row].item(), shard["offsets"][row + 1].item()
        return TeacherTargets(
            answer_ids=shard["answer_ids"][start:end].long(), token_ids=shard["token_ids"][start:end],
            logprobs=shard["logprobs"][start:end], tail_mass=shard["tail_mass"][start:end],
        )


@dataclass
class TeacherInput:
    key: str  # the example's (train/data.py)
    prefix_ids: list[int]  # chat header and passage: shared by all questions on the passage
    suffix_ids: list[int]  # the question and the assistant header
    answer_ids: list[int]


def build_teacher_cache(model, inputs: list[TeacherInput], top_k: int, temperature: float, batch_size: int,
                        out_dir: Path, settings: dict) -> None:
    """One teacher pass over every answer, each passage's prefix computed once."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for number, item in enumerate(inputs):
        groups.setdefault(tuple(item.prefix_ids), []).append(number)
    targets: list[TeacherTargets | None] = [None] * len(inputs)
    with torch.inference_mode(), tqdm(total=len(inputs), desc="teacher cache", unit="answer", leave=False) as bar:
        for prefix, members in groups.items():
            computed = prefix_shared_teacher_targets(
                model, list(prefix), [(inputs[m].suffix_ids, inputs[m].answer_ids) for m in members],
                top_k, temperature, batch_size,
            )
            for member, target in zip(members, computed):
                targets[member] = target
            bar.update(len(members))
    write_teacher_cache(out_dir, [item.key for item in inputs], targets, settings)  # type: ignore[arg-type]


def build_teacher_cache_from_server(backend, inputs: list[TeacherInput], top_k: int, temperature: float,
                                    vocab_size: int, out_dir: Path, settings: dict) -> bool:
    """The cache from a server's prompt log-probabilities (ServerBackend.prompt_logprobs), up to
    its max_concurrency requests at once, tempered here (tempered_targets). False, and nothing
    written, where the server gives none."""
    def scored(item: TeacherInput) -> TeacherTargets | None:
        token_ids = item.prefix_ids + item.suffix_ids + item.answer_ids
        entries = backend.prompt_logprobs(token_ids, top_k)
        if entries is None:
            return None
        if len(entries) != len(token_ids):
            raise UserError(f"the server scored {len(entries)} positions of a {len(token_ids)}-token prompt")
        return tempered_targets(entries[len(token_ids) - len(item.answer_ids):], item.answer_ids, top_k, temperature,
                                vocab_size)

    first = scored(inputs[0])  # asked alone before the rest
    if first is None:
        log.info("teacher: the server gives no prompt log-probabilities with token ids; the cache is computed here")
        return False
    targets = [first] + list(tqdm(side_by_side(scored, inputs[1:], backend.max_concurrency), total=len(inputs) - 1,
                                  desc="teacher cache (server)", unit="answer", leave=False))
    write_teacher_cache(out_dir, [item.key for item in inputs], targets, settings)
    return True
