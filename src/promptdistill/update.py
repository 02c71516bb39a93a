"""Keeping a trained adapter current as the documents change (`run --update`, train.update).

Every training records what its adapter learned from in adapters/METHOD/learned.json: the
digest of each passage it was trained on, and the training's settings. When the documents have
changed since and train.update is set, the next training continues from the adapter instead of
starting from zero, on

    added    passages that were not there          every answer
    edited   passages whose text changed           every answer (their old answers are gone)
    kept     passages as they were                 train.update_rehearsal of each one's answers
                                                   (at least one), so that what was learned is rehearsed

for train.update_epochs epochs. Training on the rest cannot unlearn a removed passage, so a
removal (or changed training settings) trains the method from scratch, and says why. An
unchanged corpus leaves the training stage's inputs as they were: nothing is trained. The record
accumulates: a second update rehearses everything the adapter has learned so far.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from promptdistill.config import RunConfig
from promptdistill.corpus import Passage
from promptdistill.files import content_key, read_jsonl, write_atomic
from promptdistill.rundir import RunDir

log = logging.getLogger(__name__)

UPDATE_SETTINGS = ("train.update_rehearsal", "train.update_epochs")


def learned_path(run: RunDir, method: str) -> Path:
    return run.adapter_dir(method) / "learned.json"


def passage_digests(passages: list[Passage]) -> dict[str, str]:
    return {passage.id: content_key(passage.text) for passage in passages}


@dataclass
class Plan:
    """What a training runs on: every example from a fresh adapter, or (an update) what changed
    since the adapter's last training, from that adapter."""

    previous: dict | None = None  # the adapter's learned.json before an update; None: from scratch
    added: list[str] = field(default_factory=list)  # passage ids
    edited: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    start: Path | None = None  # the adapter an update starts from

    def key(self, config: RunConfig) -> str:
        """Names an update for resuming: from which adapter, on which passages, with which settings."""
        if self.previous is None:
            return ""
        return ":update:" + content_key(self.previous, self.added, self.edited, config.settings(*UPDATE_SETTINGS))

    def epochs(self, config: RunConfig, setting: str) -> int:
        """An update's epochs (train.update_epochs), or the method's own (`setting`)."""
        if self.previous is not None and config.train.update_epochs:
            return config.train.update_epochs
        return config.value(setting)

    def examples(self, examples: list, passage_of: Callable[[str], str], config: RunConfig) -> list:
        """Every example of an added or edited passage, and train.update_rehearsal of each kept
        passage's (at least one, none at 0), drawn by seed; in their given order. `passage_of`: an
        example's passage by its key (passages_of_examples)."""
        if self.previous is None:
            return examples
        by_passage: dict[str, list[int]] = {}
        for index, example in enumerate(examples):
            by_passage.setdefault(passage_of(example.key), []).append(index)
        chosen = [index for passage in self.added + self.edited for index in by_passage.get(passage, [])]
        share, draw = config.train.update_rehearsal, random.Random(config.seed)
        for passage in sorted(set(self.kept) & set(by_passage)):
            indices = by_passage[passage]
            chosen += draw.sample(indices, max(1, round(share * len(indices))) if share else 0)
        return [examples[index] for index in sorted(chosen)]

    def counts(self) -> dict:
        """The training stage's counts of an update (none for a training from scratch)."""
        if self.previous is None:
            return {}
        return {"update_added": len(self.added), "update_edited": len(self.edited), "update_kept": len(self.kept)}


def plan(run: RunDir, config: RunConfig, method: str, settings: dict) -> Plan:
    """An update where one is asked for and possible, else a training from scratch (said why)."""
    path = learned_path(run, method)
    if not config.train.update:
        return Plan()
    if not (path.is_file() and run.trained(method)):
        log.info("%s: no record of what its adapter learned: trained from scratch", method)
        return Plan()
    previous = json.loads(path.read_text(encoding="utf-8"))
    learned, current = previous["passages"], passage_digests(run.load_passages())
    removed = sorted(set(learned) - set(current))
    if removed:
        documents = sorted({previous["documents"][passage] for passage in removed})
        log.warning("%s: %d passage(s) it learned are no longer in the documents (%s); training on the rest cannot "
                    "unlearn them, so it is trained again from scratch", method, len(removed), ", ".join(documents))
        return Plan()
    if previous["settings"] != json.loads(json.dumps(settings)):  # as the record holds them
        log.info("%s: its training settings changed since its adapter was trained: trained from scratch", method)
        return Plan()
    update = Plan(previous, added=[p for p in current if p not in learned],
                  edited=[p for p in current if p in learned and learned[p] != current[p]],
                  kept=[p for p in current if learned.get(p) == current[p]], start=run.adapter(method))
    if not update.added and not update.edited:
        log.info("%s: the documents are as its adapter learned them but its training data changed: trained from "
                 "scratch", method)
        return Plan()
    log.info("%s: updating its adapter: %d passage(s) added, %d edited, %d rehearsed", method, len(update.added),
             len(update.edited), len(update.kept))
    return update


def passages_of_examples(run: RunDir) -> Callable[[str], str]:
    """The passage of a training example by its key: a question id, "ID#n" for a question's n-th
    further answer, or a passage id (uft)."""
    of_question = ({question["id"]: question["passage_id"] for question in read_jsonl(run.questions)}
                   if run.questions.is_file() else {})

    def passage_of(key: str) -> str:
        question, _, number = key.rpartition("#")
        return of_question.get(key) or (of_question.get(question) if number.isdigit() else None) or key

    return passage_of


def record(run: RunDir, method: str, settings: dict, training: Plan, examples: int) -> None:
    """Write what the adapter has now learned from, and what its last training was."""
    passages = run.load_passages()
    documents = {passage.id: passage.doc_id for passage in passages}
    last: dict = {"kind": "full", "examples": examples}
    if training.previous is not None:
        before = set(training.previous["documents"].values())
        changed = {documents[p] for p in training.added + training.edited}
        last = {"kind": "update", "examples": examples, "added_passages": training.added,
                "edited_passages": training.edited, "added_documents": sorted(changed - before),
                "edited_documents": sorted(changed & before)}
    write_atomic(learned_path(run, method), json.dumps(
        {"passages": passage_digests(passages), "documents": documents, "settings": settings, "last_training": last},
        indent=2) + "\n")


def document_groups(run: RunDir, method: str) -> dict[str, str]:
    """Each document's group after an update of `method` (added, edited, or before the update);
    empty when its last training was from scratch."""
    path = learned_path(run, method)
    last = json.loads(path.read_text(encoding="utf-8"))["last_training"] if path.is_file() else {}
    if last.get("kind") != "update":
        return {}
    groups = {passage.doc_id: "before the update" for passage in run.load_passages()}
    groups.update({doc: "added" for doc in last["added_documents"]})
    groups.update({doc: "edited" for doc in last["edited_documents"]})
    return groups
