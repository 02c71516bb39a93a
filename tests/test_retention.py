"""The retention check (general questions kept, drift from the base model) and self-replay."""

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

import promptdistill.train.loop as loop
from promptdistill import pipeline, retention
from promptdistill.config import TrainConfig
from promptdistill.errors import UserError
from promptdistill.files import path_digest, read_jsonl, write_jsonl
from promptdistill.methods import METHODS
from promptdistill.models import add_lora
from promptdistill.rundir import RunDir
from promptdistill.train.data import ReplayRows, open_book_examples, reply_examples

from conftest import assert_same_adapter, give_adapter_an_effect, killed_after_epoch, make_model
from test_pipeline import ScriptedExpert, ran, settings, write_inputs  # noqa: F401 (ran: a fixture)
from test_train_data import examples

REPLIES = [{"prompt": "write about the river .", "reply": "the oskeva river is yellow ."},
           {"prompt": "what is the lighthouse ?", "reply": "yellow"},
           {"prompt": "write a question about the town .", "reply": "who founded velmora ?"}]


def test_the_bundled_data_is_well_formed_and_drift_never_meets_replay():
    questions = retention.bundled("general_questions")
    assert len(questions) >= 200
    assert len({q["id"] for q in questions}) == len({q["question"] for q in questions}) == len(questions)
    assert all(q["answers"] and all(a.strip() for a in q["answers"]) for q in questions)
    spread = retention.general_questions(24)
    assert len(spread) == len({q["id"] for q in spread}) == 24
    assert {q["id"].split("-")[0] for q in spread} == {"capitals", "arithmetic", "facts"}
    assert retention.general_questions(0) == questions
    drift, replay = retention.bundled("drift_prompts"), retention.read_prompts("")
    assert len(drift) == 40 and len(replay) == 80
    assert not {r["prompt"] for r in drift} & set(replay)


def test_replay_prompts_from_a_users_file(tmp_path):
    (tmp_path / "mine.txt").write_text("say hello\n\n  name a colour \n")
    assert retention.read_prompts(str(tmp_path / "mine.txt")) == ["say hello", "name a colour"]
    (tmp_path / "mine.jsonl").write_text('{"prompt": "say hello"}\n{"text": "no prompt"}\n')
    with pytest.raises(UserError, match=r"^train.replay_prompts: .*mine.jsonl:2"):
        retention.read_prompts(str(tmp_path / "mine.jsonl"))
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(UserError, match="holds no prompt"):
        retention.read_prompts(str(tmp_path / "empty.txt"))
    with pytest.raises(UserError, match="expected a .jsonl or .txt"):
        retention.read_prompts(str(tmp_path / "prompts.csv"))
    with pytest.raises(UserError, match="missing.txt: file not found"):
        retention.read_prompts(str(tmp_path / "missing.txt"))


def test_drift_is_the_kl_from_the_base_model_over_the_reply_tokens_alone(tokenizer):
    model = add_lora(make_model(len(tokenizer)), TrainConfig(lora_rank=4, lora_alpha=8)).eval()
    replies = reply_examples(tokenizer, REPLIES)
    assert retention.drift(model, tokenizer.pad_token_id, replies, batch_size=2) == pytest.approx([0.0] * 3, abs=1e-6)
    give_adapter_an_effect(model)
    values = retention.drift(model, tokenizer.pad_token_id, replies, batch_size=2)
    for example, value in zip(replies, values):  # one unpadded sequence at a time, by hand
        ids = torch.tensor([example.student_ids + example.answer_ids])
        with torch.no_grad():
            trained = model(input_ids=ids).logits[0]
            with model.disable_adapter():
                base = model(input_ids=ids).logits[0]
        positions = slice(len(example.student_ids) - 1, ids.shape[1] - 1)  # those predicting the reply
        p, log_q = F.softmax(base[positions], dim=-1), F.log_softmax(trained[positions], dim=-1)
        expected = (p * (p.log() - log_q)).sum(dim=-1).mean().item()
        assert value == pytest.approx(expected, rel=1e-4) and value > 1e-3


def test_replay_rows_are_fixed_by_epoch_and_step_and_wrap_around(tokenizer):
    rows = ReplayRows(reply_examples(tokenizer, REPLIES), rows=2, seed=3, collate=lambda batch: [e.key for e in batch])
    first = [rows.batch(0, step) for step in range(3)]
    assert first == [rows.batch(0, step) for step in range(3)]  # a resumed epoch draws the same rows
    assert sorted(first[0] + first[1][:1]) == ["reply-0", "reply-1", "reply-2"]  # each once before any twice
    assert any(rows.batch(epoch, 0) != first[0] for epoch in range(1, 6))


def _train(tokenizer, out_dir, replay_weight=None):
    config = TrainConfig(epochs=4, learning_rate=2e-2, batch_size=2, lora_rank=4, lora_alpha=8,
                         replay="self" if replay_weight else "none", replay_weight=replay_weight or 1.0)
    replay = reply_examples(tokenizer, REPLIES) if replay_weight else None
    model = make_model(len(tokenizer))
    metrics = loop.train_adapter(model, tokenizer.pad_token_id, examples(tokenizer) * 2, METHODS["sft"], config,
                                 out_dir, seed=5, replay_examples=replay)
    return model, metrics


def test_self_replay_holds_the_model_closer_to_the_base_on_its_own_replies(tokenizer, tmp_path):
    from peft import PeftModel

    replies = reply_examples(tokenizer, REPLIES)
    drifts = {}
    for weight in (None, 5.0):
        _, metrics = _train(tokenizer, tmp_path / str(weight), weight)
        model = PeftModel.from_pretrained(make_model(len(tokenizer)), str(tmp_path / str(weight) / "adapter")).eval()
        drifts[weight] = sum(retention.drift(model, tokenizer.pad_token_id, replies, 3))
        assert ("replay_kl" in metrics["epochs"][-1]) == bool(weight)
    assert drifts[5.0] < 0.5 * drifts[None]


def test_open_book_replay_holds_the_student_s_reading_of_a_passage_closer_to_the_base(tokenizer, tmp_path):
    """pd learns closed-book; the replay rows (its answers with the passage) keep the open-book rows near the base."""
    from peft import PeftModel

    answers = examples(tokenizer)
    rows = open_book_examples(answers)
    assert [row.student_ids for row in rows] == [example.teacher_ids for example in answers]
    drifts = {}
    for replay in ("none", "open-book"):
        config = TrainConfig(epochs=4, learning_rate=2e-2, batch_size=2, lora_rank=4, lora_alpha=8, replay=replay,
                             replay_weight=5.0)
        loop.train_adapter(make_model(len(tokenizer)), tokenizer.pad_token_id, answers * 2, METHODS["pd"],
                           config, tmp_path / replay, seed=5, replay_examples=rows if replay != "none" else None)
        model = PeftModel.from_pretrained(make_model(len(tokenizer)), str(tmp_path / replay / "adapter")).eval()
        drifts[replay] = sum(retention.drift(model, tokenizer.pad_token_id, rows, 2))
    assert drifts["open-book"] < 0.5 * drifts["none"]


def test_training_with_replay_resumes_to_the_same_adapter(tokenizer, tmp_path, monkeypatch):
    _, whole = _train(tokenizer, tmp_path / "whole", 1.0)
    with killed_after_epoch(monkeypatch, 2):
        _train(tokenizer, tmp_path / "resumed", 1.0)
    _, resumed = _train(tokenizer, tmp_path / "resumed", 1.0)
    assert [e["replay_kl"] for e in resumed["epochs"]] == pytest.approx([e["replay_kl"] for e in whole["epochs"]])
    assert_same_adapter(tmp_path / "whole" / "adapter", tmp_path / "resumed" / "adapter")


class KnowingExpert(ScriptedExpert):
    """The base model answers every general question right; a model with an adapter forgets
    the capitals."""

    answers = {q["question"]: q["answers"][0] for q in retention.bundled("general_questions")}

    def generate_batch(self, prompts, sampling, seed):
        if prompts[0] not in self.answers:
            return super().generate_batch(prompts, sampling, seed)
        forgets = "adapter" in self.identity
        return ["i forgot ." if forgets and prompt.startswith("What is the capital") else f"it is {self.answers[prompt]} ."
                for prompt in prompts]


def knowing_backend(model, adapter=None, server_url="", api_key_env=None):
    return KnowingExpert(f"{model.name}|{'adapter ' + path_digest(adapter) if adapter else ''}")


def test_a_run_reports_retention_and_drift_of_every_trained_method(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(pipeline, "make_backend", knowing_backend)
    docs, tests = write_inputs(tmp_path)
    run, config = RunDir(tmp_path / "run"), settings(tiny_model_dir, "methods=[base,sft,pd]", "eval.retention_questions=0")
    pipeline.prepare(run, config, docs, tests)
    table = pipeline.run_all(run, config)

    questions = retention.bundled("general_questions")
    capitals = sum(q["question"].startswith("What is the capital") for q in questions)
    expected = 100 * (len(questions) - capitals) / len(questions)
    report = json.loads((run.path / "report.json").read_text())["methods"]
    for method in ("sft", "pd"):
        assert report[method]["retention"] == pytest.approx(expected)
        assert report[method]["known"] == report[method]["general_questions"] == len(questions)
        low, high = report[method]["retention_interval"]
        assert low < expected < high
        kl = [r["kl"] for r in read_jsonl(run.retention(f"{method}.drift"))]
        assert len(kl) == 40 and report[method]["drift"] == pytest.approx(sum(kl) / 40) and report[method]["drift"] > 0
    assert "retention" not in report["base"]
    assert f"{expected:.0f} [" in table and "drift (KL)" in table
    markdown = (run.path / "report.md").read_text()
    assert "retention: pd - sft: +0.0 points" in markdown and "the share the trained model still does" in markdown


def test_replay_trains_every_method_on_the_same_replies_and_stays_out_of_old_keys(tmp_path, tiny_model_dir, ran):
    docs, tests = write_inputs(tmp_path)
    run = RunDir(tmp_path / "run")
    plain = settings(tiny_model_dir, "methods=[base,uft,sft]", "eval.retention=false")
    pipeline.prepare(run, plain, docs, tests)
    pipeline.run_all(run, plain)
    keys = {name: json.loads(run.manifest(name).read_text())["settings"] for name in ("train-uft", "train-sft")}
    assert not any(name.startswith("train.replay") for settings in keys.values() for name in settings)
    ran.clear()

    replaying = dataclasses.replace(plain, train=dataclasses.replace(plain.train, replay="self"))
    pipeline.run_all(run, replaying)
    assert ran == ["replay", "train-uft", "train-sft", "evaluate-uft", "evaluate-sft", "self-check-uft",
                   "self-check-sft"]
    assert [r["prompt"] for r in read_jsonl(run.replay)] == retention.read_prompts("")
    history = json.loads((run.adapter_dir("sft") / "metrics.json").read_text())["epochs"]
    assert all(epoch["replay_kl"] >= 0 for epoch in history)
    ran.clear()
    pipeline.run_all(run, replaying)
    assert ran == []


def test_open_book_replay_trains_on_each_answer_with_its_passage_and_leaves_uft_and_the_replay_stage_out(
        tmp_path, tiny_model_dir, ran, monkeypatch):
    from promptdistill.models import load_tokenizer
    from promptdistill.train.data import encode_answer, encode_teacher_prompt

    docs, tests = write_inputs(tmp_path)
    run = RunDir(tmp_path / "run")
    plain = settings(tiny_model_dir, "methods=[base,uft,sft,pd]", "eval.retention=false",
                     "synth.teacher_instruction=Answer from the text.")
    pipeline.prepare(run, plain, docs, tests)
    pipeline.run_all(run, plain)
    uft_key = json.loads(run.manifest("train-uft").read_text())["settings"]
    ran.clear()
    replayed = {}
    real_train = loop.train_adapter

    def recording(model, pad_id, examples, method, *args, replay_examples=None, **kwargs):
        replayed[method.name] = replay_examples
        return real_train(model, pad_id, examples, method, *args, replay_examples=replay_examples, **kwargs)

    monkeypatch.setattr(loop, "train_adapter", recording)
    open_book = dataclasses.replace(plain, train=dataclasses.replace(plain.train, replay="open-book"))
    pipeline.run_all(run, open_book)
    assert ran == ["train-sft", "train-pd", "evaluate-sft", "evaluate-pd", "self-check-sft", "self-check-pd"]
    # no replay stage, uft as it was
    assert json.loads(run.manifest("train-uft").read_text())["settings"] == uft_key and not run.replay.exists()
    tokenizer = load_tokenizer(plain.model)
    passages = {passage.id: passage.text for passage in run.load_passages()}
    questions = {question["id"]: question for question in read_jsonl(run.questions)}
    for name in ("sft", "pd"):
        answers = read_jsonl(run.answers(name))
        expected = []
        for answer in answers:  # the student reads the teacher's prompt: passage, instruction, question
            question = questions[answer["question_id"]]
            prefix, suffix = encode_teacher_prompt(tokenizer, passages[question["passage_id"]], question["question"],
                                                   "Answer from the text.")
            expected.append((prefix + suffix, encode_answer(tokenizer, answer["answer"])))
        assert [(row.student_ids, row.answer_ids) for row in replayed[name]] == expected
        assert all(row.teacher_ids == row.student_ids for row in replayed[name])  # the base model on the same tokens
        key = json.loads(run.manifest(f"train-{name}").read_text())["settings"]
        assert key["train.replay"] == "open-book" and key["synth.teacher_instruction"] == "Answer from the text."
        history = json.loads((run.adapter_dir(name) / "metrics.json").read_text())["epochs"]
        assert all(epoch["replay_kl"] >= 0 for epoch in history)
    ran.clear()
    pipeline.run_all(run, open_book)
    assert ran == []
