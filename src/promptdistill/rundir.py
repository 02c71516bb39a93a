"""The run directory: atomic files, JSONL records, and stage manifests.

Every stage writes its outputs through `write_atomic` (temporary file, then rename), then a
manifest `manifests/STAGE.json` holding a key (hash of its settings and its inputs), counts and
versions. `Stage.done()` compares keys, so a rerun skips finished stages and redoes a stage whose
inputs changed. Long generation stages also append finished batches to `FILE.partial`, so a
killed run loses at most one batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from promptdistill import __version__
from promptdistill.errors import UserError


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def read_jsonl(path: Path, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Read a JSONL file; a bad line raises UserError naming the file and line."""
    return [record for _, record in read_numbered_jsonl(path, required)]


def read_numbered_jsonl(path: Path, required: tuple[str, ...] = ()) -> list[tuple[int, dict[str, Any]]]:
    """Like read_jsonl, with each record's line number for later error messages."""
    path = Path(path)
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
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


def file_digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


class PartialFile:
    """Append-only progress of a generation stage, keyed by batch index.

    Each line is {"batch": i, "records": [...]}. A batch is written only once complete, so a
    torn last line (the process was killed mid-write) is dropped on reading.
    """

    def __init__(self, final_path: Path, key: str):
        self.path = final_path.with_name(final_path.name + ".partial")
        self.key = key

    def _header(self) -> str:
        return json.dumps({"key": self.key})

    def _has_key(self) -> bool:
        with open(self.path, encoding="utf-8") as file:
            return file.readline().rstrip("\n") == self._header()

    def load(self) -> dict[int, list[dict[str, Any]]]:
        """Batches finished by an earlier attempt with the same settings."""
        if not self.path.exists() or not self._has_key():
            return {}
        batches: dict[int, list[dict[str, Any]]] = {}
        for line in self.path.read_text(encoding="utf-8").splitlines()[1:]:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                break
            batches[entry["batch"]] = entry["records"]
        return batches

    def resume(self) -> dict[int, list[dict[str, Any]]]:
        """Open for appending; return the batches an earlier attempt finished.

        The file is rewritten with just its intact lines, dropping a torn last line or a
        file left by other settings.
        """
        done = self.load()
        lines = [self._header()] + [
            json.dumps({"batch": batch, "records": records}, ensure_ascii=False)
            for batch, records in sorted(done.items())
        ]
        write_atomic(self.path, "\n".join(lines) + "\n")
        return done

    def append(self, batch: int, records: list[dict[str, Any]]) -> None:
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(json.dumps({"batch": batch, "records": records}, ensure_ascii=False) + "\n")
            file.flush()
            os.fsync(file.fileno())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class Stage:
    """One stage's manifest in RUN_DIR/manifests/NAME.json."""

    def __init__(self, run_dir: Path, name: str, key: str):
        self.run_dir = Path(run_dir)
        self.name = name
        self.key = key
        self.path = self.run_dir / "manifests" / f"{name.replace('/', '-')}.json"

    def done(self) -> bool:
        if not self.path.exists():
            return False
        try:
            return json.loads(self.path.read_text(encoding="utf-8")).get("key") == self.key
        except json.JSONDecodeError:
            return False

    def finish(self, counts: dict[str, Any], started: float) -> None:
        import torch
        import transformers

        manifest = {
            "stage": self.name,
            "key": self.key,
            "counts": counts,
            "seconds": round(time.time() - started, 1),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "versions": {
                "promptdistill": __version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            },
        }
        write_atomic(self.path, json.dumps(manifest, indent=2) + "\n")


def stage_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
