"""The run directory on a tiny model: stages write manifests, skip when unchanged, redo when not."""

import json

import pytest

from promptdistill import pipeline
from promptdistill.config import resolve_config
from promptdistill.rundir import read_jsonl, write_jsonl


@pytest.fixture
def run(tmp_path, tiny_model_dir):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "town.md").write_text("velmora was founded in 1623 by tobin quarrel .\n\nthe lighthouse is yellow .\n")
    tests = tmp_path / "tests.jsonl"
    tests.write_text(json.dumps({"question": "who founded velmora ?", "answers": ["tobin quarrel"], "doc_id": "town"}) + "\n")
    config = resolve_config(None, [f"model.name={tiny_model_dir}", "train.epochs=2", "train.batch_size=2",
                                   "train.learning_rate=0.01", "corpus.passage_tokens=8", "eval.max_answer_tokens=4"])
    run = pipeline.RunDir(tmp_path / "run")
    pipeline.prepare(run, config, docs, tests)
    # The expert's output, written by hand: the tiny random model cannot write questions.
    write_jsonl(run.questions, [{"id": "town#0/q0", "passage_id": "town#0", "question": "who founded velmora ?"},
                                {"id": "town#1/q0", "passage_id": "town#1", "question": "what is yellow ?"}])
    for method in ("pd", "sft"):
        write_jsonl(run.answers(method), [{"question_id": "town#0/q0", "answer": "tobin quarrel", "temperature": 1.0},
                                          {"question_id": "town#1/q0", "answer": "the lighthouse", "temperature": 1.0}])
    return run, config


def test_prepare_writes_passages_and_config(run):
    run, config = run
    assert [p.id for p in run.load_passages()] == ["town#0", "town#1"]
    assert run.load_config() == config
    assert json.loads((run.path / "manifests" / "prepare.json").read_text())["counts"] == {
        "documents": 1, "passages": 2, "test_questions": 1}


def test_stages_skip_when_unchanged_and_redo_when_settings_change(run, monkeypatch):
    run, config = run
    pipeline.train(run, config, "pd")
    adapter = run.adapter_dir("pd") / "adapter" / "adapter_model.safetensors"
    first = adapter.read_bytes()
    pipeline.evaluate(run, config, "pd")
    pipeline.evaluate(run, config, "base")
    table = pipeline.report(run, resolve_config(None, [f"model.name={config.model.name}", "methods=base,pd"]))
    assert [line.split()[0] for line in table.splitlines()[2:]] == ["base", "pd"]
    assert {"report.md", "report.json"} <= {p.name for p in run.path.iterdir()}
    assert (run.path / "plots" / "accuracy.png").stat().st_size > 0
    assert read_jsonl(run.eval("pd"))[0].keys() >= {"question", "answers", "reply", "contains", "em", "f1"}

    def fail(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr("promptdistill.train.loop.train_adapter", fail)
    monkeypatch.setattr(pipeline, "_backend", fail)
    pipeline.train(run, config, "pd")
    pipeline.evaluate(run, config, "pd")
    monkeypatch.undo()

    longer = resolve_config(None, [f"model.name={config.model.name}", "train.epochs=3", "train.batch_size=2",
                                   "train.learning_rate=0.01", "corpus.passage_tokens=8", "eval.max_answer_tokens=4"])
    pipeline.train(run, longer, "pd")
    assert adapter.read_bytes() != first
    assert sorted(p.name for p in (run.adapter_dir("pd") / "checkpoints").iterdir()) == ["epoch-1", "epoch-2", "epoch-3"]
    assert json.loads((run.path / "manifests" / "train-pd.json").read_text())["counts"]["examples"] == 2


def test_evaluate_a_trained_method_before_training_names_the_fix(run):
    run, config = run
    from promptdistill.errors import UserError

    with pytest.raises(UserError, match="no trained adapter"):
        pipeline.evaluate(run, config, "sft")


def test_uft_examples_mask_nothing_but_padding(run):
    from promptdistill.models import load_tokenizer
    from promptdistill.train.data import Collator

    run, config = run
    tokenizer = load_tokenizer(config.model)
    examples = pipeline.training_examples(run, tokenizer, "uft")
    batch = Collator(tokenizer.pad_token_id)(examples)
    for row, passage in enumerate(run.load_passages()):
        tokens = tokenizer(passage.text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        real = batch["student_attention_mask"][row].bool()
        # Every real token but the first is a target; padding is not.
        assert batch["student_input_ids"][row][real].tolist() == tokens
        assert batch["answer_mask"][row].sum().item() == len(tokens) - 1
        assert batch["answer_ids"][row][batch["answer_mask"][row]].tolist() == tokens[1:]
    assert not batch["answer_mask"].all()  # the shorter passage has padding, left out


def test_rag_prompts_carry_exactly_k_retrieved_passages(run, monkeypatch):
    from promptdistill import evaluate as evaluate_module

    run, config = run
    config = resolve_config(None, [f"model.name={config.model.name}", "eval.rag_k=1", "eval.max_answer_tokens=2"])
    seen = {}
    real = evaluate_module.answer_test_questions

    def spy(backend, tokenizer, tests, contexts, *args):
        seen["contexts"] = contexts
        return real(backend, tokenizer, tests, contexts, *args)

    monkeypatch.setattr(pipeline, "answer_test_questions", spy)
    pipeline.evaluate(run, config, "rag")
    (record,) = read_jsonl(run.eval("rag"))
    assert record["retrieved"] == ["town#0"]  # the passage that names velmora's founder
    assert seen["contexts"] == [run.load_passages()[0].text]
    assert record["retrieval_hit"] is True
