"""`promptdistill reproduce`: a dataset cut as configured, and the paper's numbers beside."""

import json

import pytest

from promptdistill import pipeline
from promptdistill.config import resolve_config
from promptdistill.errors import UserError
from promptdistill.report import paper_reference, write_report
from promptdistill.files import read_jsonl
from promptdistill.rundir import RunDir

from test_datasets import SHARED_DATA, SQUAD, needs_shared_data, write_json


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


def test_the_paper_preset_holds_the_official_values_over_the_built_in_models_preset():
    paper = resolve_config(None, [], preset="paper")  # the built-in model, whose own preset differs
    train, synth = paper.train, paper.synth
    assert (train.lora_rank, train.lora_alpha, train.lora_dropout, train.lora_output_layer) == (1024, 2048, 0.05, True)
    assert (train.weight_decay, train.learning_rate, train.batch_size, train.epochs) == (0.1, 1e-5, 4, 10)
    assert (train.distill_temperature, train.divergence, train.loss_reduction, train.teacher) == (
        2.0, "forward", "sequence", "online")
    assert (synth.top_k, synth.top_p, synth.question_style, synth.questions_per_passage) == (50, 1.0, "tagged", 150)
    assert (synth.question_temperature, synth.pd_answer_temperature, synth.sft_answer_temperature) == (1.5, 1.5, 0.25)
    assert (synth.max_question_tokens, synth.max_answer_tokens, paper.eval.max_answer_tokens) == (512, 1024, 500)
    assert (paper.eval.rag_k, paper.dataset.limit_questions, paper.eval.answer_temperature) == (7, 1000, 0.25)
    assert (paper.eval.match, paper.eval.judge_style) == ("substring", "few-shot")


def dry_run(monkeypatch, capsys, *args) -> dict[str, str]:
    """The plan `promptdistill ARGS --dry-run` prints, as {what: how much}."""
    import sys

    from promptdistill import cli

    monkeypatch.setattr(sys, "argv", ["promptdistill", *args, "--dry-run"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    return {line.split("  ")[0]: line.split("  ")[-1].strip() for line in printed.splitlines() if "  " in line}


def test_a_dry_run_plans_without_loading_weights(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from transformers import AutoModelForCausalLM

    def no_weights(*args, **kwargs):
        raise AssertionError("a dry run loaded model weights")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_weights)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "town.md").write_text("velmora was founded in 1623 by tobin quarrel .\n\nthe lighthouse is yellow .\n")
    tests = tmp_path / "tests.jsonl"
    tests.write_text(json.dumps({"question": "who founded velmora ?", "answers": ["quarrel"], "doc_id": "town"}) + "\n")
    out = tmp_path / "run"
    plan = dry_run(monkeypatch, capsys, "run", "--docs", str(docs), "--test-questions", str(tests), "--out", str(out),
                   "--model", str(tiny_model_dir), "--methods", "base,uft,sft,pd", "--set", "corpus.passage_tokens=8",
                   "--set", "synth.questions_per_passage=10", "--set", "synth.pd_answers_per_question=3",
                   "--set", "train.batch_size=4", "--set", "train.epochs=3",
                   "--set", "train.replay=self", "--set", "eval.retention_questions=24")
    assert plan["documents, passages, test questions"] == "1, 2, 1"
    assert plan["replay replies of the base model (generations)"] == "80"
    assert plan["retention check (generations)"] == "24 + 40 (base model), then up to 24 per trained method (uft, sft, pd)"
    assert "replay.jsonl" in plan["files"] and "retention/pd.drift.jsonl" in plan["files"]
    assert plan["training questions (at most)"] == "20 (10 per passage)"
    assert plan["training answers (generations)"] == "80 (sft, pd)"  # pd answers each question three times
    assert plan["train sft: sequences x epochs, optimizer steps"] == "20 x 3, 15"  # 5 batches of 4, 3 epochs
    assert plan["train pd: sequences x epochs, optimizer steps"] == "60 x 3, 45"
    assert plan["train uft: sequences x epochs, optimizer steps"] == "2 x 3, 3"
    assert plan["self-check: questions, references, replies (at most)"] == "6, 6, 6 x 4 (3 per passage, held out)"
    assert "self_check/questions.jsonl" in plan["files"] and "self_check/pd.jsonl" in plan["files"]
    # LoRA rank 16 on the seven projections of 2 layers of the tiny model (hidden 32, mlp 64, kv 16):
    # q, o: 16*(32+32); k, v: 16*(32+16); gate, up: 16*(32+64); down: 16*(64+32).
    per_layer = 16 * (2 * 64 + 2 * 48 + 3 * 96)
    assert plan["trainable LoRA parameters per adapter"].startswith(f"{2 * per_layer:,} (rank 16")
    assert sorted(path.name for path in out.iterdir()) == [".lock", "config.yaml"]


@needs_shared_data
def test_a_dry_run_of_the_paper_preset(tmp_path, monkeypatch, capsys):
    plan = dry_run(monkeypatch, capsys, "reproduce", "squadshifts:nyt", "--preset", "paper", "--data-dir",
                   str(SHARED_DATA), "--out", str(tmp_path / "run"))
    assert plan["documents, passages, test questions"] == "188, 194, 1000"
    assert plan["test questions rewritten to stand alone (generations)"] == "1000"
    assert plan["training questions (at most)"] == "29100 (150 per passage)"
    assert plan["question-writing generations (first round)"] == "5820"  # five questions per reply
    assert plan["train pd: sequences x epochs, optimizer steps"] == "29100 x 10, 72750"
    assert plan["self-check: questions, references, replies (at most)"].startswith("1552, 1552, 1552 x 7 (8 per")
    config = RunDir(tmp_path / "run").load_config()
    assert (config.train.lora_rank, config.synth.top_k, config.train.epochs) == (1024, 50, 10)
