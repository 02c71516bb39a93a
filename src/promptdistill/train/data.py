"""Training examples and their batches.

Each example is a prompt (student: the question; teacher: the passage, then the question) and
the answer tokens, tokenized once and shared by both, so the two sequences end in exactly the
same tokens. Batches are left-padded: every sequence ends at the last column, so the answer of
row b fills the last `answer_lengths[b]` columns and the output layer needs to run on the last
`max answer length + 1` positions only (`logits_to_keep`), not on the passage.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from promptdistill.models import chat_prompt


@dataclass
class Example:
    student_ids: list[int]
    answer_ids: list[int]
    teacher_ids: list[int] | None = None  # only pd needs the open-book prompt


def encode_answer(tokenizer, answer: str) -> list[int]:
    """The answer's tokens, closed by the end-of-turn token so the student learns to stop."""
    return tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]


def encode_prompt(tokenizer, user_text: str) -> list[int]:
    return tokenizer(chat_prompt(tokenizer, user_text), add_special_tokens=False).input_ids


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(sequence) for sequence in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, width - len(sequence):] = torch.tensor(sequence)
        attention_mask[row, width - len(sequence):] = 1
    return input_ids, attention_mask


class Collator:
    """Examples -> a batch with `answer_ids` [B, A] and `answer_mask` [B, A] (A: longest answer)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        width = max(len(example.answer_ids) for example in examples)
        answer_ids = torch.full((len(examples), width), self.pad_id, dtype=torch.long)
        answer_mask = torch.zeros((len(examples), width), dtype=torch.bool)
        for row, example in enumerate(examples):
            answer_ids[row, width - len(example.answer_ids):] = torch.tensor(example.answer_ids)
            answer_mask[row, width - len(example.answer_ids):] = True
        student_ids, student_mask = left_pad([e.student_ids + e.answer_ids for e in examples], self.pad_id)
        batch = {
            "student_input_ids": student_ids,
            "student_attention_mask": student_mask,
            "answer_ids": answer_ids,
            "answer_mask": answer_mask,
        }
        if examples[0].teacher_ids is not None:
            teacher_ids, teacher_mask = left_pad([e.teacher_ids + e.answer_ids for e in examples], self.pad_id)
            batch["teacher_input_ids"] = teacher_ids
            batch["teacher_attention_mask"] = teacher_mask
        return batch
