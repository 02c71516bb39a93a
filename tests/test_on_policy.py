"""On-policy distillation (train.on_policy_share): a share of each batch answered by the student
itself with its adapter on, scored by the online teacher, resumable to the same adapter."""

import dataclasses

import pytest
import torch

import promptdistill.train.loop as loop
from promptdistill.methods import METHODS, Training
from promptdistill.models import add_lora, left_pad
from promptdistill.train.losses import distill_loss, support_distill_loss
from promptdistill.train.data import Example
from promptdistill.train.on_policy import AnswersAhead, on_policy_rows, student_answers

from conftest import assert_same_adapter, give_adapter_an_effect, killed_after_epoch, make_model
from test_train_data import examples
from test_train_resume import CONFIG

ON_POLICY = dataclasses.replace(CONFIG, on_policy_share=0.5, on_policy_max_tokens=6, distill_ce_weight=1.0)


def test_the_share_of_rows_the_student_answers():
    assert [on_policy_rows(8, share) for share in (0, 0.01, 0.25, 0.5, 1)] == [0, 1, 2, 4, 8]


def test_the_student_answers_with_its_adapter_on_and_keeps_each_question_and_teacher_prompt(tokenizer):
    peft_model = add_lora(make_model(len(tokenizer)), CONFIG)
    give_adapter_an_effect(peft_model, std=100.0)  # decisive: its greedy answers differ from the base model's
    peft_model.train()
    rows = examples(tokenizer)
    torch.manual_seed(0)
    answered = student_answers(peft_model, rows, tokenizer.pad_token_id, 1.0, 6)
    assert peft_model.training  # left as it was; it sampled in eval mode, without LoRA dropout
    peft_model.eval()

    prompts, mask = left_pad([row.student_ids for row in rows], tokenizer.pad_token_id)
    stop = rows[0].answer_ids[-1]
    sample = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=6,
                  pad_token_id=tokenizer.pad_token_id, eos_token_id=stop)
    torch.manual_seed(0)
    expected = peft_model.generate(input_ids=prompts, attention_mask=mask, **sample)[:, prompts.shape[1]:].tolist()
    for row, answer, tokens in zip(rows, answered, expected):
        assert answer.answer_ids == (tokens[:tokens.index(stop) + 1] if stop in tokens else tokens)
        assert (answer.student_ids, answer.teacher_ids, answer.teacher_prefix_length) == (
            row.student_ids, row.teacher_ids, row.teacher_prefix_length)
    # Near temperature 0 the student's answers are the adapted model's greedy ones, not the base model's.
    cold = [answer.answer_ids for answer in student_answers(peft_model, rows, tokenizer.pad_token_id, 1e-6, 6)]
    greedy = dict(do_sample=False, max_new_tokens=6, pad_token_id=tokenizer.pad_token_id, eos_token_id=stop)
    adapted = peft_model.generate(input_ids=prompts, attention_mask=mask, **greedy)[:, prompts.shape[1]:].tolist()
    with peft_model.disable_adapter():
        base = peft_model.generate(input_ids=prompts, attention_mask=mask, **greedy)[:, prompts.shape[1]:].tolist()
    assert cold == [tokens[:tokens.index(stop) + 1] if stop in tokens else tokens for tokens in adapted] != base


def test_the_expert_s_and_the_student_s_rows_weigh_by_their_answer_tokens():
    def batch(lengths):
        mask = torch.tensor([[column >= 4 - length for column in range(4)] for length in lengths])
        return {"student_input_ids": torch.zeros(len(lengths), 6, dtype=torch.long), "student_shared": 0,
                "answer_mask": mask}

    parts = loop.weighted_parts([(batch([3, 3]), "expert"), (batch([2]), "student")], 0, "token")
    assert [(share, config) for _, share, config in parts] == [(0.75, "expert"), (0.25, "student")]
    parts = loop.weighted_parts([(batch([3, 3]), "expert"), (batch([2]), "student")], 0, "sequence")
    assert [share for _, share, _ in parts] == pytest.approx([2 / 3, 1 / 3])


def record_training(monkeypatch) -> tuple[list, list]:
    """What training samples (each call's answers) and scores (per part: its answer tokens, whether
    its teacher is online, its cross-entropy weight and its rows), recorded as it goes."""
    sampled, scored = [], []
    real_answers, real_loss = loop.student_answers, loop.batch_loss

    def recording_answers(*args, **kwargs):
        sampled.append(real_answers(*args, **kwargs))
        return sampled[-1]

    def recording_loss(training, student, part, config, *args):
        scored.append((part["answer_ids"][part["answer_mask"]].tolist(), "teacher_input_ids" in part,
                       config.distill_ce_weight, part["answer_mask"].shape[0]))
        return real_loss(training, student, part, config, *args)

    monkeypatch.setattr(loop, "student_answers", recording_answers)
    monkeypatch.setattr(loop, "batch_loss", recording_loss)
    return sampled, scored


def test_each_batch_trains_on_the_student_s_answers_with_the_online_teacher_and_no_cross_entropy(
        tokenizer, tmp_path, monkeypatch):
    sampled, scored = record_training(monkeypatch)
    rows = examples(tokenizer) * 3  # 3 batches of 2 an epoch: one row of each is the student's
    metrics = loop.train_adapter(make_model(len(tokenizer)), tokenizer.pad_token_id, rows, METHODS["pd"], ON_POLICY,
                                 tmp_path, seed=7)
    assert len(sampled) == 3 * ON_POLICY.epochs and all(len(answers) == 1 for answers in sampled)
    student_parts = [part for part in scored if part[2] == 0.0]
    assert [tokens for tokens, *_ in student_parts] == [answers[0].answer_ids for answers in sampled]
    assert all(online for _, online, *_ in scored)  # no teacher cache here: every row's teacher is online
    assert len(scored) == 2 * len(sampled)  # and every batch has one row of the expert's, with its cross-entropy
    assert all(epoch["sampling_seconds"] >= 0 for epoch in metrics["epochs"])
    sampled.clear()  # sft never samples: its answers are fixed targets
    loop.train_adapter(make_model(len(tokenizer)), tokenizer.pad_token_id, rows, METHODS["sft"], ON_POLICY,
                       tmp_path / "sft", seed=7)
    assert sampled == []


def test_answers_ahead_samples_the_rows_of_several_batches_at_once_in_the_loader_s_order():
    rows = [Example(key=str(number), student_ids=[number], answer_ids=[0], teacher_ids=[number])
            for number in range(10)]
    calls = []

    def sample(chosen):
        calls.append([row.key for row in chosen])
        return [dataclasses.replace(row, key=f"on-policy-{row.key}") for row in chosen]

    ahead = AnswersAhead(rows, 0.5, 2, sample)
    planned = [[3, 1], [0, 5, 7, 2], [9], [4, 6], [8]]  # a last group of one batch
    ahead.start_epoch(planned)
    firsts = [[rows[index] for index in batch[:on_policy_rows(len(batch), 0.5)]] for batch in planned]
    answered = [[row.key for row in ahead.for_batch(number, first)] for number, first in enumerate(firsts)]
    assert calls == [["3", "0", "5"], ["9", "4"], ["8"]]
    assert answered == [["on-policy-3"], ["on-policy-0", "on-policy-5"], ["on-policy-9"], ["on-policy-4"],
                        ["on-policy-8"]]
    ahead.start_epoch(planned)
    with pytest.raises(RuntimeError, match="out of step with the loader at batch 0"):
        ahead.for_batch(0, [rows[1]])


def test_sampling_ahead_answers_an_epoch_s_batches_in_one_generation(tokenizer, tmp_path, monkeypatch):
    sampled, scored = record_training(monkeypatch)
    config = dataclasses.replace(ON_POLICY, on_policy_ahead=3)
    loop.train_adapter(make_model(len(tokenizer)), tokenizer.pad_token_id, examples(tokenizer) * 3, METHODS["pd"],
                       config, tmp_path, seed=7)
    assert [len(answers) for answers in sampled] == [3] * config.epochs  # 3 batches of 2 an epoch, one row each
    assert [tokens for tokens, _, weight, _ in scored if weight == 0.0] == [
        answer.answer_ids for answers in sampled for answer in answers]


def test_added_on_policy_rows_leave_every_expert_row_in_the_batch(tokenizer, tmp_path, monkeypatch):
    _, scored = record_training(monkeypatch)
    config = dataclasses.replace(ON_POLICY, on_policy_mix="add")
    loop.train_adapter(make_model(len(tokenizer)), tokenizer.pad_token_id, examples(tokenizer) * 3, METHODS["pd"],
                       config, tmp_path, seed=7)
    # Each batch of 2: both expert rows with their cross-entropy, and the student's answer to the first.
    assert [(weight, rows) for _, _, weight, rows in scored] == [(1.0, 2), (0.0, 1)] * 3 * config.epochs


@pytest.mark.parametrize("ahead", [1, 2])
def test_an_interrupted_on_policy_training_resumes_to_the_same_adapter(tokenizer, tmp_path, monkeypatch, ahead):
    rows = examples(tokenizer) * 3

    def train(out):
        return loop.train_adapter(make_model(len(tokenizer)), tokenizer.pad_token_id, rows, METHODS["pd"],
                                  dataclasses.replace(ON_POLICY, on_policy_ahead=ahead), out, seed=7)

    whole = train(tmp_path / "whole")
    with killed_after_epoch(monkeypatch, 2):
        train(tmp_path / "resumed")
    resumed = train(tmp_path / "resumed")
    assert [e["loss"] for e in resumed["epochs"]] == pytest.approx([e["loss"] for e in whole["epochs"]], abs=1e-6)
    assert_same_adapter(tmp_path / "whole" / "adapter", tmp_path / "resumed" / "adapter")


def test_with_a_teacher_cache_the_expert_s_rows_read_it_and_the_student_s_the_online_teacher(tokenizer, tmp_path,
                                                                                            monkeypatch):
    from promptdistill.teacher import TeacherCache, TeacherInput, build_teacher_cache

    rows = examples(tokenizer)
    inputs = [TeacherInput(e.key, e.teacher_ids[:e.teacher_prefix_length], e.teacher_ids[e.teacher_prefix_length:],
                           e.answer_ids) for e in rows]
    build_teacher_cache(make_model(len(tokenizer)), inputs, top_k=5, temperature=1.0, batch_size=2,
                        out_dir=tmp_path / "teacher", settings={})
    scored, real_loss = [], loop.batch_loss

    def recording_loss(training, student, part, config, *args):
        scored.append(("teacher_token_ids" in part, "teacher_input_ids" in part, config.distill_ce_weight))
        return real_loss(training, student, part, config, *args)

    monkeypatch.setattr(loop, "batch_loss", recording_loss)
    loop.train_adapter(make_model(len(tokenizer)), tokenizer.pad_token_id, rows * 3, METHODS["pd"], ON_POLICY,
                       tmp_path / "run", seed=7, teacher_cache=TeacherCache(tmp_path / "teacher"))
    assert sorted(set(scored)) == [(False, True, 0.0), (True, False, 1.0)]
    assert scored.count((False, True, 0.0)) == scored.count((True, False, 1.0)) == 3 * ON_POLICY.epochs


@pytest.mark.parametrize("support", ["teacher", "student"])
def test_the_online_teacher_s_divergence_reads_a_top_k_support_when_set(support):
    torch.manual_seed(0)
    student, teacher, answer_ids = torch.randn(3, 9), torch.randn(3, 9) * 2, torch.tensor([1, 2, 3])
    config = dataclasses.replace(ON_POLICY, distill_ce_weight=0.0, divergence="reverse")
    whole = loop.token_loss(Training.ANSWERS_DISTILL, config, student, answer_ids, teacher, weights=None)
    assert whole.item() == pytest.approx(distill_loss(student, teacher, config.distill_temperature, "reverse").item())
    cut = dataclasses.replace(config, online_top_k=3, online_support=support)
    assert loop.token_loss(Training.ANSWERS_DISTILL, cut, student, answer_ids, teacher, weights=None).item() == (
        pytest.approx(support_distill_loss(student, teacher, config.distill_temperature, 3, support, "reverse").item()))
    assert support_distill_loss(student, teacher, config.distill_temperature, 3, support, "reverse") < whole
