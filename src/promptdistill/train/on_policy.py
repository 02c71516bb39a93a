"""On-policy distillation (train.on_policy_share): the student answers some of each batch's
questions itself, closed-book with its adapter on, and the teacher (the same weights with the
adapter off and the passage in its prompt) scores every token of those answers online.

sft cannot do this by construction (it needs fixed target answers); it corrects exactly the
mistakes the student makes (GKD, Agarwal et al. 2024; On-Policy Context Distillation, 2026).
The rows are the first of each batch, whose order is a shuffle fixed by (seed, epoch), and the
samples draw from torch's generator, which every checkpoint saves: a resumed run samples what an
uninterrupted one did. With train.on_policy_ahead = N the rows of N batches are answered in one
batched generation at the first of them (`AnswersAhead`): a CPU's decoding step costs little more
for 32 rows than for 4, so sampling takes about 1/N of the time, and a batch's answers are up to
N - 1 optimizer steps older than the adapter that learns from them. Each epoch starts a group.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from promptdistill.models import left_pad
from promptdistill.train.data import Example


def on_policy_rows(rows: int, share: float) -> int:
    """How many of a batch's rows the student answers itself: the share, rounded, at least one
    where the share is above 0."""
    return max(1, round(rows * share)) if share > 0 else 0


@torch.no_grad()
def student_answers(peft_model, examples: list[Example], pad_id: int, temperature: float,
                    max_tokens: int) -> list[Example]:
    """The examples with the student's own answers in place of the expert's: sampled from the
    whole distribution at `temperature`, up to `max_tokens`, ending at the token the expert's
    answers end with (encode_answer's end of turn) where the student says it."""
    device = next(peft_model.parameters()).device
    prompts, mask = left_pad([example.student_ids for example in examples], pad_id)
    stop = examples[0].answer_ids[-1]
    was_training = peft_model.training
    peft_model.eval()
    output = peft_model.generate(input_ids=prompts.to(device), attention_mask=mask.to(device), do_sample=True,
                                 temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_tokens,
                                 pad_token_id=pad_id, eos_token_id=stop)
    peft_model.train(was_training)
    sampled = []
    for example, tokens in zip(examples, output[:, prompts.shape[1]:].tolist()):
        answer = tokens[:tokens.index(stop) + 1] if stop in tokens else tokens
        sampled.append(Example(key=f"on-policy-{example.key}", student_ids=example.student_ids, answer_ids=answer,
                               teacher_ids=example.teacher_ids, teacher_prefix_length=example.teacher_prefix_length))
    return sampled


class AnswersAhead:
    """The student's answers to each batch's first rows (on_policy_rows of them), sampled `ahead`
    batches at a time by `sample` (student_answers with its settings), in the order the loader
    yields the batches: `planned` is the epoch's batches as example indices."""

    def __init__(self, examples: list[Example], share: float, ahead: int,
                 sample: Callable[[list[Example]], list[Example]]):
        self.examples, self.share, self.ahead, self.sample = examples, share, ahead, sample
        self.planned: list[list[int]] = []
        self.ready: list[Example] = []

    def start_epoch(self, planned: list[list[int]]) -> None:
        self.planned, self.ready = planned, []

    def for_batch(self, number: int, rows: list[Example]) -> list[Example]:
        """The answers to `rows`, batch `number`'s first on_policy_rows of the epoch."""
        if number % self.ahead == 0:
            self.ready = self.sample([self.examples[index] for batch in self.planned[number:number + self.ahead]
                                      for index in batch[:on_policy_rows(len(batch), self.share)]])
        answered, self.ready = self.ready[:len(rows)], self.ready[len(rows):]
        if [answer.student_ids for answer in answered] != [row.student_ids for row in rows]:
            raise RuntimeError(f"on-policy answers out of step with the loader at batch {number}")
        return answered
