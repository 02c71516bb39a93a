"""Keeping a model current (update.py): after documents are added or edited, training continues
from the adapter on what changed and a rehearsed share of the rest; nothing changed, nothing
trained; a removal trains from scratch."""

import dataclasses
import json
import logging
import shutil
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from test_pipeline import DOCS, ran, settings, write_inputs  # noqa: F401 (ran: a fixture)

import promptdistill.train.loop as loop
from promptdistill import pipeline, report, update
from promptdistill.files import read_jsonl
from promptdistill.methods import METHODS
from promptdistill.rundir import RunDir

from conftest import assert_same_adapter, killed_after_epoch, make_model
from test_train_data import examples as tiny_examples
from test_train_resume import CONFIG

LAKE = "the merrow lake is 40 metres deep and freezes in january .\n"


def trained(run: RunDir, method: str = "pd") -> dict:
    return json.loads(run.manifest(f"train-{method}").read_text())["counts"]


def answers_by_passage(run: RunDir, method: str = "pd") -> dict[str, int]:
    passage_of = {question["id"]: question["passage_id"] for question in read_jsonl(run.questions)}
    counted: dict[str, int] = {}
    for answer in read_jsonl(run.answers(method)):
        counted[passage_of[answer["question_id"]]] = counted.get(passage_of[answer["question_id"]], 0) + 1
    return counted


@pytest.fixture
def first_training(tmp_path, tiny_model_dir, ran):  # noqa: F811
    docs, tests = write_inputs(tmp_path)
    run = RunDir(tmp_path / "run")
    config = settings(tiny_model_dir, "methods=base,pd", "train.update=true", "train.update_epochs=1",
                      "eval.retention=false", "synth.self_check_share=0")
    pipeline.prepare(run, config, docs, tests)
    pipeline.run_all(run, config)
    ran.clear()
    return run, config, docs, tests


def test_an_added_document_trains_its_answers_and_a_rehearsed_share_of_the_rest_and_nothing_twice(
        first_training, ran):  # noqa: F811
    run, config, docs, tests = first_training
    before = set(json.loads(update.learned_path(run, "pd").read_text())["passages"])
    assert json.loads(update.learned_path(run, "pd").read_text())["last_training"]["kind"] == "full"
    (docs / "lake.md").write_text(LAKE)
    with tests.open("a") as file:
        file.write(json.dumps({"question": "how deep is merrow lake ?", "answers": ["40 metres"], "doc_id": "lake"})
                   + "\n")
    pipeline.prepare(run, config, docs, tests)
    pipeline.run_all(run, config)
    assert "train-pd" in ran and "answers-pd" in ran

    counts, per_passage = trained(run), answers_by_passage(run)
    added = [passage.id for passage in run.load_passages() if passage.doc_id == "lake"]
    assert counts["update_added"] == len(added) and counts["update_edited"] == 0
    assert counts["update_kept"] == len(before)
    # Every answer of the new passages, and a quarter (at least one) of each old passage's.
    expected = sum(per_passage[p] for p in added) + sum(max(1, round(0.25 * per_passage[p])) for p in before)
    assert counts["examples"] == expected < sum(per_passage.values())
    metrics = json.loads((run.adapter_dir("pd") / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 1  # train.update_epochs
    learned = json.loads(update.learned_path(run, "pd").read_text())
    assert set(learned["passages"]) == before | set(added)
    assert learned["last_training"]["added_documents"] == ["lake"] and learned["last_training"]["edited_documents"] == []

    report = json.loads((run.path / "report.json").read_text())["by_document"]
    assert {doc: entry["group"] for doc, entry in report["documents"].items()} == {
        "lake": "added", "river": "before the update", "town": "before the update"}
    assert set(report["groups"]) == {"added", "before the update"}
    assert "## By document" in (run.path / "report.md").read_text()

    # Nothing changed since: nothing is trained (or written, or answered) again.
    ran.clear()
    pipeline.prepare(run, config, docs, tests)
    pipeline.run_all(run, config)
    assert ran == []


def test_an_edited_passage_is_trained_again_and_the_others_rehearsed(first_training, ran):  # noqa: F811
    run, config, docs, tests = first_training
    old = {passage.id: passage.text for passage in run.load_passages()}
    (docs / "river.md").write_text(DOCS["river"].replace("96 steps", "97 steps"))
    pipeline.prepare(run, config, docs, tests)
    pipeline.run_all(run, config)
    new = {passage.id: passage.text for passage in run.load_passages()}
    edited = [p for p in new if p in old and old[p] != new[p]]
    assert edited and all(p.startswith("river") for p in edited)
    learned = json.loads(update.learned_path(run, "pd").read_text())["last_training"]
    assert learned["kind"] == "update" and learned["edited_passages"] == edited
    assert learned["edited_documents"] == ["river"] and learned["added_documents"] == []
    groups = json.loads((run.path / "report.json").read_text())["by_document"]["documents"]
    assert groups["river"]["group"] == "edited" and groups["town"]["group"] == "before the update"
    assert report.EDITED_NOTE in (run.path / "report.md").read_text()


def test_a_removed_document_trains_from_scratch_and_says_why(first_training, ran, caplog):  # noqa: F811
    run, config, docs, tests = first_training
    (docs / "river.md").unlink()
    tests.write_text("".join(line for line in tests.read_text().splitlines(keepends=True) if '"river"' not in line))
    with caplog.at_level(logging.WARNING):
        pipeline.prepare(run, config, docs, tests)
        pipeline.run_all(run, config)
    assert "are no longer in the documents (river)" in caplog.text and "cannot unlearn them" in caplog.text
    assert "update_added" not in trained(run) and trained(run)["examples"] == sum(answers_by_passage(run).values())
    assert json.loads(update.learned_path(run, "pd").read_text())["last_training"]["kind"] == "full"
    assert len(json.loads((run.adapter_dir("pd") / "metrics.json").read_text())["epochs"]) == config.train.epochs


def test_without_update_a_changed_corpus_trains_from_scratch(first_training, ran):  # noqa: F811
    run, config, docs, tests = first_training
    (docs / "lake.md").write_text(LAKE)
    pipeline.prepare(run, config, docs, tests)
    pipeline.run_all(run, run.load_config(["train.update=false"]))
    assert trained(run)["examples"] == sum(answers_by_passage(run).values()) and "update_added" not in trained(run)


def test_an_update_starts_from_the_adapter_it_updates(tokenizer, tmp_path):
    """At a learning rate too small to move it, the updated adapter is the one it started from
    (a fresh LoRA's B matrices are zero; a trained one's are not)."""
    batch = tiny_examples(tokenizer) * 3
    loop.train_adapter(make_model(len(tokenizer)), tokenizer.pad_token_id, batch, METHODS["sft"], CONFIG,
                       tmp_path / "first", seed=7)
    start = tmp_path / "first" / "adapter"
    still = dataclasses.replace(CONFIG, learning_rate=1e-12, epochs=1)
    loop.train_adapter(make_model(len(tokenizer)), tokenizer.pad_token_id, batch, METHODS["sft"], still,
                       tmp_path / "update", seed=7, initial_adapter=start)
    before = load_file(start / "adapter_model.safetensors")
    after = load_file(tmp_path / "update" / "adapter" / "adapter_model.safetensors")
    assert any(name.endswith("lora_B.weight") and tensor.abs().sum() > 0 for name, tensor in before.items())
    for name in before:
        torch.testing.assert_close(after[name], before[name], atol=1e-6, rtol=1e-5)


def test_the_rehearsed_share_is_drawn_from_each_kept_passage_at_least_one():
    keys = [f"a#0/q{i}" for i in range(8)] + [f"b#0/q{i}" for i in range(3)] + ["c#0/q0", "c#0/q0#1"]
    examples = [SimpleNamespace(key=key) for key in keys]
    passage = {key: key.split("/")[0] for key in keys}
    plan = update.Plan(previous={}, added=["c#0"], kept=["a#0", "b#0"])
    config = SimpleNamespace(train=SimpleNamespace(update_rehearsal=0.25), seed=0)
    chosen = [example.key for example in plan.examples(examples, passage.__getitem__, config)]
    assert [key for key in chosen if key.startswith("c")] == ["c#0/q0", "c#0/q0#1"]  # every answer, in order
    assert sum(key.startswith("a") for key in chosen) == 2 and sum(key.startswith("b") for key in chosen) == 1
    config.train.update_rehearsal = 0
    assert [example.key for example in plan.examples(examples, passage.__getitem__, config)] == ["c#0/q0", "c#0/q0#1"]


def test_an_interrupted_update_resumes_to_the_same_adapter(first_training, monkeypatch, caplog):
    run, config, docs, tests = first_training
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, update_epochs=2))
    copy = RunDir(run.path.with_name("copy"))
    shutil.copytree(run.path, copy.path)
    (docs / "lake.md").write_text(LAKE)
    for target in (run, copy):
        pipeline.prepare(target, config, docs, tests)
    pipeline.run_all(run, config)

    with killed_after_epoch(monkeypatch, 1):  # right after the first epoch's checkpoint
        pipeline.run_all(copy, config)
    with caplog.at_level(logging.INFO):
        pipeline.run_all(copy, config)
    assert "pd: resuming after epoch 1" in caplog.text
    assert trained(copy)["update_added"] == trained(run)["update_added"] > 0
    assert_same_adapter(run.adapter("pd"), copy.adapter("pd"))
