"""An LLM judge of answers, and its agreement with containment grading.

Two styles (eval.judge_style), both reading only an exact verdict, so that anything else is
unparseable (None), never quietly a pass or a fail, and words such as "correct" in the reasoning
(or in a proposed answer the judge quotes) cannot decide it:
  verdict   zero-shot; the judge reasons briefly and ends with "Verdict: correct" or "Verdict:
            incorrect" alone on its last line (ours, the default);
  few-shot  the official code's format: three worked examples, then reasoning in <reasoning> tags
            and the grade in <grade>true</grade> or <grade>false</grade> (our wording and
            examples; the official parser also accepts "true" anywhere in the reply, ours only
            the last grade tag).

The judge runs on any generation Backend (generation.make_backend): a local model or an
OpenAI-compatible chat-completions server. Its stage, judge-METHOD (after evaluate-METHOD),
writes a verdict per graded reply.
"""

from __future__ import annotations

import dataclasses
import re

from promptdistill.config import RunConfig
from promptdistill.files import read_jsonl, write_jsonl
from promptdistill.generation import Backend, BatchStore, Sampling, generate_all, make_backend
from promptdistill.rundir import RunDir, Stage

# "Verdict: correct", any case, optionally in markdown bold (around the line, the label or the
# word) and with a final period.
_VERDICT_LINE = re.compile(
    r"(?:\*\*)?\s*verdict\s*:\s*(?:\*\*)?\s*(correct|incorrect)\s*(?:\*\*)?\s*\.?\s*(?:\*\*)?",
    re.IGNORECASE,
)


def judge_prompt(question: str, answers: list[str], proposed: str) -> str:
    """The judge's user turn for one proposed answer."""
    accepted = "\n".join(f"- {answer}" for answer in answers)
    return (
        "Decide whether a proposed answer to a question is correct. It is correct if it states "
        "the same fact as one of the accepted answers, in any wording; it is incorrect if it "
        "states a different fact, contradicts them, or does not answer.\n\n"
        f"Question: {question}\n\n"
        f"Accepted answers:\n{accepted}\n\n"
        f"Proposed answer: {proposed}\n\n"
        "Reason in one or two sentences, then write your verdict alone on the last line, "
        'exactly "Verdict: correct" or "Verdict: incorrect".'
    )


_EXAMPLES = (
    ("In which year did the Velmora lighthouse first shine?", ["1623"],
     "The lighthouse was first lit in 1623, the year the town was founded.",
     "The accepted answer is 1623 and the proposed answer gives 1623.", "true"),
    ("Who painted the harbour mural in Velmora?", ["Lisandre Quellow", "Quellow"],
     "The mural was painted by Tobin Quarrel, the town's founder.",
     "The accepted answers name Lisandre Quellow; the proposed answer names someone else.", "false"),
    ("Which colours are the Velmora ferries painted in?", ["saffron and white", "saffron"],
     "They are saffron, with a white stripe along the hull and blue railings.",
     "Saffron is accepted, and the extra details do not contradict it.", "true"),
)


def few_shot_judge_prompt(question: str, answers: list[str], proposed: str) -> str:
    """The judge's user turn in the official code's format: worked examples, then the case."""
    def case(question: str, answers: list[str], proposed: str) -> str:
        return f"Question: {question}\nAccepted answers: {answers}\nProposed answer: {proposed}\n"

    examples = "\n".join(
        f"Example {number}:\n{case(q, a, p)}Output:\n<reasoning>{why}</reasoning>\n<grade>{grade}</grade>\n"
        for number, (q, a, p, why, grade) in enumerate(_EXAMPLES, start=1))
    return (
        "Grade a proposed answer to a question against the list of accepted answers. The grade is true "
        "if the proposed answer agrees with any accepted answer, false otherwise. Write your reasoning in "
        "<reasoning> tags and the grade in <grade> tags, as in these examples.\n\n"
        f"{examples}\nNow grade this one:\n{case(question, answers, proposed)}Output:"
    )


def parse_grade_tag(text: str) -> bool | None:
    """True or False from the reply's last <grade>true|false</grade>; None without one."""
    grades = re.findall(r"<grade>\s*(true|false)\s*</grade>", text, re.IGNORECASE)
    return grades[-1].lower() == "true" if grades else None


def parse_verdict(text: str) -> bool | None:
    """True or False from the last non-empty line's verdict; None if that line is not one."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    match = _VERDICT_LINE.fullmatch(lines[-1])
    if match is None:
        return None
    return match.group(1).lower() == "correct"


def judge_backend(config: RunConfig) -> Backend:
    """The judge (eval.judge): a model as --model takes, or the model at eval.judge_url."""
    settings = config.eval
    return make_backend(dataclasses.replace(config.model, name=settings.judge), server_url=settings.judge_url,
                        api_key_env=settings.judge_api_key_env, max_concurrency=config.generation.max_concurrency,
                        max_retries=config.generation.max_retries)


JUDGE_STYLES = {"verdict": (judge_prompt, parse_verdict), "few-shot": (few_shot_judge_prompt, parse_grade_tag)}


def judge_all(
    backend: Backend, records: list[dict], max_new_tokens: int = 256,
    batch_size: int = 8, store: BatchStore | None = None, style: str = "verdict",
) -> list[bool | None]:
    """Greedy verdicts on records with "question", "answers" and "reply" (evaluate.grade_all's).

    A reply cut off by `max_new_tokens` before its verdict is unparseable.
    """
    make_prompt, parse = JUDGE_STYLES[style]
    prompts = [make_prompt(r["question"], r["answers"], r["reply"]) for r in records]
    replies = generate_all(backend, prompts, Sampling(0.0, max_new_tokens), seed=0,
                           batch_size=batch_size, store=store, description="judging")
    return [parse(reply) for reply in replies]


def judge_replies(run: RunDir, config: RunConfig, method: str, question_set: str = "test") -> None:
    """The judge's verdict on each of a method's graded replies (eval/METHOD.jsonl, or the
    self-check's), in METHOD.judge.jsonl beside them: true, false or null (unparseable)."""
    settings, graded, judged = config.eval, run.eval(method, question_set), run.judged(method, question_set)
    name = f"{'' if question_set == 'test' else 'self-check-'}judge-{method}"

    def work():
        records = read_jsonl(graded)
        with BatchStore(run.batches(name)) as store:
            verdicts = judge_all(judge_backend(config), records, settings.judge_max_tokens, settings.batch_size, store,
                                 settings.judge_style)
        write_jsonl(judged, [{"id": r["id"], "judge": v} for r, v in zip(records, verdicts)])
        return {"judged": len(verdicts), "unparseable": sum(v is None for v in verdicts)}

    stage_settings = config.settings("eval.judge", "eval.judge_url", "eval.judge_max_tokens", "eval.judge_style",
                                     "model.dtype")
    Stage(name, stage_settings, [graded], [judged]).run(run, work)


def agreement(judge_verdicts: list[bool | None], contains_grades: list[float | bool]) -> dict:
    """How often the judge and containment grading agree, counting only parseable verdicts.

    judge_only: the judge accepts what containment rejects (a paraphrase, or a lenient judge);
    contains_only: containment accepts what the judge rejects (say, the answer among others).
    """
    if len(judge_verdicts) != len(contains_grades):
        raise ValueError(f"{len(judge_verdicts)} verdicts but {len(contains_grades)} grades")
    pairs = [(verdict, bool(grade)) for verdict, grade in zip(judge_verdicts, contains_grades)
             if verdict is not None]
    counts = {
        "both_true": sum(v and g for v, g in pairs),
        "both_false": sum(not v and not g for v, g in pairs),
        "judge_only": sum(v and not g for v, g in pairs),
        "contains_only": sum(not v and g for v, g in pairs),
    }
    parseable = len(pairs)
    return {
        **counts,
        "disagreements": counts["judge_only"] + counts["contains_only"],
        "unparseable": len(judge_verdicts) - parseable,
        "parseable": parseable,
        "agreement": (counts["both_true"] + counts["both_false"]) / parseable if parseable else None,
    }
