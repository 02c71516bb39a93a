"""Documents, passages and test questions.

A document comes from a .txt/.md file (its id is the file name without suffix) or a JSONL line
{"id", "text"}. Passages are consecutive paragraphs of one document packed under a token budget;
their id is DOC_ID#INDEX, stable as long as the document and the budget are.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from promptdistill.errors import UserError
from promptdistill.files import read_numbered_jsonl

DOCUMENT_SUFFIXES = (".txt", ".md")


@dataclass(frozen=True)
class Document:
    id: str
    text: str


@dataclass(frozen=True)
class Passage:
    id: str
    doc_id: str
    text: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TestQuestion:
    id: str
    question: str
    answers: list[str]
    doc_id: str

    def to_dict(self) -> dict:
        return asdict(self)


def read_documents(source: Path) -> list[Document]:
    """Read a folder of .txt/.md files (recursively) or a JSONL file of {"id", "text"}."""
    source = Path(source)
    if not source.exists():
        raise UserError(f"{source}: no such file or folder")
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix in DOCUMENT_SUFFIXES and p.is_file())
        if not files:
            raise UserError(f"{source}: folder has no .txt or .md documents")
        documents = [Document(id=_document_id(path, source), text=read_text_file(path)) for path in files]
    else:
        documents = []
        for number, record in read_numbered_jsonl(source, required=("id", "text")):
            if not isinstance(record["text"], str):
                raise UserError(f"{source}:{number}: field 'text' must be a string")
            documents.append(Document(id=str(record["id"]), text=record["text"]))
        if not documents:
            raise UserError(f"{source}: no documents in file")
    seen: set[str] = set()
    for document in documents:
        if document.id in seen:
            raise UserError(f"{source}: document id {document.id!r} appears twice")
        seen.add(document.id)
    empty = [document.id for document in documents if not document.text.strip()]
    if empty:
        raise UserError(f"{source}: empty document(s): {', '.join(empty)}")
    return documents


def _document_id(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def read_text_file(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def split_passages(
    documents: list[Document], count_tokens: Callable[[str], int], max_tokens: int
) -> list[Passage]:
    """Pack each document's paragraphs into passages of at most `max_tokens` tokens.

    A paragraph longer than the budget is split between sentences; a single sentence longer
    than the budget stays whole (splitting mid-sentence would garble the facts in it).
    """
    passages = []
    for document in documents:
        pieces = []
        for paragraph in re.split(r"\n\s*\n", document.text.strip()):
            paragraph = paragraph.strip()
            if not paragraph:
                continue
            if count_tokens(paragraph) <= max_tokens:
                pieces.append(paragraph)
            else:
                pieces.extend(_pack(re.split(r"(?<=[.!?])\s+", paragraph), count_tokens, max_tokens, " "))
        for index, text in enumerate(_pack(pieces, count_tokens, max_tokens, "\n\n")):
            passages.append(Passage(id=f"{document.id}#{index}", doc_id=document.id, text=text))
    return passages


def _pack(pieces: list[str], count_tokens: Callable[[str], int], max_tokens: int, joiner: str) -> list[str]:
    packed: list[str] = []
    current: list[str] = []
    for piece in pieces:
        if current and count_tokens(joiner.join(current + [piece])) > max_tokens:
            packed.append(joiner.join(current))
            current = []
        current.append(piece)
    if current:
        packed.append(joiner.join(current))
    return packed


def join_passages(passages: list[Passage]) -> str:
    """Several passages as one context (open-book, rag): blank lines between them."""
    return "\n\n".join(passage.text for passage in passages)


def read_test_questions(path: Path, doc_ids: set[str]) -> list[TestQuestion]:
    """Read {"question", "answers": [...], "doc_id"} lines; every doc_id must be a known document."""
    path = Path(path)
    questions = []
    for number, record in read_numbered_jsonl(path, required=("question", "answers", "doc_id")):
        answers = record["answers"]
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
            raise UserError(f"{path}:{number}: 'answers' must be a non-empty list of strings")
        if not isinstance(record["question"], str) or not record["question"].strip():
            raise UserError(f"{path}:{number}: 'question' must be a non-empty string")
        doc_id = str(record["doc_id"])
        if doc_id not in doc_ids:
            raise UserError(f"{path}:{number}: unknown doc_id {doc_id!r} (not among the documents)")
        questions.append(TestQuestion(
            id=str(record.get("id", f"test-{number}")), question=record["question"].strip(),
            answers=answers, doc_id=doc_id,
        ))
    if not questions:
        raise UserError(f"{path}: no test questions in file")
    return questions
