"""The run directory: where each file of a run lives, and the lifecycle every stage shares.

A stage declares the settings it reads, the upstream files it consumes and the files it writes.
Its key hashes its name, those settings and the contents of those inputs. A stage counts as done
only when its manifest (manifests/STAGE.json) holds the same key and every recorded output still
exists with its recorded hash; otherwise it runs, and its manifest records key, outputs, counts,
wall time and (on Linux) the stage's own peak memory. So a changed setting reruns exactly the
stages that read it, a changed file reruns what consumes it (and, through the new outputs,
everything after), and a deleted or truncated output is made again instead of breaking a later
stage.

Under the command line (`STAGE_PROCESSES`), each stage's work runs in a child process forked for
it, so that nothing a stage leaves in memory (oneDNN's caches, the heap) carries into the next:
the run's peak is the largest stage's own.
"""

from __future__ import annotations

import ctypes
import fcntl
import gc
import json
import logging
import os
import pickle
import signal
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import yaml

from promptdistill import __version__
from promptdistill.config import RunConfig, load_run_config
from promptdistill.corpus import Document, Passage, TestQuestion
from promptdistill.errors import UserError
from promptdistill.files import (content_key, folder_in_place, is_main_process, path_digest, process_count,
                                 read_jsonl, write_atomic)

log = logging.getLogger(__name__)

# Where each set of questions' graded replies go: the test questions', and the self-check's (selfcheck.py).
EVAL_FOLDERS = {"test": "eval", "self-check": "self_check"}

# Set by the command line (cli.main), whose process runs no tensor code of its own between
# stages: a child forked after OpenMP has run in its parent hangs at its first parallel product.
STAGE_PROCESSES = False


class RunDir:
    """Paths of a run directory and the records in it."""

    def __init__(self, path: Path):
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml")
    inputs = property(lambda self: self.path / "inputs")  # a dataset's documents and questions, as cut
    documents = property(lambda self: self.path / "documents")  # the text each document became, DOC_ID.md
    passages = property(lambda self: self.path / "passages.jsonl")
    test_questions = property(lambda self: self.path / "test_questions.jsonl")
    self_check_questions = property(lambda self: self.path / "self_check" / "questions.jsonl")  # selfcheck.py
    questions = property(lambda self: self.path / "questions.jsonl")
    teacher = property(lambda self: self.path / "teacher")
    replay = property(lambda self: self.path / "replay.jsonl")  # the base model's replies (train.replay=self)
    logs = property(lambda self: self.path / "logs")  # a tracker's files (train.tracker)

    def answers(self, method: str) -> Path:
        return self.path / "answers" / f"{method}.jsonl"

    def adapter_dir(self, method: str) -> Path:
        return self.path / "adapters" / method

    def adapter(self, method: str) -> Path:
        return self.adapter_dir(method) / "adapter"

    def trained(self, method: str) -> bool:
        """Whether `method`'s adapter has been trained (its PEFT folder is complete)."""
        return (self.adapter(method) / "adapter_config.json").is_file()

    def trained_adapter(self, method: str, option: str = "--method") -> Path:
        """`method`'s adapter; a UserError saying how to train it when it is not there."""
        if not self.trained(method):
            raise UserError(f"{option} {method}: {self.adapter(method)} is missing; train it with "
                            f"`promptdistill train {self.path} --method {method}`")
        return self.adapter(method)

    def export(self, method: str) -> Path:
        """The merged model `promptdistill serve RUN` serves (`promptdistill export` writes anywhere)."""
        return self.path / "export" / method

    def questions_of(self, question_set: str) -> Path:
        """The questions a method is evaluated on: the test questions, or the self-check's."""
        return self.test_questions if question_set == "test" else self.self_check_questions

    def eval(self, method: str, question_set: str = "test") -> Path:
        """A method's graded replies: eval/METHOD.jsonl (test questions), self_check/METHOD.jsonl."""
        return self.path / EVAL_FOLDERS[question_set] / f"{method}.jsonl"

    def judged(self, method: str, question_set: str = "test") -> Path:
        return self.path / EVAL_FOLDERS[question_set] / f"{method}.judge.jsonl"

    def retention(self, name: str) -> Path:
        """retention/NAME.jsonl: the retention check's records (NAME: base, base-replies, a method,
        METHOD.drift)."""
        return self.path / "retention" / f"{name}.jsonl"

    def batches(self, name: str) -> Path:
        """Finished generation batches of one stage, reused on resume and for unchanged inputs."""
        return self.path / "cache" / f"{name}.jsonl"

    def manifest(self, stage: str) -> Path:
        return self.path / "manifests" / f"{stage}.json"

    @contextmanager
    def lock(self):
        """Hold the run directory for one command; a second command on it stops with a message
        naming the holder. The lock is the OS's (flock), so it goes away with its process: a killed
        holder leaves no stale lock. `.lock` holds the holder's pid and command line."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{self.path}: exists and is not a directory; choose another --out")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.path / ".lock", "a+", encoding="utf-8")
        except OSError as error:
            raise UserError(f"{self.path}: cannot write the run directory ({error.strerror})") from None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise UserError(f"{self.path} is in use by {holder}; wait for it to finish or stop it") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} (`{' '.join(['promptdistill', *sys.argv[1:]])}`, "
                         f"since {datetime.now():%H:%M:%S})\n")
            handle.flush()
            try:
                yield self
            finally:
                handle.truncate(0)
                fcntl.flock(handle, fcntl.LOCK_UN)

    def write_documents(self, documents: list[Document]) -> None:
        """documents/DOC_ID.md: the text each document became, what the model is taught from."""
        with folder_in_place(self.documents) as folder:
            for document in documents:
                path = folder / f"{document.id}.md"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(document.text, encoding="utf-8")

    def load_config(self, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
        if not self.config.is_file():
            raise UserError(f"{self.path}: not a run directory (no config.yaml); start one with `promptdistill run`")
        return load_run_config(self.config, overrides)

    def save_config(self, config: RunConfig) -> None:
        write_atomic(self.config, yaml.safe_dump(config.to_dict(), sort_keys=False))

    def load_passages(self) -> list[Passage]:
        return [Passage(**record) for record in read_jsonl(self.passages)]

    def load_test_questions(self, question_set: str = "test") -> list[TestQuestion]:
        return [TestQuestion(**record) for record in read_jsonl(self.questions_of(question_set))]

    def has_questions(self, question_set: str) -> bool:
        """Whether the run has questions of this set to evaluate (a run without test questions has none)."""
        path = self.questions_of(question_set)
        return path.is_file() and path.stat().st_size > 0

    def load_graded(self, method: str, judged: bool, question_set: str = "test") -> tuple[list[dict], list | None]:
        """A method's graded replies, and the judge's verdicts on them when `judged` and present."""
        if not self.eval(method, question_set).is_file():
            raise UserError(f"report: {self.eval(method, question_set)} is missing; run `promptdistill evaluate` first")
        verdicts = None
        if judged and self.judged(method, question_set).is_file():
            verdicts = [entry["judge"] for entry in read_jsonl(self.judged(method, question_set))]
        return read_jsonl(self.eval(method, question_set)), verdicts

    def stage_costs(self) -> dict[str, dict]:
        """Each finished stage's last run, in the order the stages finished: its wall time in
        seconds and its peak memory in GB (None where it was not measured)."""
        manifests = []
        for path in (self.path / "manifests").glob("*.json"):
            try:
                manifests.append(json.loads(path.read_text(encoding="utf-8")))
            except json.JSONDecodeError:
                continue
        return {m["stage"]: {"seconds": m["seconds"], "peak_memory_gb": m.get("peak_memory_gb")}
                for m in sorted(manifests, key=lambda m: m.get("finished_at", ""))}

    def counts(self) -> dict[str, int]:
        passages = self.load_passages()
        return {
            "test_questions": len(self.load_test_questions()),
            "documents": len({passage.doc_id for passage in passages}),
            "passages": len(passages),
            "questions": len(read_jsonl(self.questions)) if self.questions.is_file() else 0,
        }


@dataclass
class Stage:
    """One stage of a run: what it reads and what it writes."""

    name: str  # also its manifest's name, e.g. "train-pd"
    settings: dict[str, Any]  # the config values it reads, by dotted path
    inputs: list[Path]  # upstream files or folders it consumes
    outputs: list[Path]  # files or folders it writes
    extra: dict[str, Any] = field(default_factory=dict)  # other values it depends on (a method's name)

    def key(self, run: RunDir) -> str:
        return self._key(self._input_digests(run))

    def _key(self, input_digests: dict[str, str]) -> str:
        return content_key(self.name, self.settings, self.extra, input_digests)

    def _input_digests(self, run: RunDir) -> dict[str, str]:
        for path in self.inputs:
            if not path.exists():
                raise UserError(f"{self.name}: {path} is missing; run the stages before it "
                                f"(`promptdistill run` resumes every stage)")
        return {path.relative_to(run.path).as_posix(): path_digest(path) for path in self.inputs}

    def _finished(self, run: RunDir, key: str) -> bool:
        """Same key as the finished run recorded, and every output as it was written."""
        try:
            manifest = json.loads(run.manifest(self.name).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return False
        recorded = manifest.get("outputs", {})
        return (manifest.get("key") == key
                and set(recorded) == {path.relative_to(run.path).as_posix() for path in self.outputs}
                and all((run.path / name).exists() and path_digest(run.path / name) == digest
                        for name, digest in recorded.items()))

    def run(self, run: RunDir, work: Callable[[], dict[str, Any]]) -> bool:
        """Run `work` unless the stage is done, then record its manifest. True if it ran."""
        inputs = self._input_digests(run)
        key = self._key(inputs)
        if self._finished(run, key):
            log.info("%s: done, skipping", self.name)
            return False
        log.info("%s: running", self.name)
        started = time.time()
        # Not under a multi-process launch: its process group belongs to the launched processes.
        if STAGE_PROCESSES and sys.platform == "linux" and process_count() == 1:
            counts, peak = _in_child_process(self.name, work)
        else:
            counts, peak = _measured(work)
            _release_memory()
        missing = [str(path) for path in self.outputs if not path.exists()]
        if missing:
            raise RuntimeError(f"{self.name}: finished without writing {', '.join(missing)}")
        if not is_main_process():  # it trained its share; the main process records the stage
            return True
        manifest = {
            "stage": self.name,
            "key": key,
            "settings": self.settings,
            "inputs": inputs,
            "outputs": {path.relative_to(run.path).as_posix(): path_digest(path) for path in self.outputs},
            "counts": counts,
            "seconds": round(time.time() - started, 1),
            "peak_memory_gb": None if peak is None else round(peak, 2),
            "finished_at": datetime.now().isoformat(timespec="microseconds"),
            "versions": _versions(),
        }
        write_atomic(run.manifest(self.name), json.dumps(manifest, indent=2, default=str) + "\n")
        log.info("%s: finished in %.0f s: %s", self.name, manifest["seconds"],
                 ", ".join(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
                           for name, value in counts.items()))
        return True


def _measured(work: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], float | None]:
    """(work's counts, this process's peak memory in GB while it ran; None where not measured)."""
    measuring = _reset_peak_memory()
    counts = work()
    return counts, _peak_memory_gb() if measuring else None


def _in_child_process(name: str, work: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], float | None]:
    """`_measured(work)` in a child process forked for it; its memory goes when it ends. An
    exception in the child is raised here, Ctrl-C included (the child prints a bug's traceback)."""
    sys.stdout.flush(), sys.stderr.flush()  # or the child would write the parent's buffered text again
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            result = ("done", _measured(work))
        except BaseException as error:
            if not isinstance(error, (UserError, KeyboardInterrupt)):  # a bug: where it happened
                print(f"{name}, in the stage's process:", file=sys.stderr)
                traceback.print_exc()
            result = ("error", error)
        try:
            message = pickle.dumps(result)
            pickle.loads(message)  # some exceptions pickle but do not unpickle
        except Exception:
            message = pickle.dumps(("error", RuntimeError(f"{name}: {result[1]!r}")))
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(message)
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(0)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            message = pipe.read()
    except KeyboardInterrupt:
        os.kill(pid, signal.SIGINT)  # a no-op if the child got its own
        raise
    finally:
        _, status = os.waitpid(pid, 0)
    if not message:
        ended = (f"signal {signal.Signals(os.WTERMSIG(status)).name}" if os.WIFSIGNALED(status)
                 else f"exit status {os.WEXITSTATUS(status)}")
        raise RuntimeError(f"{name}: its process ended without finishing ({ended}; out of memory?)")
    outcome, value = pickle.loads(message)
    if outcome == "error":
        raise value
    return value


def _reset_peak_memory() -> bool:
    """Start this process's peak-memory count afresh, so that a stage's own peak is measured
    (Linux; False where the count cannot be reset)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_memory_gb() -> float | None:
    """This process's peak resident memory since the last reset (VmHWM; not its child processes)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # kB
    return None


def _release_memory() -> None:
    """Hand the heap a stage freed back to the system, so that the next stage does not stack its
    peak on top of this one's (glibc keeps freed small blocks otherwise)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {"promptdistill": __version__, "torch": torch.__version__, "transformers": transformers.__version__}
