"""`promptdistill reproduce`: a dataset cut as configured, and the paper's numbers beside."""

import json

import pytest

from promptdistill import pipeline
from promptdistill.config import resolve_config
from promptdistill.errors import UserError
from promptdistill.report import paper_reference, write_report
from promptdistill.files import read_jsonl
from promptdistill.rundir import RunDir

from test_datasets import SQUAD, write_json


def test_prepare_dataset_keeps_the_first_passages_and_their_questions(tmp_path, tiny_model_dir):
    write_json(tmp_path / "nyt_v1.0.json", SQUAD)
    config = resolve_config(None, [f"model.name={tiny_model_dir}", "dataset.spec=squadshifts:nyt",
                                   "dataset.limit_questions=5", "dataset.limit_passages=1"])
    run = RunDir(tmp_path / "run")
    pipeline.prepare_dataset(run, config, tmp_path)
    assert [d["id"] for d in read_jsonl(run.path / "inputs" / "documents.jsonl")] == ["nyt-0-0"]
    assert [t.id for t in run.load_test_questions()] == ["q1", "q2", "q3"]
    assert [p.doc_id for p in run.load_passages()] == ["nyt-0-0"]
    assert run.load_config().dataset.spec == "squadshifts:nyt"


def test_presets_resolve_in_order():
    smoke = resolve_config(None, ["train.epochs=1"], preset="cpu-smoke")
    assert smoke.dataset.limit_passages == 6 and smoke.train.epochs == 1  # --set beats the preset
    assert smoke.synth.question_temperature == 0.7  # the built-in model's preset still applies
    paper = resolve_config(None, [], preset="paper")
    assert (paper.synth.question_temperature, paper.train.learning_rate, paper.train.epochs) == (1.5, 1e-5, 10)
    with pytest.raises(UserError, match="--preset nope: no such preset"):
        resolve_config(None, [], preset="nope")


def test_report_puts_the_paper_numbers_beside_the_run(tmp_path):
    assert paper_reference("squadshifts:nyt")["pd"] == 93.6
    assert paper_reference("paper:reddit:original")["sft"] == 69.8
    assert paper_reference("hotpotqa") is None and paper_reference("") is None
    results = {"base": {"contains": 10.0, "contains_interval": [5.0, 15.0], "em": 0.0, "f1": 3.0},
               "open-book": {"contains": 80.0, "contains_interval": [70.0, 90.0], "em": 1.0, "f1": 20.0}}
    settings = {"model": {"name": "m"}, "eval": {"judge": "", "rag_k": 7, "retriever": "bm25"}}
    counts = {"test_questions": 2, "documents": 1, "passages": 1, "questions": 0}
    table = write_report(tmp_path, results, settings, counts, paper_reference("squadshifts:nyt"))
    base_row = table.splitlines()[2].split()
    assert base_row[:2] == ["base", "10.0"] and base_row[5] == "38.2"
    assert table.splitlines()[3].split()[5] == "-"  # the paper has no open-book row
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["methods"]["base"]["paper"] == 38.2
    assert "Table 2" in (tmp_path / "report.md").read_text()
    assert "no LLM judge was configured" in (tmp_path / "report.md").read_text()


def test_rewriting_replaces_questions_and_keeps_the_originals(tmp_path, tiny_model_dir, monkeypatch):
    write_json(tmp_path / "nyt_v1.0.json", SQUAD)
    config = resolve_config(None, [f"model.name={tiny_model_dir}", "dataset.spec=squadshifts:nyt",
                                   "dataset.limit_questions=2", "dataset.rewrite_questions=true"])
    replies = iter(["When was the town of Velmora founded?", "not a question"])
    monkeypatch.setattr("promptdistill.synth.generate_all", lambda backend, prompts, *a, **k: [next(replies) for _ in prompts])
    run = RunDir(tmp_path / "run")
    pipeline.prepare_dataset(run, config, tmp_path)
    assert [t.question for t in run.load_test_questions()] == [
        "When was the town of Velmora founded?", "What was founded in 1623?"]  # the second kept
    pairs = read_jsonl(run.path / "inputs" / "rewritten_questions.jsonl")
    assert pairs[0]["original"] == "When was Velmora founded?"

    monkeypatch.setattr("promptdistill.synth.generate_all", lambda *a, **k: pytest.fail("rewrote again"))
    pipeline.prepare_dataset(run, config, tmp_path)  # a rerun reapplies the saved rewrites
    assert run.load_test_questions()[0].question == "When was the town of Velmora founded?"


def test_paper_questions_are_not_rewritten_again(tmp_path, tiny_model_dir, monkeypatch):
    (tmp_path / "nyt.csv").write_text("When was Velmora founded?;['1623'];Velmora was founded in 1623.\n")
    (tmp_path / "nyt_filtered.csv").write_text("When was the town of Velmora founded?\n")
    config = resolve_config(None, [f"model.name={tiny_model_dir}", "dataset.spec=paper:nyt",
                                   "dataset.rewrite_questions=true"])
    monkeypatch.setattr("promptdistill.synth.generate_all", lambda *a, **k: pytest.fail("rewrote the paper's rewrites"))
    run = RunDir(tmp_path / "run")
    pipeline.prepare_dataset(run, config, tmp_path)
    assert run.load_test_questions()[0].question == "When was the town of Velmora founded?"
