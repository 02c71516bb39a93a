"""The self-check: how much of the documents a method learned, without anyone's test questions.

When the expert has written a passage's training questions it writes a few more
(synth.self_check_share of all its questions about the passage, at least one), which must not
repeat a training question; they never reach training answers or training. The teacher (the
base model with the passage in its prompt) answers each greedily, and its reply is the
reference. The self-check's questions are then test questions like any other (evaluate.py): each
method answers them in its own context (closed-book for base, uft, sft and pd), graded with two
accepted answers, the reference's key span (`key_span`) and the whole reference:

    contains  the reply holds the key span (or the whole reference) as whole words
    f1        the better token F1 against the two
    judge     the LLM judge's verdict with them as the accepted answers (eval.judge)

It estimates, from the model's own questions, how much of what the teacher says with the
passage a method says without it; docs/quality.md compares it with real test questions.

    self-check           passages, questions.jsonl -> self_check/questions.jsonl
    self-check-METHOD    (pipeline.evaluate) -> self_check/METHOD.jsonl
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Callable

from promptdistill import methods
from promptdistill.config import RunConfig
from promptdistill.evaluate import normalise_answer
from promptdistill.files import read_jsonl, write_jsonl
from promptdistill.generation import Backend, BatchStore
from promptdistill.rundir import RunDir, Stage
from promptdistill.synth import QUESTION_SETTINGS, answer_questions, write_questions

log = logging.getLogger(__name__)

SEED_OFFSET = 7919  # its questions are sampled apart from the training questions' rounds (seed + 0, 1, ...)
REFERENCE_SETTINGS = ("synth.self_check_share", "synth.max_answer_tokens", "synth.answer_length",
                      "synth.teacher_instruction")
# Words that answer nothing: they end a key span, as punctuation does.
FUNCTION_WORDS = frozenset("""
    a an the and or but nor so yet of in on at to for from by with into onto over under about after before
    between during through without within than then as is are was were be been being am has have had do does
    did will would can could shall should may might must it its this that these those there here he she they
    them him her his hers their theirs we us our you your i me my who whom whose what when where which why how
    also not no yes very only just still named called known""".split())
PERSON_QUESTION = re.compile(r"^(who|whom|whose)\b")
NUMBER_QUESTION = re.compile(r"^(when|(what|which|in what) (year|date|month|century|age)|how (many|much|long|old|far|"
                             r"tall|high|big|deep|wide|heavy|often))\b")
NUMBER_WORDS = frozenset("""
    one two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty hundred thousand
    million billion first second third fourth fifth dozen half january february march april may june july august
    september october november december""".split())
BackendFor = Callable[[Path | None], Backend]


def questions_per_passage(config: RunConfig) -> int:
    """How many self-check questions to write for each passage (0: no self-check)."""
    share = config.synth.self_check_share
    return max(1, int(config.synth.questions_per_passage * share / (1 - share) + 0.5)) if share else 0


def wanted(config: RunConfig) -> bool:
    """Whether a run has a self-check: it trains a method, and synth.self_check_share is set."""
    return bool(methods.trained(config.methods)) and questions_per_passage(config) > 0


def key_span(reference: str, question: str) -> str:
    """What in a reference answer answers its question: a run of its words that the question does
    not say (in any inflection), broken by punctuation and function words. For a when- or
    how-many-question the first such run with a number or a month, for a who-question the first
    with a name (a capitalised word after the first), otherwise the first with either; else the
    first run. Where every word is the question's, the whole reference.

    "Who founded Velmora?", "Velmora was founded in 1623 by Tobin Quarrel." -> "Tobin Quarrel"
    """
    asked = {_stem(word) for word in normalise_answer(question).split()}
    runs, current = [], []
    for position, token in enumerate(re.findall(r"\d[\d,.]*\d|[\w'’-]+|[^\w\s]", reference)):
        word = normalise_answer(token)
        if word and _stem(word) not in asked and word not in FUNCTION_WORDS:
            current.append((position, token))
        elif current:
            runs.append(current)
            current = []
    runs += [current] if current else []
    if not runs:
        return reference.strip()
    numbers = [run for run in runs if any(any(char.isdigit() for char in token) or token.lower() in NUMBER_WORDS
                                          for _, token in run)]
    names = [run for run in runs if any(position > 0 and token[:1].isupper() for position, token in run)]
    asks = question.strip().lower()
    if NUMBER_QUESTION.match(asks):
        chosen = (numbers or runs)[0]
    elif PERSON_QUESTION.match(asks):
        chosen = (names or runs)[0]
    else:
        chosen = min(names + numbers, key=lambda run: run[0][0], default=runs[0])
    return " ".join(token for _, token in chosen)


def _stem(word: str) -> str:
    """A word without its commonest English endings, so that "blooms" matches "bloom"."""
    for ending in ("ing", "ed", "es", "s"):
        if word.endswith(ending) and len(word) > len(ending) + 2:
            return word[: -len(ending)]
    return word


def write(run: RunDir, config: RunConfig, backend_for: BackendFor) -> None:
    """The self-check's questions and their references, in self_check/questions.jsonl: test
    questions {id, question, answers: [key span, reference], doc_id}, id PASSAGE_ID/sN."""
    per_passage = questions_per_passage(config)

    def work():
        passages = run.load_passages()
        written: dict[str, list[str]] = {}
        for question in read_jsonl(run.questions):
            written.setdefault(question["passage_id"], []).append(question["question"])
        backend = backend_for(None)
        synth = dataclasses.replace(config.synth, questions_per_passage=per_passage)
        with BatchStore(run.batches("self-check-questions")) as store:
            questions, stats = write_questions(backend, passages, synth, config.seed + SEED_OFFSET, store, written)
        by_id = {passage.id: passage for passage in passages}
        with BatchStore(run.batches("self-check-references")) as store:
            references, _ = answer_questions(backend, by_id, questions, 0.0, config.synth, config.seed, store)
        reference_of = {record["question_id"]: record["answer"] for record in references}
        numbered: dict[str, int] = {}
        records = []
        for question in questions:
            reference = reference_of.get(question["id"])
            if reference is None:  # the teacher gave no finished answer
                continue
            passage_id = question["passage_id"]
            number = numbered[passage_id] = numbered.get(passage_id, -1) + 1
            span = key_span(reference, question["question"])
            records.append({"id": f"{passage_id}/s{number}", "question": question["question"],
                            "answers": [span] if normalise_answer(span) == normalise_answer(reference)
                            else [span, reference], "doc_id": by_id[passage_id].doc_id})
        write_jsonl(run.self_check_questions, records)
        if not records:
            log.warning("self-check: the model wrote no usable held-out question; the report has no self-check")
        return {"questions": len(records), "per_passage": per_passage, "no_reference": len(questions) - len(records),
                "duplicate": stats.duplicate}

    settings = config.settings("model.name", "model.dtype", "seed", *QUESTION_SETTINGS, *REFERENCE_SETTINGS)
    Stage("self-check", settings, [run.passages, run.questions], [run.self_check_questions]).run(run, work)
