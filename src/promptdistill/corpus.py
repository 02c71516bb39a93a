"""Documents, passages and test questions.

A document comes from a file in a folder (PDF, Word, PowerPoint, EPUB, a saved web page, text or
Markdown, turned into text by convert.py; its id is its path in the folder without the suffix) or
from a JSONL line {"id", "text"}. Passages are consecutive paragraphs of one document packed under
a token budget; their id is DOC_ID#INDEX, stable as long as the document and the budget are.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from promptdistill import __version__, convert
from promptdistill.errors import UserError
from promptdistill.files import BatchStore, content_key, read_numbered_jsonl

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


def read_documents(source: Path, exclude: Path | None = None, store: BatchStore | None = None) -> list[Document]:
    """Read a folder of documents (recursively; convert.SUFFIXES) or a JSONL file of {"id", "text"}.

    In a folder, `exclude` (the run directory) and every folder promptdistill wrote (a run, an
    export) are passed over; files of other kinds are listed in a warning, and so is each file that
    gives no text, with what to do (the others go on). `store` keeps each file's text under a digest
    of its bytes, so that a rerun converts only new and changed files.
    """
    source = Path(source)
    if not source.exists():
        raise UserError(f"{source}: no such file or folder")
    if source.is_dir():
        documents = _read_folder(source, exclude, store)
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


def _read_folder(root: Path, exclude: Path | None, store: BatchStore | None) -> list[Document]:
    files, skipped = document_files(root, exclude)
    if skipped:
        log.warning("%s: skipped %d file(s) that are not documents (%s): %s", root, len(skipped),
                    " ".join(convert.SUFFIXES), ", ".join(skipped[:10]) + (", ..." if len(skipped) > 10 else ""))
    if not files:
        raise UserError(f"{root}: folder has no documents ({' '.join(convert.SUFFIXES)})")
    names: dict[str, Path] = {}
    for path in files:
        document_id = _document_id(path, root)
        if document_id in names:
            raise UserError(f"{names[document_id]} and {path} would both be document {document_id!r}; rename one")
        names[document_id] = path
    documents, unreadable = [], 0
    for document_id, path in tqdm(names.items(), desc="reading documents", unit="file", leave=False,
                                  disable=len(names) < 10):
        try:
            documents.append(Document(id=document_id, text=_converted(path, store)))
        except convert.Unreadable as error:
            log.warning("skipped %s", error)
            unreadable += 1
    if not documents:
        raise UserError(f"{root}: none of its {unreadable} document(s) gives text (see the warnings above)")
    return documents


def _converted(path: Path, store: BatchStore | None) -> str:
    """`convert.convert(path)`, kept in `store` under the file's bytes and the converters' versions."""
    if store is None:
        return convert.convert(path)
    key = content_key(path.suffix.lower(), hashlib.sha256(path.read_bytes()).hexdigest(), CONVERTER_VERSIONS)
    text = store.get(key)
    if text is None:
        text = [convert.convert(path)]
        store.put(key, text)
    return text[0]


# A converted text is made again when one of these changes.
CONVERTER_VERSIONS = [__version__, *(version(name) for name in ("pypdfium2", "trafilatura", "markitdown"))]


def document_files(root: Path, exclude: Path | None) -> tuple[list[Path], list[str]]:
    """The documents under `root`, and the names of the other files (hidden files, and the
    folder of resources a browser saves beside a page, NAME_files, not counted)."""
    excluded = exclude.resolve() if exclude else None
    files, skipped = [], []
    for folder, subfolders, names in os.walk(root):
        folder = Path(folder)
        if folder.resolve() == excluded or any((folder / sign).exists() for sign in WRITTEN_BY_PROMPTDISTILL):
            subfolders.clear()
            continue
        pages = {Path(name).stem for name in names if name.lower().endswith(convert.WEB_PAGE_SUFFIXES)}
        subfolders[:] = sorted(name for name in subfolders
                               if not name.startswith(".") and not (name.endswith("_files") and name[:-6] in pages))
        for name in names:
            if name.startswith("."):
                continue
            path = folder / name
            if path.suffix.lower() in convert.SUFFIXES:
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
