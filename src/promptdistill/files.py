"""Files that survive a crash: atomic writes, JSONL records with line-numbered errors, digests.

Every file of a run is written to a temporary name and renamed (`write_atomic`), so a reader
never sees half a file.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable

from promptdistill.errors import UserError


def process_count() -> int:
    """Processes training together: WORLD_SIZE under `accelerate launch` or torchrun, else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """False in the other processes of a multi-process launch (RANK > 0): the run's lock, config
    and manifests belong to the main process."""
    return int(os.environ.get("RANK", "0")) == 0


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, shareable_mode())  # mkstemp makes 0600; a run directory holds no secret
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def shareable_mode() -> int:
    """The mode a new file gets from open(): 0666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def replace_folder(staging: Path, target: Path) -> None:
    """Put the finished folder `staging` in `target`'s place. A folder cannot be renamed over a
    non-empty one, so an existing `target` is first moved aside (kept until the new one is in
    place), never deleted before its replacement is there. Its files get the shareable mode
    (safetensors writes 0600)."""
    for file in staging.rglob("*"):
        if file.is_file():
            os.chmod(file, shareable_mode())
    previous = target.with_name(f".{target.name}.previous")
    if target.exists():
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(target, previous)
    os.replace(staging, target)
    shutil.rmtree(previous, ignore_errors=True)


@contextmanager
def folder_in_place(target: Path):
    """Yield an empty staging folder beside `target`; once the block succeeds it replaces `target`
    (replace_folder). If the block fails (Ctrl-C, a full disk), the staging folder is removed and
    `target` is as it was: no half-written folder is left behind or ever read."""
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_folder(staging, target)


class BatchStore:
    """Finished batches of one stage (generation batches, converted documents): an append-only
    JSONL file of {"key", "replies"} lines.

    A line is appended only once its batch is complete, so a torn last line (the process was
    killed mid-write) is ignored on reading. Used as a context manager, it keeps only the
    batches the pass used once the pass succeeds, so the file does not grow with every change of
    input.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.batches: dict[str, list[str]] = {}
        self.used: set[str] = set()
        self._lock = threading.Lock()
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                self.batches[entry["key"]] = entry["replies"]

    def get(self, key: str) -> list[str] | None:
        replies = self.batches.get(key)
        if replies is not None:
            self.used.add(key)
        return replies

    def put(self, key: str, replies: list[str]) -> None:
        with self._lock:  # batches finish on several threads against a server
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as file:
                file.write(json.dumps({"key": key, "replies": replies}, ensure_ascii=False) + "\n")
                file.flush()
                os.fsync(file.fileno())
            self.batches[key] = replies
            self.used.add(key)

    def __enter__(self) -> BatchStore:
        return self

    def __exit__(self, error_type, *_) -> None:
        if error_type is None:
            self.compact()

    def compact(self) -> None:
        kept = {key: replies for key, replies in self.batches.items() if key in self.used}
        write_atomic(self.path, "".join(json.dumps({"key": key, "replies": replies}, ensure_ascii=False) + "\n"
                                        for key, replies in kept.items()))
        self.batches = kept


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def read_jsonl(path: Path, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Read a JSONL file; a bad line raises UserError naming the file and line."""
    return [record for _, record in read_numbered_jsonl(path, required)]


BYTE_ORDER_MARKS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def decode_text(data: bytes, encoding: str = "utf-8") -> str:
    """Text as an editor saved it: in `encoding`, or the one its byte-order mark names (Windows
    editors write one), with CRLF and CR line ends made LF. UnicodeDecodeError if it is neither."""
    for mark, marked in BYTE_ORDER_MARKS:
        if data.startswith(mark):
            data, encoding = data[len(mark):], marked
            break
    return data.decode(encoding).replace("\r\n", "\n").replace("\r", "\n")


def read_text(path: Path) -> str:
    """A text file (`decode_text`); missing or not text raises UserError naming the file."""
    try:
        return decode_text(Path(path).read_bytes())
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8") from None


def read_numbered_jsonl(path: Path, required: tuple[str, ...] = ()) -> list[tuple[int, dict[str, Any]]]:
    """Like read_jsonl, with each record's line number for later error messages."""
    path = Path(path)
    lines = read_text(path).splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{number}: malformed JSON: {error.msg}") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        missing = [key for key in required if key not in record]
        if missing:
            raise UserError(f"{path}:{number}: missing field(s) {', '.join(missing)}")
        records.append((number, record))
    return records


def path_digest(path: Path) -> str:
    """A short hash of a file's bytes, or of a folder's file names and bytes."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(file.relative_to(path).as_posix().encode() + b"\0" + file.read_bytes())
    else:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def content_key(*parts: Any) -> str:
    """A short hash of JSON-able parts: what names a stage's inputs or a generated batch."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
