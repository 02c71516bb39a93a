"""Losses over answer tokens, as plain functions of logits.

Every function takes logits of shape [N, V] for the N answer tokens selected by the batch's
answer mask, so padding and prompt positions never enter a loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def forward_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over tokens of KL(teacher || student), both softened by `temperature`.

    The paper distils at T = 2. Not multiplied by T**2 (Hinton et al.): the learning rate
    absorbs that constant.
    """
    teacher_logprobs = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    student_logprobs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    per_token = (teacher_logprobs.exp() * (teacher_logprobs - student_logprobs)).sum(dim=-1)
    return per_token.mean()


def cross_entropy(student_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of the answer tokens (sft)."""
    return F.cross_entropy(student_logits.float(), targets)


def top_k_forward_kl(
    student_logits: torch.Tensor, teacher_token_ids: torch.Tensor, teacher_logprobs: torch.Tensor,
    teacher_tail_mass: torch.Tensor, temperature: float,
) -> torch.Tensor:
    """Forward KL against a cached teacher: its top-k tokens plus one bucket for the rest.

    The teacher's distribution is known on k tokens (log-probabilities at `temperature`) and as
    one lump of mass on all others; the student's is compared on the same k tokens and the same
    lump. When k covers the vocabulary the tail is empty and this equals `forward_kl`.
    """
    student_logprobs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    token_ids = teacher_token_ids.long()
    student_top = student_logprobs.gather(-1, token_ids)
    teacher_top = teacher_logprobs.float()
    on_support = (teacher_top.exp() * (teacher_top - student_top)).sum(dim=-1)
    # log of the student's mass off the support, exactly, as a logsumexp of the other tokens;
    # clamped so that an empty tail (mass 0 for both) gives 0 * finite, not 0 * inf.
    student_tail = student_logprobs.scatter(-1, token_ids, float("-inf")).logsumexp(dim=-1).clamp(min=-100.0)
    tail_mass = teacher_tail_mass.float()
    tail = tail_mass * (tail_mass.clamp(min=1e-30).log() - student_tail)
    return (on_support + tail).mean()
