"""Losses over answer tokens, as plain functions of logits.

Every function takes the student's logits first, of shape [N, V] for the N answer tokens selected
by the batch's answer mask (so padding and prompt positions never enter a loss), then its
targets, and returns the mean over the N tokens, or a weighted mean with `weights` [N] (summing to
1): `token_weights` gives each answer the same weight whatever its length, as the official code
does (its loss is a mean per sequence, then over the batch).

Distillation compares the teacher's distribution p and the student's q, both softened by the
temperature, with one of three divergences:
  forward  KL(p || q): the paper's choice (its Table 14 has forward beating reverse);
  reverse  KL(q || p);
  jsd      beta * KL(p || m) + (1 - beta) * KL(q || m), m = beta * p + (1 - beta) * q: the
           generalised Jensen-Shannon divergence with TRL's (GKD) and torchtune's convention.
The cached teacher knows p on its top-k tokens and as one lump on the rest (the tail); the
divergence is then taken between the two (k + 1)-bucket distributions, which equals the full one
when k covers the vocabulary. `support_distill_loss` cuts the online teacher the same way, to its
own top k or the student's (train.online_top_k).

`hidden_state_distance` compares the two models' hidden states at the answer tokens, layer by
layer, for pd's optional term (train.hidden_state_weight).

`in_chunks` runs any of them over the tokens a chunk at a time, recomputed in the backward pass.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from promptdistill.config import DIVERGENCES, LOSS_REDUCTIONS, ONLINE_SUPPORTS


def token_weights(answer_mask: torch.Tensor, reduction: str) -> torch.Tensor | None:
    """The weight of each masked token [N] in a batch's loss: None for a plain mean over tokens
    ("token"), or 1 / (its answer's length x the answers in the batch) ("sequence")."""
    if reduction == "token":
        return None
    if reduction != "sequence":
        raise ValueError(f"unknown loss reduction {reduction!r}; choose from {', '.join(LOSS_REDUCTIONS)}")
    lengths = answer_mask.sum(dim=1, keepdim=True)
    per_row = 1.0 / (lengths.clamp(min=1) * (lengths > 0).sum())
    return per_row.expand_as(answer_mask)[answer_mask].float()


def weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    return values.mean() if weights is None else (values * weights).sum()


def divergence(student_logprobs: torch.Tensor, teacher_logprobs: torch.Tensor, kind: str = "forward",
               beta: float = 0.5) -> torch.Tensor:
    """Per-token divergence [N] between two distributions given as log-probabilities [N, V]."""
    if kind == "forward":
        return (teacher_logprobs.exp() * (teacher_logprobs - student_logprobs)).sum(dim=-1)
    if kind == "reverse":
        return (student_logprobs.exp() * (student_logprobs - teacher_logprobs)).sum(dim=-1)
    if kind == "jsd":
        mixture = torch.logsumexp(torch.stack([teacher_logprobs + math.log(beta),
                                               student_logprobs + math.log(1 - beta)]), dim=0)
        return (beta * (teacher_logprobs.exp() * (teacher_logprobs - mixture)).sum(dim=-1)
                + (1 - beta) * (student_logprobs.exp() * (student_logprobs - mixture)).sum(dim=-1))
    raise ValueError(f"unknown divergence {kind!r}; choose from {', '.join(DIVERGENCES)}")


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                 kind: str = "forward", beta: float = 0.5, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over tokens of the divergence between teacher and student, both at `temperature`.

    Not multiplied by T**2 (Hinton et al.): the learning rate absorbs that constant.
    """
    return weighted_mean(divergence(F.log_softmax(student_logits.float() / temperature, dim=-1),
                                    F.log_softmax(teacher_logits.float() / temperature, dim=-1), kind, beta), weights)


def top_k_distill_loss(
    student_logits: torch.Tensor, teacher_token_ids: torch.Tensor, teacher_logprobs: torch.Tensor,
    teacher_tail_mass: torch.Tensor, temperature: float, kind: str = "forward", beta: float = 0.5,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """`distill_loss` against a cached teacher: its top-k tokens [N, k] plus one bucket for the rest.

    `teacher_logprobs` are already at `temperature`; the student is softened here.
    """
    student_logprobs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    token_ids = teacher_token_ids.long()
    # The student's mass off the support, exactly, as a logsumexp of the other tokens. Both tails
    # are clamped so that an empty one (k covers the vocabulary) gives 0 * finite, not 0 * inf.
    student_tail = student_logprobs.scatter(-1, token_ids, float("-inf")).logsumexp(dim=-1).clamp(min=-100.0)
    teacher_tail = teacher_tail_mass.float().clamp(min=1e-30).log()
    student_buckets = torch.cat([student_logprobs.gather(-1, token_ids), student_tail[:, None]], dim=-1)
    teacher_buckets = torch.cat([teacher_logprobs.float(), teacher_tail[:, None]], dim=-1)
    return weighted_mean(divergence(student_buckets, teacher_buckets, kind, beta), weights)


def support_distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, top_k: int,
                         support: str, kind: str = "forward", beta: float = 0.5,
                         weights: torch.Tensor | None = None) -> torch.Tensor:
    """`distill_loss` over k tokens at each position plus one bucket for the rest, as the cached
    teacher's: the teacher's top k (the Tinker cookbook's) or the student's (On-Policy Context
    Distillation's)."""
    if support not in ONLINE_SUPPORTS:
        raise ValueError(f"unknown support {support!r}; choose from {', '.join(ONLINE_SUPPORTS)}")
    teacher_logprobs = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    chooser = teacher_logprobs if support == "teacher" else student_logits.detach()
    token_ids = chooser.topk(min(top_k, chooser.shape[-1]), dim=-1).indices
    kept = teacher_logprobs.gather(-1, token_ids)
    tail_mass = (1 - kept.exp().sum(dim=-1)).clamp(min=0)
    return top_k_distill_loss(student_logits, token_ids, kept, tail_mass, temperature, kind, beta, weights)


def cross_entropy(student_logits: torch.Tensor, targets: torch.Tensor,
                  weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy of the answer tokens (sft, uft)."""
    return weighted_mean(F.cross_entropy(student_logits.float(), targets, reduction="none"), weights)


def hidden_state_distance(student_states: torch.Tensor, teacher_states: torch.Tensor,
                          weights: torch.Tensor | None = None) -> torch.Tensor:
    """Deep Context Distillation's term (Caccia et al., 2025): at each token, the L1 distance
    between the student's and the teacher's hidden states [L, N, D] over the L1 norm of the
    teacher's, averaged over the L layers; then the (weighted) mean over the N tokens."""
    teacher = teacher_states.float()
    per_layer = (student_states.float() - teacher).abs().sum(dim=-1) / teacher.abs().sum(dim=-1).clamp(min=1e-6)
    return weighted_mean(per_layer.mean(dim=0), weights)


# A chunk's float32 full-vocabulary intermediates: 4 bytes x 128 x 49,152 = 25 MB each for SmolLM2.
LOSS_CHUNK_TOKENS = 128


def in_chunks(loss, student_logits: torch.Tensor, targets: list[torch.Tensor], weights: torch.Tensor | None,
              chunk_tokens: int = LOSS_CHUNK_TOKENS) -> torch.Tensor:
    """`loss(student_logits, *targets, weights=...)` over the N tokens, `chunk_tokens` at a time.

    Each chunk is recomputed in the backward pass (activation checkpointing), so the float32
    [N, V] tensors a loss keeps for its gradient (log-probabilities, one set per term) exist for
    one chunk at a time: 97 MB each for 500 answer tokens of a 49k vocabulary (a demo pd epoch
    peaked 0.13 GB lower, docs/speed.md). The chunks' weighted sums add up to the whole weighted
    mean (`weights` None: 1 / N each).
    """
    count = student_logits.shape[0]
    if weights is None:
        weights = torch.full((count,), 1.0 / max(count, 1), device=student_logits.device)
    if count <= chunk_tokens:
        return loss(student_logits, *targets, weights=weights)
    total = student_logits.new_zeros((), dtype=torch.float32)
    for start in range(0, count, chunk_tokens):
        part = slice(start, start + chunk_tokens)
        total = total + checkpoint(loss, student_logits[part], *(target[part] for target in targets),
                                   weights=weights[part], use_reentrant=False)
    return total
