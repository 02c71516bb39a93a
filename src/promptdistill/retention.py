"""What else training changed: retention of general knowledge, and drift from the base model.

    retention  of the bundled general questions (data/general_questions.jsonl: capitals,
               arithmetic, well-known facts, common sense) that the base model answers correctly,
               the share the trained model still answers correctly (closed-book, greedy, graded
               like the test questions);
    drift      KL(base || trained) of the next-token distributions at the tokens of the base
               model's own greedy replies to everyday prompts (data/drift_prompts.jsonl), the mean
               per reply token, then over the prompts.

Both run after training as their own stages (retention-base, then retention-METHOD per trained
method) and feed nothing back into training. Self-replay (train.replay=self) trains on the base
model's replies to other prompts (data/replay_prompts.jsonl, or train.replay_prompts), never on
the drift prompts, so drift stays a held-out measure.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from promptdistill.config import RunConfig
from promptdistill.errors import UserError
from promptdistill.evaluate import answer_questions, grade
from promptdistill.files import content_key, read_jsonl, read_text, write_jsonl
from promptdistill.generation import Backend, BatchStore, Sampling, generate_all
from promptdistill.methods import Method
from promptdistill.models import answer_logits, load_adapter, load_model
from promptdistill.rundir import RunDir, Stage
from promptdistill.stats import bootstrap_interval
from promptdistill.train.data import Collator, reply_examples
from promptdistill.train.losses import divergence

SETTINGS = ("model.name", "model.dtype", "eval.retention_max_tokens", "eval.retention_questions", "eval.batch_size",
            "eval.match", "eval.answer_length")
BackendFor = Callable[[Path | None], Backend]  # the run's generation backend, with an adapter or none


def bundled(name: str) -> list[dict]:
    """A bundled data file (data/NAME.jsonl) as records."""
    with resources.as_file(resources.files("promptdistill") / "data" / f"{name}.jsonl") as path:
        return read_jsonl(path)


def general_questions(count: int) -> list[dict]:
    """`count` of the bundled general questions, evenly spread over the file (whose kinds come in
    blocks); all of them for 0."""
    questions = bundled("general_questions")
    if not count or count >= len(questions):
        return questions
    return [questions[index * len(questions) // count] for index in range(count)]


def read_prompts(path: str) -> list[str]:
    """The prompts to replay: a user's file (.jsonl with a "prompt" per line, or .txt with one
    prompt per line), or the bundled ones when `path` is empty."""
    if not path:
        return [record["prompt"] for record in bundled("replay_prompts")]
    file = Path(path)
    try:
        if file.suffix == ".jsonl":
            prompts = [str(record["prompt"]) for record in read_jsonl(file, required=("prompt",))]
        elif file.suffix == ".txt":
            prompts = [line.strip() for line in read_text(file).splitlines() if line.strip()]
        else:
            raise UserError(f"{file}: expected a .jsonl or .txt file")
        if not prompts:
            raise UserError(f"{file} holds no prompt")
    except UserError as error:
        raise UserError(f"train.replay_prompts: {error}") from None
    return prompts


def greedy_replies(backend: Backend, prompts: list[str], max_tokens: int, batch_size: int,
                   store: BatchStore | None, description: str) -> list[dict]:
    replies = generate_all(backend, prompts, Sampling(0.0, max_tokens), seed=0, batch_size=batch_size, store=store,
                           description=description)
    return [{"prompt": prompt, "reply": reply} for prompt, reply in zip(prompts, replies)]


def answer_general(backend: Backend, questions: list[dict], config: RunConfig, store: BatchStore | None,
                   description: str) -> list[dict]:
    """Greedy closed-book replies to general questions, graded: {"id", "reply", "correct"}."""
    settings = dataclasses.replace(config.eval, max_answer_tokens=config.eval.retention_max_tokens,
                                   answer_temperature=0.0)
    replies = answer_questions(backend, [q["question"] for q in questions], None, settings, description, store)
    return [{"id": q["id"], "question": q["question"], "reply": reply,
             "correct": bool(grade(reply, q["answers"], config.eval.match)["contains"])}
            for q, reply in zip(questions, replies)]


@torch.no_grad()
def drift(model, pad_id: int, examples: list, batch_size: int) -> list[float]:
    """Per example, the mean over its reply tokens of KL(base || model with its adapter)."""
    collate, values = Collator(pad_id), []
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start:start + batch_size])
        mask = batch["answer_mask"]
        inputs = (batch["student_input_ids"], batch["student_attention_mask"], mask.shape[1], batch["student_shared"])
        trained = answer_logits(model, *inputs).float()
        with model.disable_adapter():
            base = answer_logits(model, *inputs).float()
        per_token = divergence(F.log_softmax(trained, dim=-1), F.log_softmax(base, dim=-1), "forward")
        values += ((per_token * mask).sum(dim=1) / mask.sum(dim=1)).tolist()
    return values


def check(run: RunDir, config: RunConfig, trained: list[Method], backend_for: BackendFor) -> None:
    """The retention stages: the base model once, then each trained method."""
    questions = general_questions(config.eval.retention_questions)
    prompts = [r["prompt"] for r in bundled("drift_prompts")]
    data = {"data": content_key(questions, prompts)}

    def baseline():
        with BatchStore(run.batches("retention-base")) as store:
            backend = backend_for(None)
            records = answer_general(backend, questions, config, store, "retention: base")
            replies = greedy_replies(backend, prompts, config.eval.retention_max_tokens, config.eval.batch_size,
                                     store, "retention: base replies")
        write_jsonl(run.retention("base"), records)
        write_jsonl(run.retention("base-replies"), replies)
        return {"questions": len(records), "correct": sum(r["correct"] for r in records)}

    base_files = [run.retention("base"), run.retention("base-replies")]
    Stage("retention-base", config.settings(*SETTINGS), [], base_files, extra=data).run(run, baseline)
    for method in trained:
        measure(run, config, method, backend_for, base_files)


def measure(run: RunDir, config: RunConfig, method: Method, backend_for: BackendFor, base_files: list[Path]) -> None:
    """One trained method: the base model's correct general questions asked again, and its drift."""
    adapter = run.adapter(method.name)

    def work():
        by_id = {q["id"]: q for q in bundled("general_questions")}
        known = [by_id[r["id"]] for r in read_jsonl(base_files[0]) if r["correct"]]
        with BatchStore(run.batches(f"retention-{method.name}")) as store:
            records = answer_general(backend_for(adapter), known, config, store, f"retention: {method.name}")
        model, tokenizer = load_model(config.model)
        model = load_adapter(model, adapter).eval()
        replies = read_jsonl(base_files[1])
        values = drift(model, tokenizer.pad_token_id, reply_examples(tokenizer, replies), config.eval.batch_size)
        write_jsonl(run.retention(method.name), records)
        write_jsonl(run.retention(f"{method.name}.drift"),
                    [{"prompt": r["prompt"], "kl": value} for r, value in zip(replies, values)])
        return {"kept": sum(r["correct"] for r in records), "of": len(records), "drift": sum(values) / len(values)}

    Stage(f"retention-{method.name}", config.settings(*SETTINGS), [adapter, *base_files],
          [run.retention(method.name), run.retention(f"{method.name}.drift")]).run(run, work)


def replay_replies(run: RunDir, config: RunConfig, backend_for: BackendFor) -> None:
    """The base model's greedy replies to the replay prompts, in replay.jsonl (train.replay=self)."""
    prompts = read_prompts(config.train.replay_prompts)

    def work():
        with BatchStore(run.batches("replay")) as store:
            records = greedy_replies(backend_for(None), prompts, config.synth.max_answer_tokens,
                                     config.synth.batch_size, store, "replay: base replies")
        write_jsonl(run.replay, records)
        return {"replies": len(records)}

    Stage("replay", config.settings("model.name", "model.dtype", "synth.max_answer_tokens", "synth.batch_size"), [],
          [run.replay], extra={"prompts": content_key(prompts)}).run(run, work)


def replay_examples(run: RunDir, tokenizer) -> list:
    """replay.jsonl as training examples, their teacher the base model on the same tokens."""
    return reply_examples(tokenizer, read_jsonl(run.replay))


def summary(run: RunDir, method: str, resamples: int, seed: int) -> dict | None:
    """Retention (%) and drift of a method with 95% bootstrap intervals, once its stage has run."""
    if not (run.retention(method).is_file() and run.retention(f"{method}.drift").is_file()):
        return None
    kept = [100.0 * r["correct"] for r in read_jsonl(run.retention(method))]
    values = [r["kl"] for r in read_jsonl(run.retention(f"{method}.drift"))]
    result = {"retention": None, "retention_interval": None, "known": len(kept),
              "general_questions": len(read_jsonl(run.retention("base"))),
              "drift": sum(values) / len(values), "drift_interval": list(bootstrap_interval(values, resamples=resamples,
                                                                                          seed=seed))}
    if kept:  # a base model that answers no general question leaves retention undefined
        result["retention"] = sum(kept) / len(kept)
        result["retention_interval"] = list(bootstrap_interval(kept, resamples=resamples, seed=seed))
    return result


def kept_by_question(run: RunDir, method: str) -> dict[str, float]:
    """1/0 per general question the base model knew: whether `method` still answers it."""
    return {r["id"]: float(r["correct"]) for r in read_jsonl(run.retention(method))}
