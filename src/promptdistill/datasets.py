"""Readers for the paper's datasets: SquadShifts, the paper's evaluation CSVs, HotpotQA.

Every reader returns `(documents, test_questions)` as `Document` and `TestQuestion` from
`promptdistill.corpus`, ready for the pipeline. `limit` keeps the first N test questions in
file order (None keeps all); the paper used the first 1,000. A bad file, subset or record raises
`UserError` naming the file and the record.

SquadShifts (subsets new_wiki, nyt, reddit, amazon)
    A local file in the SQuAD v1 JSON layout ({"data": [{"title", "paragraphs": [{"context",
    "qas": [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}), or a folder holding
    new_wiki_v1.0.json, nyt_v1.0.json (or the rebuilt nyt_v1.0_from_bigbench.json), reddit_v1.0.json
    or amazon_reviews_v1.0.json; without a source, the Hugging Face hub. Titles, contexts,
    questions and answers are stripped as the hub's loader does, so both sources give the same
    result. The cut is by question: the paragraph of the N-th question is kept even when later
    questions about it are not. One document per paragraph, with id SUBSET-ARTICLE-PARAGRAPH (the
    indices count as the paragraphs appear in question order, which the hub's flat rows also
    give); every accepted answer is kept, de-duplicated in order.

The paper's evaluation CSVs (paper_eval/)
    SUBSET.csv: one test question a line, no header, ';'-separated and never quoted:
    `question;['answer', ...];passage`. The answer list is a Python list literal of the accepted
    answers (duplicates included); the passage is the SquadShifts context of the question. The
    rows are the first 1,000 questions of the subset in file order. Since ';' also stands inside
    questions, answers and passages, a line is not split on ';': the answer list is the first
    span from ';[' to '];' that `ast.literal_eval` reads as a list of strings. Python's string
    repr keeps a span that ends inside an answer from parsing, so the first span that parses
    is the list itself. Rows with the same passage share one document, with id
    paper-SUBSET-INDEX (by first appearance); a test question's id is paper-SUBSET-LINE.
    Passages are kept as the file has them: in new_wiki the CSV dropped the newlines inside
    11 contexts, gluing words ("Armenian\\nreligious" became "Armenianreligious"), and amazon
    keeps the HTML entities of the original reviews (&#34;).
    SUBSET_filtered.csv: the same questions rewritten by the authors to stand alone without the
    passage, line i for row i of SUBSET.csv. The paper grades closed-book answers to these, so
    they are the default test questions (`rewritten=False` keeps the originals).
    SUBSET_questions.csv: the original questions again, one a line (not needed here).
    These one-column files were written by Python's csv module: a line holding '"' is quoted,
    with inner quotes doubled, and is unquoted on reading.

HotpotQA, distractor setting
    A local JSON list in the Hugging Face layout ({"question", "answer", "supporting_facts":
    {"title", "sent_id"}, "context": {"title", "sentences"}}, as in shared/data) or the official
    one (hotpot_dev_distractor_v1.json: "_id", "context": [[title, sentences]],
    "supporting_facts": [[title, sent_id]]), or the hub. Every context paragraph, gold or
    distractor, becomes a document "TITLE\\nTEXT" (sentences joined as given: they carry their
    own leading spaces), paragraphs identical in title and text shared across questions; ids are
    hotpotqa-INDEX by first appearance. Limitation: a TestQuestion has one doc_id, so a multi-hop
    question points at the paragraph of its first supporting fact only, although answering it
    needs two.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

from promptdistill.config import DatasetConfig
from promptdistill.corpus import Document, TestQuestion
from promptdistill.errors import UserError, check_choice
from promptdistill.files import read_text

Corpus = tuple[list[Document], list[TestQuestion]]

DEFAULT_LIMIT = 1000

# Local file names per subset, the preferred first: the rebuilt NYT file stands in for the
# original, which no snapshot holds (see shared/data/SOURCES.md).
SQUADSHIFTS_FILES = {
    "new_wiki": ("new_wiki_v1.0.json",),
    "nyt": ("nyt_v1.0.json", "nyt_v1.0_from_bigbench.json"),
    "reddit": ("reddit_v1.0.json",),
    "amazon": ("amazon_reviews_v1.0.json",),
}
PAPER_SUBSETS = ("nyt", "amazon", "new_wiki", "reddit")
HOTPOTQA_FILE = "hotpot_dev_distractor_v1.json"
SQUADSHIFTS_HUB = "squadshifts"
HOTPOTQA_HUB = "hotpotqa/hotpot_qa"


def load_dataset_spec(spec: str, data_dir: Path | None = None, limit: int | None = DEFAULT_LIMIT) -> Corpus:
    """Read "squadshifts:SUBSET", "paper:SUBSET" (rewritten questions), "paper:SUBSET:original"
    or "hotpotqa". `data_dir` is searched, subfolders included, for the dataset's files; without
    it SquadShifts and HotpotQA come from the Hugging Face hub."""
    family, _, rest = spec.partition(":")
    if family == "squadshifts":
        return read_squadshifts(rest, data_dir, limit)
    if family == "paper":
        subset, _, variant = rest.partition(":")
        if variant not in ("", "original"):
            raise UserError(f"dataset {spec!r}: expected paper:SUBSET or paper:SUBSET:original")
        if data_dir is None:
            raise UserError(f"dataset {spec!r}: the paper's CSVs are local files; give the folder that holds them")
        return read_paper_eval(subset, data_dir, limit, rewritten=variant != "original")
    if family == "hotpotqa" and not rest:
        return read_hotpotqa(data_dir, limit)
    raise UserError(f"unknown dataset {spec!r}: expected squadshifts:SUBSET, paper:SUBSET[:original] or hotpotqa")


def load_cut_dataset(config: DatasetConfig, data_dir: Path | None) -> Corpus:
    """`config.spec` read and cut as configured: the first `limit_questions` test questions, then
    the first `limit_passages` documents (0: all) and only the test questions about them."""
    documents, tests = load_dataset_spec(config.spec, data_dir, config.limit_questions)
    if config.limit_passages:
        documents = documents[:config.limit_passages]
        kept = {document.id for document in documents}
        tests = [test for test in tests if test.doc_id in kept]
    return documents, tests


def carries_rewritten_questions(spec: str) -> bool:
    """The paper's CSVs already hold its stand-alone rewrites of the test questions."""
    return spec.startswith("paper:") and not spec.endswith(":original")


# SquadShifts


class _SquadRow(NamedTuple):
    """One question as the hub gives it: flat, with its paragraph and title repeated."""

    title: str
    context: str
    question: str
    id: str
    answers: list[str]
    where: str


def read_squadshifts(subset: str, source: Path | None = None, limit: int | None = DEFAULT_LIMIT) -> Corpus:
    """The first `limit` questions of a SquadShifts subset and the paragraphs they are about.

    `source` is a SQuAD-layout JSON file or a folder holding the subset's file; None reads the hub.
    """
    check_choice("SquadShifts subset", subset, tuple(SQUADSHIFTS_FILES))
    _check_limit(limit)
    if source is None:
        origin, rows = f"{SQUADSHIFTS_HUB} {subset}", _squadshifts_hub_rows(subset)
    else:
        path = _find_file(source, SQUADSHIFTS_FILES[subset])
        origin, rows = str(path), _squad_file_rows(path)
    return _nonempty(_squad_corpus(rows, subset, limit), origin)


def _squadshifts_hub_rows(subset: str) -> Iterator[_SquadRow]:
    from datasets import load_dataset  # optional dependency, only for reading from the hub

    for index, row in enumerate(load_dataset(SQUADSHIFTS_HUB, subset, split="test")):
        yield _SquadRow(
            row["title"], row["context"], row["question"], row["id"], row["answers"]["text"],
            where=f"{SQUADSHIFTS_HUB} {subset} row {index}",
        )


def _squad_file_rows(path: Path) -> Iterator[_SquadRow]:
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise UserError(f"{path}: not a SQuAD file (no top-level 'data' list)")
    for a, article in enumerate(data["data"]):
        where = f"{path}: data[{a}]"
        paragraphs = _field(article, "paragraphs", list, where)
        title = str(article.get("title", ""))
        for p, paragraph in enumerate(paragraphs):
            where_paragraph = f"{where}.paragraphs[{p}]"
            context = _field(paragraph, "context", str, where_paragraph)
            for q, qa in enumerate(_field(paragraph, "qas", list, where_paragraph)):
                where_qa = f"{where_paragraph}.qas[{q}]"
                answers = [
                    _field(answer, "text", str, f"{where_qa}.answers[{k}]")
                    for k, answer in enumerate(_field(qa, "answers", list, where_qa))
                ]
                yield _SquadRow(
                    title.strip(), context.strip(), _field(qa, "question", str, where_qa).strip(),
                    _field(qa, "id", str, where_qa), answers, where_qa,
                )


def _squad_corpus(rows: Iterable[_SquadRow], subset: str, limit: int | None) -> Corpus:
    documents: list[Document] = []
    tests: list[TestQuestion] = []
    article = paragraph = -1
    title = context = None
    for row in rows:
        if not row.context:
            raise UserError(f"{row.where}: empty context")
        if not row.question:
            raise UserError(f"{row.where}: empty question")
        # Questions come grouped by paragraph and paragraphs by article, so a change of title
        # or context starts the next one.
        if row.title != title:
            article, paragraph, title, context = article + 1, -1, row.title, None
        if row.context != context:
            paragraph, context = paragraph + 1, row.context
            documents.append(Document(id=f"{subset}-{article}-{paragraph}", text=row.context))
        answers = _unique(row.answers)
        if not answers:
            raise UserError(f"{row.where}: question {row.id!r} has no answers")
        tests.append(TestQuestion(id=row.id, question=row.question, answers=answers, doc_id=documents[-1].id))
        if len(tests) == limit:  # stop before reading (and checking) the next row
            break
    return documents, tests


# The paper's evaluation CSVs


def read_paper_eval(
    subset: str, source: Path, limit: int | None = DEFAULT_LIMIT, rewritten: bool = True
) -> Corpus:
    """The paper's test questions for a subset, from SUBSET.csv (and SUBSET_filtered.csv).

    `source` is the folder holding the CSVs (subfolders searched) or SUBSET.csv itself.
    `rewritten` replaces each question by its stand-alone rewrite, as the paper graded them.
    """
    check_choice("paper evaluation subset", subset, PAPER_SUBSETS)
    _check_limit(limit)
    path = _find_file(source, (f"{subset}.csv",))
    rows = _lines(path)[:limit]
    if rewritten:
        rewrites_path = path.with_name(f"{subset}_filtered.csv")
        if not rewrites_path.is_file():
            raise UserError(f"{rewrites_path}: file not found (the rewritten questions; "
                            f"use paper:{subset}:original for the original ones)")
        rewrites = [_unquote(line) for line in _lines(rewrites_path)]
        if len(rewrites) < len(rows):
            raise UserError(f"{rewrites_path}: {len(rewrites)} questions for the {len(rows)} rows of {path}")
    documents: dict[str, Document] = {}
    tests = []
    for index, line in enumerate(rows):
        number = index + 1
        fields = _split_paper_row(line)
        if fields is None:
            raise UserError(f"{path}:{number}: expected question;['answer', ...];passage")
        question, answers, passage = (fields[0].strip(), _unique(fields[1]), fields[2].strip())
        if not question or not answers or not passage:
            raise UserError(f"{path}:{number}: empty question, answer list or passage")
        if rewritten:
            question = rewrites[index].strip()
            if not question:
                raise UserError(f"{rewrites_path}:{number}: empty question")
        document = documents.setdefault(passage, Document(id=f"paper-{subset}-{len(documents)}", text=passage))
        tests.append(TestQuestion(
            id=f"paper-{subset}-{number}", question=question, answers=answers, doc_id=document.id,
        ))
    return _nonempty((list(documents.values()), tests), str(path))


def _split_paper_row(line: str) -> tuple[str, list[str], str] | None:
    """(question, answers, passage): the answer list is the first ';[' ... '];' span that parses."""
    start = line.find(";[")
    while start != -1:
        end = line.find("];", start)
        while end != -1:
            try:
                answers = ast.literal_eval(line[start + 1 : end + 1])
            except (ValueError, SyntaxError):
                answers = None
            if isinstance(answers, list) and all(isinstance(answer, str) for answer in answers):
                return line[:start], answers, line[end + 2 :]
            end = line.find("];", end + 1)
        start = line.find(";[", start + 1)
    return None


def _unquote(line: str) -> str:
    """One CSV field as Python's csv module writes it: quoted, inner quotes doubled, if it holds '"'."""
    if len(line) >= 2 and line.startswith('"') and line.endswith('"'):
        return line[1:-1].replace('""', '"')
    return line


def _lines(path: Path) -> list[str]:
    # Split on '\n' only: str.splitlines() would also break at characters such as U+2028 that
    # can stand inside a passage. The rewritten-question files end lines with '\r\n'.
    lines = [line.removesuffix("\r") for line in read_text(path).split("\n")]
    return lines[:-1] if lines and not lines[-1] else lines


# HotpotQA


def read_hotpotqa(source: Path | None = None, limit: int | None = DEFAULT_LIMIT) -> Corpus:
    """The first `limit` HotpotQA distractor questions and all their context paragraphs.

    `source` is a JSON file (or a folder holding hotpot_dev_distractor_v1.json); None reads the
    hub's validation split.
    """
    _check_limit(limit)
    if source is None:
        from datasets import load_dataset  # optional dependency, only for reading from the hub

        records: Iterable[Any] = load_dataset(HOTPOTQA_HUB, "distractor", split="validation")
        origin = f"{HOTPOTQA_HUB} distractor validation"
    else:
        path = _find_file(source, (HOTPOTQA_FILE,))
        records = _read_json(path)
        origin = str(path)
        if not isinstance(records, list):
            raise UserError(f"{path}: expected a JSON list of questions")
    documents: dict[tuple[str, str], Document] = {}
    tests = []
    for index, record in enumerate(records):
        if limit is not None and index == limit:
            break
        where = f"{origin}: question {index}"
        question = _field(record, "question", str, where).strip()
        answer = _field(record, "answer", str, where).strip()
        if not question or not answer:
            raise UserError(f"{where}: empty question or answer")
        paragraphs, gold_title = _hotpot_paragraphs(record, where)
        doc_ids = {}
        for title, text in paragraphs:
            document = documents.setdefault(
                (title, text), Document(id=f"hotpotqa-{len(documents)}", text=f"{title}\n{text}"),
            )
            doc_ids.setdefault(title, document.id)
        if gold_title not in doc_ids:
            raise UserError(f"{where}: supporting title {gold_title!r} is not among its context paragraphs")
        question_id = record.get("id") or record.get("_id") or f"hotpotqa-q{index}"
        tests.append(TestQuestion(id=str(question_id), question=question, answers=[answer], doc_id=doc_ids[gold_title]))
    return _nonempty((list(documents.values()), tests), origin)


def _hotpot_paragraphs(record: dict, where: str) -> tuple[list[tuple[str, str]], str]:
    """The (title, text) context paragraphs and the first supporting title, from either layout."""
    context, facts = record.get("context"), record.get("supporting_facts")
    try:
        if isinstance(context, dict):  # Hugging Face: parallel lists
            pairs = list(zip(context["title"], context["sentences"], strict=True))
            gold_title = facts["title"][0]
        else:  # the official file: [title, sentences] and [title, sentence index] pairs
            pairs = [(title, sentences) for title, sentences in context]
            gold_title = facts[0][0]
        paragraphs = [(title.strip(), "".join(sentences).strip()) for title, sentences in pairs]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        raise UserError(f"{where}: 'context' or 'supporting_facts' is not in HotpotQA layout") from None
    if not paragraphs or not all(title and text for title, text in paragraphs):
        raise UserError(f"{where}: no context paragraphs, or one with an empty title or text")
    return paragraphs, str(gold_title).strip()


# Shared helpers


def _find_file(source: Path, names: tuple[str, ...]) -> Path:
    """`source` if it is a file; in a folder, the shallowest file with one of `names`, the
    earlier name first (so a folder's own copy wins over one in a subfolder)."""
    source = Path(source)
    if source.is_file():
        return source
    if not source.is_dir():
        raise UserError(f"{source}: no such file or folder")
    found = [
        (len(path.relative_to(source).parts), rank, path)
        for rank, name in enumerate(names)
        for path in source.rglob(name)
        if path.is_file()
    ]
    if not found:
        raise UserError(f"{source}: no {' or '.join(names)} in this folder or below")
    return min(found)[2]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise UserError(f"{path}:{error.lineno}: malformed JSON: {error.msg}") from None


def _field(record: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if key not in record:
        raise UserError(f"{where}: missing field {key!r}")
    if not isinstance(record[key], kind):
        raise UserError(f"{where}: field {key!r} must be a {kind.__name__}, got {type(record[key]).__name__}")
    return record[key]


def _unique(answers: Iterable[str]) -> list[str]:
    """Stripped, non-empty answers, each once, in their first order."""
    return list(dict.fromkeys(answer.strip() for answer in answers if answer.strip()))


def _nonempty(corpus: Corpus, origin: str) -> Corpus:
    if not corpus[1]:
        raise UserError(f"{origin}: no questions")
    return corpus


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise UserError(f"limit must be a positive number of questions, got {limit}")
