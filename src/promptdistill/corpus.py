"""Documents, passages and test questions.

A document comes from a .txt/.md file (its id is the file name without suffix) or a JSONL line
{"id", "text"}. Passages are consecutive paragraphs of one document packed under a token budget;
their id is DOC_ID#INDEX, stable as long as the document and the budget are.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from promptdistill.errors import UserError
from promptdistill.files import read_numbered_jsonl, read_text

DOCUMENT_SUFFIXES = (".txt", ".md")  # in any case: .TXT, .Md
EXPORT_MARKER = "promptdistill-export.json"  # in every folder `promptdistill export` writes
# A folder holding one of these was written by promptdistill (a run, an export): never a document.
WRITTEN_BY_PROMPTDISTILL = ("manifests", ".lock", EXPORT_MARKER)

log = logging.getLogger(__name__)


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


def read_documents(source: Path, exclude: Path | None = None) -> list[Document]:
    """Read a folder of .txt/.md files (recursively) or a JSONL file of {"id", "text"}.

    In a folder, `exclude` (the run directory) and every folder promptdistill wrote (a run, an
    export) are passed over; other files that are not documents are listed in a warning.
    """
    source = Path(source)
    if not source.exists():
        raise UserError(f"{source}: no such file or folder")
    if source.is_dir():
        files, skipped = document_files(source, exclude)
        if skipped:
            log.warning("%s: skipped %d file(s) that are not .txt or .md: %s", source, len(skipped),
                        ", ".join(skipped[:10]) + (", ..." if len(skipped) > 10 else ""))
        if not files:
            raise UserError(f"{source}: folder has no .txt or .md documents")
        documents = [Document(id=_document_id(path, source), text=read_text(path)) for path in files]
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
        if "\x00" in document.text:
            raise UserError(f"{source}: document {document.id!r} holds a NUL byte (at character "
                            f"{document.text.index(chr(0))}): binary data, not text")
    empty = [document.id for document in documents if not document.text.strip()]
    if empty:
        raise UserError(f"{source}: empty document(s): {', '.join(empty)}")
    return documents


def document_files(root: Path, exclude: Path | None) -> tuple[list[Path], list[str]]:
    """The documents under `root`, and the names of the other files (hidden files not counted)."""
    excluded = exclude.resolve() if exclude else None
    files, skipped = [], []
    for folder, subfolders, names in os.walk(root):
        folder = Path(folder)
        if folder.resolve() == excluded or any((folder / sign).exists() for sign in WRITTEN_BY_PROMPTDISTILL):
            subfolders.clear()
            continue
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in names:
            if name.startswith("."):
                continue
            path = folder / name
            if path.suffix.lower() in DOCUMENT_SUFFIXES:
                files.append(path)
            else:
                skipped.append(path.relative_to(root).as_posix())
    return sorted(files), sorted(skipped)


def _document_id(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def split_passages(
    documents: list[Document], encode: Callable[[str], list], decode: Callable[[list], str], max_tokens: int
) -> list[Passage]:
    """Pack each document's paragraphs into passages of at most `max_tokens` tokens (`encode` gives
    a text's tokens, `decode` the text of some tokens).

    A paragraph longer than the budget is split between sentences; a single sentence longer than
    the budget (a text without full stops) is cut at token boundaries, with a warning.
    """
    def count_tokens(text: str) -> int:
        return len(encode(text))

    passages = []
    for document in documents:
        pieces = []
        for paragraph in re.split(r"\n\s*\n", document.text.strip()):
            paragraph = paragraph.strip()
            if not paragraph:
                continue
            if count_tokens(paragraph) <= max_tokens:
                pieces.append(paragraph)
                continue
            sentences = []
            for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
                tokens = encode(sentence)
                if len(tokens) > max_tokens:
                    log.warning("%s: a sentence of %d tokens is longer than corpus.passage_tokens=%d; "
                                "cut at token boundaries", document.id, len(tokens), max_tokens)
                    sentences += [decode(tokens[i:i + max_tokens]).strip() for i in range(0, len(tokens), max_tokens)]
                else:
                    sentences.append(sentence)
            pieces.extend(_pack(sentences, count_tokens, max_tokens, " "))
        for index, text in enumerate(_pack(pieces, count_tokens, max_tokens, "\n\n")):
            passages.append(Passage(id=f"{document.id}#{index}", doc_id=document.id, text=text))
    return passages


def split_with_tokenizer(documents: list[Document], tokenizer, max_tokens: int) -> list[Passage]:
    """split_passages counting a transformers tokenizer's tokens (no special tokens)."""
    return split_passages(documents, lambda text: tokenizer(text, add_special_tokens=False).input_ids,
                          tokenizer.decode, max_tokens)


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
    questions, lines = [], {}
    for number, record in read_numbered_jsonl(path, required=("question", "answers", "doc_id")):
        answers = record["answers"]
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
            raise UserError(f"{path}:{number}: 'answers' must be a non-empty list of strings")
        if not all(any(char.isalnum() for char in answer) for answer in answers):
            raise UserError(f"{path}:{number}: an accepted answer is empty (no letter or digit); remove it")
        if not isinstance(record["question"], str) or not record["question"].strip():
            raise UserError(f"{path}:{number}: 'question' must be a non-empty string")
        doc_id = str(record["doc_id"])
        if doc_id not in doc_ids:
            raise UserError(f"{path}:{number}: unknown doc_id {doc_id!r} (not among the documents)")
        question_id = str(record.get("id", f"test-{number}"))
        if question_id in lines:
            raise UserError(f"{path}:{number}: id {question_id!r} was already used on line {lines[question_id]}")
        lines[question_id] = number
        questions.append(TestQuestion(id=question_id, question=record["question"].strip(), answers=answers,
                                      doc_id=doc_id))
    if not questions:
        raise UserError(f"{path}: no test questions in file")
    return questions
