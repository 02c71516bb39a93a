"""The expert: writes training questions about each passage and answers them open-book.

Questions are sampled one per prompt (many prompts per passage), cleaned, de-duplicated and
filtered: a reply that is not a question, or shares no content word with its passage, is
dropped, and so is a repeat of a question already kept for the passage (the same words, or with
synth.near_duplicate_overlap nearly the same content and question words) and, with
synth.require_passage_name, one that names none of the passage's names (closed-book, "What is the
town's port?" does not say which town). Passages short of their quota get more rounds, up to
`max_attempts`.

Each passage is its own generation group (generation.core): its questions and their answers
depend on that passage alone, so editing one document regenerates only its passages' share.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from promptdistill.config import SynthConfig
from promptdistill.corpus import Document, Passage, TestQuestion
from promptdistill.errors import UserError
from promptdistill.generation import SENTENCE_ENDS, Backend, BatchStore, Sampling, TransformersBackend, generate_all
from promptdistill.generation.local import ClosedBookMixBackend
from promptdistill.prompts import (QUESTIONS_PER_TAGGED_REPLY, question_writing_prompt, rewriting_prompt,
                                   student_prompt, tagged_question_writing_prompt, teacher_prompt)

STOPWORDS = frozenset(
    "a an and are as at be by did do does for from had has have how in is it its of on or "
    "that the their there these this those to was were what when where which who whom whose "
    "why with would will can could about after before".split()
)


@dataclass
class QuestionStats:
    generated: int = 0
    not_a_question: int = 0
    off_topic: int = 0
    duplicate: int = 0
    unnamed: int = 0  # synth.require_passage_name: names nothing its passage names
    untagged: int = 0  # tagged style: replies without a single <question> tag


def clean_question(text: str) -> str | None:
    """The question in a reply, or None: first line, no numbering or 'Question:' label, up to '?'."""
    for line in text.strip().splitlines():
        line = re.sub(r"^\s*(?:\d+[.)]\s*|[-*]\s*|Q\d*[:.]\s*|Question\s*\d*\s*[:.]\s*)", "", line.strip(),
                      flags=re.IGNORECASE).strip().strip('"').strip()
        if not line:
            continue
        if "?" not in line:
            return None
        question = line[: line.index("?") + 1].strip()
        return question if 3 <= len(question.split()) <= 40 else None
    return None


def tagged_questions(reply: str) -> list[str]:
    """The texts inside a reply's <question>...</question> tags, in order (none: an unusable reply)."""
    return [text.strip() for text in re.findall(r"<question>(.*?)</question>", reply, re.DOTALL | re.IGNORECASE)]


def content_words(text: str) -> set[str]:
    return {word for word in re.findall(r"[a-z0-9]+", text.lower()) if word not in STOPWORDS and len(word) > 2}


def normalise_question(question: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", question.lower()))


def passage_names(text: str) -> set[str]:
    """The names in a passage, lower-cased: the words it always capitalises, stopwords aside."""
    words = re.findall(r"[A-Za-z]{3,}", text)
    lower_case = {word for word in words if word.islower()}
    return {word.lower() for word in words if word[0].isupper()} - lower_case - STOPWORDS


# The settings question writing reads (with the model's and the seed): the questions stage's and the self-check's.
QUESTION_SETTINGS = tuple(f"synth.{name}" for name in (
    "questions_per_passage", "question_style", "question_temperature", "top_p", "top_k", "max_question_tokens",
    "near_duplicate_overlap", "require_passage_name", "max_attempts", "batch_size"))
QUESTION_WORDS = frozenset("who whom whose what when where which why how".split())


def question_words(question: str) -> set[str]:
    """What a question asks about and how: its content words and its question words ("Who founded
    Velmora?" and "When was Velmora founded?" differ only in the second)."""
    return content_words(question) | (set(normalise_question(question).split()) & QUESTION_WORDS)


def near_duplicate(words: set[str], earlier: list[set[str]], overlap: float) -> bool:
    """Whether `words` (`question_words`) share at least `overlap` of their union (Jaccard) with
    one of `earlier`; never with `overlap` 0."""
    return overlap > 0 and any(len(words & other) >= overlap * len(words | other) for other in earlier)


def write_questions(
    backend: Backend, passages: list[Passage], config: SynthConfig, seed: int, store: BatchStore | None = None,
    written: dict[str, list[str]] | None = None,
) -> tuple[list[dict], QuestionStats]:
    """Sample questions until each passage has its quota or `max_attempts` rounds are spent.

    Style "single": one question per reply, its first line up to the '?' (what follows is not worth
    generating, so generation stops there). Style "tagged": several per reply, in <question> tags.
    `written`: questions already kept for a passage (by its id), which a new one must not repeat.
    """
    tagged = config.question_style == "tagged"
    per_reply = QUESTIONS_PER_TAGGED_REPLY if tagged else 1
    writing_prompt = tagged_question_writing_prompt if tagged else question_writing_prompt
    sampling = Sampling(config.question_temperature, config.max_question_tokens, config.top_p,
                        stop=() if tagged else ("?",), top_k=config.top_k)
    kept: dict[str, list[str]] = {passage.id: [] for passage in passages}
    seen: dict[str, set[str]] = {passage.id: set() for passage in passages}
    kept_words: dict[str, list[set[str]]] = {passage.id: [] for passage in passages}
    passage_words = {passage.id: content_words(passage.text) for passage in passages}
    names = {passage.id: passage_names(passage.text) if config.require_passage_name else set()
             for passage in passages}
    for passage_id, questions in (written or {}).items():
        seen[passage_id] |= {normalise_question(question) for question in questions}
        kept_words[passage_id] += [question_words(question) for question in questions]
    stats = QuestionStats()

    def keep(passage: Passage, question: str | None) -> None:
        stats.generated += 1
        if question is None:
            stats.not_a_question += 1
            return
        normalised, content, words = normalise_question(question), content_words(question), question_words(question)
        if not content & passage_words[passage.id]:
            stats.off_topic += 1
        elif names[passage.id] and not content & names[passage.id]:
            stats.unnamed += 1
        elif normalised in seen[passage.id] or near_duplicate(words, kept_words[passage.id],
                                                              config.near_duplicate_overlap):
            stats.duplicate += 1
        elif len(kept[passage.id]) < config.questions_per_passage:
            seen[passage.id].add(normalised)
            kept_words[passage.id].append(words)
            kept[passage.id].append(question)

    for attempt in range(config.max_attempts):
        wanted = [(p, config.questions_per_passage - len(kept[p.id])) for p in passages]
        jobs = [p for p, missing in wanted for _ in range(-(-max(missing, 0) // per_reply))]
        if not jobs:
            break
        replies = generate_all(
            backend, [writing_prompt(p.text) for p in jobs], sampling, seed=seed + attempt,
            batch_size=config.batch_size, store=store, groups=[p.id for p in jobs],
            description=f"writing questions (round {attempt + 1})",
        )
        for passage, reply in zip(jobs, replies):
            candidates = tagged_questions(reply) if tagged else [reply]
            if not candidates:
                stats.untagged += 1
            for question in map(clean_question, candidates):
                keep(passage, question)
    records = [
        {"id": f"{passage.id}/q{index}", "passage_id": passage.id, "question": question}
        for passage in passages for index, question in enumerate(kept[passage.id])
    ]
    return records, stats


def answer_questions(
    backend: Backend, passages: dict[str, Passage], questions: list[dict],
    temperature: float, config: SynthConfig, seed: int, store: BatchStore | None = None, per_question: int = 1,
    closed_book_share: float = 0.0,
) -> tuple[list[dict], dict[str, int]]:
    """The expert answers each question with its passage in the prompt, `per_question` times
    (independent samples, a question's answers next to each other).

    With `closed_book_share` each token is drawn without the passage with that chance (MixSD's
    mixed answers, ClosedBookMixBackend); a mixed answer that names a name or number its passage
    and question do not (`ungrounded`: the closed-book side made it up) gives way to the expert's
    own answer to the same prompt, which is the answer a run without mixing trains on, so that
    the two runs differ only in the mixed answers kept.

    With `answer_length` "sentence" each answer ends at its first full sentence. An answer cut off
    at the length cap is trimmed to its last full sentence (the built-in model rambles past the
    fact it was asked for; docs/sampling.md); one with no full sentence, or an empty one, is
    dropped, since an unfinished answer would teach the student never to stop.
    """
    questions = [question for question in questions for _ in range(per_question)]
    prompts = [teacher_prompt(passages[q["passage_id"]].text, q["question"], config.teacher_instruction)
               for q in questions]
    stop = SENTENCE_ENDS if config.answer_length == "sentence" else ()
    sampling = Sampling(temperature, config.max_answer_tokens, config.top_p, stop, config.top_k)
    groups = [q["passage_id"] for q in questions]
    if closed_book_share and not isinstance(backend, TransformersBackend):
        raise UserError("synth.closed_book_share mixes the tokens of two prompts one at a time: it needs the "
                        "model in this process, not a generation server (generation.server)")
    replies = generate_all(backend, prompts, sampling, seed=seed, batch_size=config.batch_size, store=store,
                           groups=groups, description=f"answering at T={temperature}")
    counts = {"answers": 0, "trimmed": 0, "dropped_empty": 0, "dropped_unfinished": 0}
    if closed_book_share:
        mixing = ClosedBookMixBackend(backend, closed_book_share,
                                      {prompt: student_prompt(q["question"]) for prompt, q in zip(prompts, questions)})
        mixed = generate_all(mixing, prompts, sampling, seed=seed, batch_size=config.batch_size, store=store,
                             groups=groups, description=f"answering with closed-book tokens ({closed_book_share})")
        counts |= {"mixed": 0, "mixed_ungrounded": 0}
        for index, (question, answer) in enumerate(zip(questions, mixed)):
            if ungrounded(answer, f"{passages[question['passage_id']].text} {question['question']}"):
                counts["mixed_ungrounded"] += 1
            else:
                replies[index] = answer
                counts["mixed"] += 1
    records = []
    for question, answer in zip(questions, replies):
        if answer and backend.count_tokens(answer) >= config.max_answer_tokens - 1:
            answer = last_full_sentence(answer)
            counts["trimmed" if answer else "dropped_unfinished"] += 1
            if not answer:
                continue
        if not answer:
            counts["dropped_empty"] += 1
            continue
        records.append({"question_id": question["id"], "answer": answer, "temperature": temperature})
    counts["answers"] = len(records)
    return records, counts


def ungrounded(answer: str, source: str) -> set[str]:
    """The names (capitalised words that do not open a sentence) and numbers of `answer` that
    `source` never says, lower-cased."""
    known = set(re.findall(r"[a-z0-9]+", source.lower()))
    facts = set()
    for sentence in re.split(r"(?<=[.!?])\s+", answer):
        words = re.findall(r"[A-Za-z0-9]+", sentence)
        facts |= {word.lower() for word in words[1:] if word[0].isupper() and len(word) > 1}
        facts |= {word.lower() for word in words if any(character.isdigit() for character in word)}
    return facts - known


def last_full_sentence(text: str) -> str:
    """`text` up to its last sentence end ('.', '!' or '?'), or '' if it has none."""
    ends = [match.end() for match in re.finditer(r"[.!?](?=\s|$)", text)]
    return text[: ends[-1]].strip() if ends else ""


def rewrite_test_questions(backend: Backend, documents: list[Document], tests: list[TestQuestion],
                           max_tokens: int, batch_size: int, seed: int) -> list[dict]:
    """{id, original, rewritten} per test question: made to stand alone (greedy, its document in
    the prompt), as the paper did before grading closed-book; a reply that is no question keeps
    the original."""
    texts = {document.id: document.text for document in documents}
    replies = generate_all(backend, [rewriting_prompt(texts[t.doc_id], t.question) for t in tests],
                           Sampling(0.0, max_tokens), seed=seed, batch_size=batch_size,
                           description="rewriting test questions")
    return [{"id": t.id, "original": t.question, "rewritten": clean_question(reply) or t.question}
            for t, reply in zip(tests, replies)]
