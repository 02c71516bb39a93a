"""The teacher signal: the student's own weights with the adapter switched off and the passage
in the prompt. `online` recomputes it at every step over the full vocabulary (the paper's way).
"""

from __future__ import annotations

import torch

from promptdistill.models import answer_logits


@torch.no_grad()
def online_teacher_logits(peft_model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Teacher logits [B, A, V] at the answer positions of the open-book sequences."""
    with peft_model.disable_adapter():
        return answer_logits(
            peft_model, batch["teacher_input_ids"], batch["teacher_attention_mask"],
            batch["answer_ids"].shape[1],
        )
