"""Answer the test questions and grade the answers.

A method's context (methods.py) decides the prompt. Closed-book (base, uft, sft, pd): the
question alone, in the student's prompt. With a context (open-book: the gold passages of the
question's document, the ceiling that distillation aims for; rag and pd+rag: the retrieved
passages), the context goes before the question as in the teacher's prompt. Answers are greedy
by default, so grades do not depend on a sampling seed (the paper samples at 0.25:
eval.answer_temperature).

Grades use SQuAD's normalisation (lower case, no punctuation, no articles, single spaces):
  contains: some accepted answer appears in the reply as a whole run of words (eval.match=words),
            or anywhere in it, as the official code grades (eval.match=substring: '6' is then
            found in '1846');
  em:       the reply equals some accepted answer;
  f1:       the best token F1 against the accepted answers.
"""

from __future__ import annotations

import re
import string
from collections import Counter

from promptdistill.config import EvalConfig
from promptdistill.corpus import Passage, TestQuestion, join_passages
from promptdistill.generation import SENTENCE_ENDS, Backend, BatchStore, Sampling, generate_all
from promptdistill.methods import Context, Method
from promptdistill.prompts import student_prompt, teacher_prompt

METRICS = ("contains", "em", "f1")


def normalise_answer(text: str) -> str:
    """SQuAD v1.1 normalisation."""
    text = text.lower()
    text = "".join(char for char in text if char not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def contains(reply: str, answer: str, match: str = "words") -> bool:
    """Whole-word containment: '6' is not found in '1846', nor 'owl' in 'bowl'; with match
    "substring", plain containment of the normalised texts."""
    reply_words, answer_words = normalise_answer(reply).split(), normalise_answer(answer).split()
    if not answer_words:
        return False
    if match == "substring":
        return " ".join(answer_words) in " ".join(reply_words)
    width = len(answer_words)
    return any(reply_words[i:i + width] == answer_words for i in range(len(reply_words) - width + 1))


def token_f1(reply: str, answer: str) -> float:
    reply_words, answer_words = normalise_answer(reply).split(), normalise_answer(answer).split()
    common = sum((Counter(reply_words) & Counter(answer_words)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(reply_words), common / len(answer_words)
    return 2 * precision * recall / (precision + recall)


def grade(reply: str, answers: list[str], match: str = "words") -> dict[str, float]:
    return {
        "contains": float(any(contains(reply, answer, match) for answer in answers)),
        "em": float(any(normalise_answer(reply) == normalise_answer(answer) for answer in answers)),
        "f1": max(token_f1(reply, answer) for answer in answers),
    }


def gold_context(question: TestQuestion, passages: list[Passage]) -> str:
    """The passages of the question's document, joined: the open-book context."""
    return join_passages([passage for passage in passages if passage.doc_id == question.doc_id])


def answer_questions(
    backend: Backend, questions: list[str], contexts: list[str] | None, config: EvalConfig,
    description: str, store: BatchStore | None = None, teacher_instruction: str = "",
) -> list[str]:
    """Replies (greedy unless eval.answer_temperature), each with its context (one per question)
    in the teacher's prompt when given, closed-book otherwise. Evaluation and `promptdistill ask`
    both answer through here, with the same prompt and decoding."""
    if contexts is None:
        prompts = [student_prompt(question) for question in questions]
    else:
        prompts = [teacher_prompt(context, question, teacher_instruction)
                   for question, context in zip(questions, contexts)]
    stop = SENTENCE_ENDS if config.answer_length == "sentence" else ()
    sampling = Sampling(config.answer_temperature, config.max_answer_tokens, stop=stop)
    return generate_all(backend, prompts, sampling, seed=0,
                        batch_size=config.batch_size, store=store, description=description)


def evaluate_method(backend: Backend, method: Method, tests: list[TestQuestion], passages: list[Passage],
                    config: EvalConfig, store: BatchStore | None = None, teacher_instruction: str = "") -> list[dict]:
    """Graded replies of `backend` (carrying the method's adapter) in the method's context;
    methods that retrieve also record the passages found and whether the gold document was among them."""
    contexts, retrieved = None, None
    if method.context is Context.GOLD:
        contexts = [gold_context(test, passages) for test in tests]
    elif method.context is Context.RETRIEVED:
        from promptdistill.retrieval import make_retriever

        retriever = make_retriever(config, passages)
        retrieved = [retriever.search(test.question, config.rag_k) for test in tests]
        contexts = [join_passages(found) for found in retrieved]
    replies = answer_questions(backend, [test.question for test in tests], contexts, config,
                               f"evaluating {method.name}", store, teacher_instruction)
    records = grade_all(tests, replies, config.match)
    for record, test, found in zip(records, tests, retrieved or []):
        record["retrieved"] = [passage.id for passage in found]
        record["retrieval_hit"] = any(passage.doc_id == test.doc_id for passage in found)
    return records


def grade_all(questions: list[TestQuestion], replies: list[str], match: str = "words") -> list[dict]:
    """Per-question records: the question, the reply and its grades."""
    return [
        {"id": q.id, "question": q.question, "answers": q.answers, "doc_id": q.doc_id,
         "reply": reply, **grade(reply, q.answers, match)}
        for q, reply in zip(questions, replies)
    ]


def summarise(records: list[dict]) -> dict[str, float]:
    """Mean of each metric, in percent."""
    return {metric: 100 * sum(r[metric] for r in records) / len(records) for metric in METRICS}
