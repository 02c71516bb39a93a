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
