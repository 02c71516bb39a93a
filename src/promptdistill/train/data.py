"""Training examples and their batches.

Each example is a prompt (student: the question; teacher: the passage, then the question) and
the answer tokens, tokenized once and shared by both, so the two sequences end in exactly the
same tokens. Batches are left-padded: every sequence ends at the last column, so the answer of
row b fills the last `answer_lengths[b]` columns and the output layer needs to run on the last
`max answer length + 1` positions only (`logits_to_keep`), not on the passage. The student's rows
start with the prefix they share (the chat header), which training reads once per batch.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from promptdistill.corpus import Passage
from promptdistill.models import chat_prompt, left_pad, shared_prefix_length
from promptdistill.prompts import student_prompt, teacher_context, teacher_prompt
from promptdistill.teacher import TeacherCache


@dataclass
class Example:
    key: str  # names the example in the teacher cache (answers: see answer_examples)
    student_ids: list[int]
    answer_ids: list[int]
    teacher_ids: list[int] | None = None  # only pd needs the open-book prompt
    teacher_prefix_length: int = 0  # teacher_ids[:this] is the passage part, shared per passage

    @property
    def length(self) -> int:
        """Tokens the student reads: what batching by length sorts on."""
        return len(self.student_ids) + len(self.answer_ids)


def encode_answer(tokenizer, answer: str) -> list[int]:
    """The answer's tokens, closed by the end-of-turn token so the student learns to stop."""
    return tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]


def encode_prompt(tokenizer, user_text: str) -> list[int]:
    return tokenizer(chat_prompt(tokenizer, user_text), add_special_tokens=False).input_ids


def encode_teacher_prompt(tokenizer, passage: str, question: str, instruction: str = "") -> tuple[list[int], list[int]]:
    """The teacher's prompt as (prefix, suffix) tokens: chat header, passage and instruction, then the rest.

    Tokenized in two parts so that every question on a passage starts with the very same prefix
    tokens, which the cached teacher computes once; the online teacher reads the same tokens.
    """
    rendered = chat_prompt(tokenizer, teacher_prompt(passage, question, instruction))
    context = teacher_context(passage, instruction)
    if context not in rendered:
        raise ValueError("the chat template changed the passage text; cannot split the teacher prompt")
    split = rendered.index(context) + len(context)
    encode = lambda text: tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
    return encode(rendered[:split]), encode(rendered[split:])


def answer_examples(tokenizer, passages: list[Passage], questions: list[dict], answers: list[dict],
                    with_teacher: bool, teacher_instruction: str = "") -> list[Example]:
    """One example per answer: closed-book question, then the answer; with the open-book
    teacher prompt too for distillation. A question's first answer is keyed by the question's id,
    its n-th further one (synth.*_answers_per_question) by "ID#n"."""
    passages_by_id = {passage.id: passage for passage in passages}
    questions_by_id = {question["id"]: question for question in questions}
    earlier_answers: Counter[str] = Counter()
    examples = []
    for record in answers:
        question = questions_by_id[record["question_id"]]
        earlier = earlier_answers[question["id"]]
        earlier_answers[question["id"]] += 1
        example = Example(
            key=f"{question['id']}#{earlier}" if earlier else question["id"],
            student_ids=encode_prompt(tokenizer, student_prompt(question["question"])),
            answer_ids=encode_answer(tokenizer, record["answer"]),
        )
        if with_teacher:
            prefix, suffix = encode_teacher_prompt(tokenizer, passages_by_id[question["passage_id"]].text,
                                                   question["question"], teacher_instruction)
            example.teacher_ids, example.teacher_prefix_length = prefix + suffix, len(prefix)
        examples.append(example)
    return examples


def first_per_passage(questions: list[dict], answers: list[dict], count: int) -> tuple[list[dict], list[dict]]:
    """The first `count` questions of each passage, in the order they were written, and their
    answers: a smaller training set inside a larger one, with the same answers."""
    kept: dict[str, int] = Counter()
    chosen = []
    for question in questions:
        if kept[question["passage_id"]] < count:
            kept[question["passage_id"]] += 1
            chosen.append(question)
    ids = {question["id"] for question in chosen}
    return chosen, [answer for answer in answers if answer["question_id"] in ids]


def open_book_examples(examples: list[Example]) -> list[Example]:
    """Answer examples (with their teacher prompts) whose student reads the teacher's prompt too:
    the passage, then the question. Replayed with the base model on the same tokens as the
    target (train.replay=open-book), they keep the student reading a passage as the base does."""
    return [Example(key=f"open-book-{example.key}", student_ids=example.teacher_ids, answer_ids=example.answer_ids,
                    teacher_ids=example.teacher_ids) for example in examples]


def passage_examples(tokenizer, passages: list[Passage]) -> list[Example]:
    """uft: next-token training on the raw passages; every token after the first is a target."""
    examples = []
    for passage in passages:
        tokens = tokenizer(passage.text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        examples.append(Example(key=passage.id, student_ids=tokens[:1], answer_ids=tokens[1:]))
    return examples


def reply_examples(tokenizer, records: list[dict]) -> list[Example]:
    """The base model's own replies ({"prompt", "reply"}) as examples whose "teacher" is the base
    model reading the very same tokens: replay in training, drift in the retention check."""
    examples = []
    for number, record in enumerate(records):
        prompt_ids = encode_prompt(tokenizer, record["prompt"])
        examples.append(Example(key=f"reply-{number}", student_ids=prompt_ids,
                                answer_ids=encode_answer(tokenizer, record["reply"]), teacher_ids=prompt_ids))
    return examples


class Collator:
    """Examples -> a batch with `answer_ids` [B, A] and `answer_mask` [B, A] (A: longest answer),
    and the student's sequences, whose first `student_shared` tokens are common to every row.

    With a teacher cache the batch carries the cached targets, aligned with `answer_ids`
    (`teacher_token_ids` [B, A, k], `teacher_logprobs` [B, A, k], `teacher_tail_mass` [B, A]);
    without one, pd examples bring their open-book sequences for the online teacher.
    """

    def __init__(self, pad_id: int, teacher_cache: TeacherCache | None = None):
        self.pad_id = pad_id
        self.teacher_cache = teacher_cache

    def __call__(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        width = max(len(example.answer_ids) for example in examples)
        answer_ids = torch.full((len(examples), width), self.pad_id, dtype=torch.long)
        answer_mask = torch.zeros((len(examples), width), dtype=torch.bool)
        for row, example in enumerate(examples):
            answer_ids[row, width - len(example.answer_ids):] = torch.tensor(example.answer_ids)
            answer_mask[row, width - len(example.answer_ids):] = True
        rows = [e.student_ids + e.answer_ids for e in examples]
        # The chat template's header (a third of a short row) runs once per batch; the token before
        # each answer stays in the row's own part, where the output layer reads it.
        shared = shared_prefix_length(rows, keep=[len(e.answer_ids) + 1 for e in examples])
        student_ids, student_mask = left_pad(rows, self.pad_id, shared)
        batch = {
            "student_input_ids": student_ids,
            "student_attention_mask": student_mask,
            "student_shared": shared,
            "answer_ids": answer_ids,
            "answer_mask": answer_mask,
        }
        if self.teacher_cache is not None:
            batch.update(self.cached_targets(examples, width))
        elif examples[0].teacher_ids is not None:
            teacher_ids, teacher_mask = left_pad([e.teacher_ids + e.answer_ids for e in examples], self.pad_id)
            batch["teacher_input_ids"] = teacher_ids
            batch["teacher_attention_mask"] = teacher_mask
        return batch

    def cached_targets(self, examples: list[Example], width: int) -> dict[str, torch.Tensor]:
        targets = [self.teacher_cache[example.key] for example in examples]
        top_k = targets[0].token_ids.shape[1]
        token_ids = torch.zeros((len(examples), width, top_k), dtype=torch.int32)
        logprobs = torch.zeros((len(examples), width, top_k))
        tail_mass = torch.zeros((len(examples), width))
        for row, (example, target) in enumerate(zip(examples, targets)):
            if target.answer_ids.tolist() != example.answer_ids:
                raise ValueError(f"teacher cache entry {example.key!r} is for other answer tokens; rebuild the cache")
            columns = slice(width - len(example.answer_ids), width)
            token_ids[row, columns], logprobs[row, columns], tail_mass[row, columns] = (
                target.token_ids, target.logprobs, target.tail_mass)
        return {"teacher_token_ids": token_ids, "teacher_logprobs": logprobs, "teacher_tail_mass": tail_mass}


class ReplayRows:
    """The replay rows mixed into each step: a shuffle of the replay examples fixed by (seed,
    epoch), taken `rows` at a time and wrapping around, so a resumed epoch sees the same rows."""

    def __init__(self, examples: list[Example], rows: int, seed: int, collate: Collator):
        self.examples, self.rows, self.seed, self.collate = examples, rows, seed, collate

    def batch(self, epoch: int, step: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.examples), generator=generator).tolist()
        picks = [order[(step * self.rows + row) % len(order)] for row in range(self.rows)]
        return self.collate([self.examples[index] for index in picks])


class LengthGroupedBatches:
    """Batches of similar length, so short question+answer rows are not padded to long ones.

    Each epoch: shuffle with (seed, epoch), cut into groups of 32 batches, sort each group by
    length, split into batches, shuffle the batch order. The order depends on (seed, epoch)
    alone, so a resumed run sees the same batches as an uninterrupted one.

    With several processes (DDP), `batch_size` is the global batch: every process walks the same
    batches and takes rows process_index, process_index + num_processes, ... of each, so N
    processes see the rows one process would, and as many steps. A batch with fewer rows than
    processes leaves some without one; they repeat its first row (DDP averages their gradients).
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group_batches: int = 32,
                 process_index: int = 0, num_processes: int = 1):
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.group = batch_size * group_batches
        self.epoch = 0
        self.process_index, self.num_processes = process_index, num_processes

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        batches = []
        for start in range(0, len(order), self.group):
            group = sorted(order[start:start + self.group], key=lambda i: self.lengths[i])
            batches += [group[i:i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]

    def __iter__(self):
        for batch in self.batches():
            yield batch[self.process_index::self.num_processes] or batch[:1]

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)
