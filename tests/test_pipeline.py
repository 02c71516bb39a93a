"""Stages on a tiny model with a scripted expert: each reruns exactly when what it reads changed."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from promptdistill import judge, pipeline
from promptdistill.config import resolve_config
from promptdistill.files import path_digest, read_jsonl, write_jsonl
from promptdistill.methods import METHODS
from promptdistill.rundir import RunDir, Stage

DOCS = {"town": "velmora was founded in 1623 by tobin quarrel .\n\nthe lighthouse is yellow .\n",
        "river": "the oskeva river is 96 steps from the bridge .\n"}
RETENTION = ["retention-base", "retention-uft", "retention-sft", "retention-pd"]


def evaluations(*names: str) -> list[str]:
    """The stages that evaluate these methods: on the test questions, then on the self-check's."""
    return [f"evaluate-{name}" for name in names] + [f"self-check-{name}" for name in names]
TESTS = [{"question": "who founded velmora ?", "answers": ["tobin quarrel"], "doc_id": "town"},
         {"question": "what is the river ?", "answers": ["oskeva"], "doc_id": "river"}]


class ScriptedExpert:
    """Stands in for every generation: questions that name their passage's longest word, answers
    that repeat it, and a record of every prompt it was given (and each one's length cap)."""

    prompts: list[str] = []
    caps: list[int] = []

    def __init__(self, identity: str):
        self.identity = identity

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate_batch(self, prompts, sampling, seed):
        ScriptedExpert.prompts.extend(prompts)
        ScriptedExpert.caps.extend([sampling.max_new_tokens] * len(prompts))
        replies = []
        for row, prompt in enumerate(prompts):
            word = max(prompt.split("\n\n")[0].split(), key=len)
            if prompt.endswith("Write a question about the text above."):
                replies.append(f"what is {word} number {seed % 1000} {row} ?")
            else:
                replies.append(f"{word} at {sampling.temperature} seed {seed % 1000} row {row} .")
        return replies


def scripted_backend(model, adapter=None, server_url="", api_key_env=None, **server_options):
    return ScriptedExpert(f"{model.name}|{path_digest(adapter) if adapter else ''}|{server_url}")


@pytest.fixture
def ran(monkeypatch):
    """The names of the stages that ran (were not skipped), in order."""
    names = []
    real = Stage.run

    def recording(self, run, work):
        did = real(self, run, work)
        if did:
            names.append(self.name)
        return did

    monkeypatch.setattr(Stage, "run", recording)
    monkeypatch.setattr(pipeline, "make_backend", scripted_backend)
    monkeypatch.setattr(judge, "make_backend", scripted_backend)
    ScriptedExpert.prompts, ScriptedExpert.caps = [], []
    return names


def write_inputs(tmp_path, docs=DOCS):
    folder = tmp_path / "docs"
    folder.mkdir(exist_ok=True)
    for name, text in docs.items():
        (folder / f"{name}.md").write_text(text)
    tests = tmp_path / "tests.jsonl"
    tests.write_text("".join(json.dumps(test) + "\n" for test in TESTS))
    return folder, tests


# A run small enough for the tiny model to go through every stage in seconds.
TINY_RUN = ["train.epochs=2", "train.uft_epochs=1", "train.batch_size=2", "train.learning_rate=0.01",
            "corpus.passage_tokens=12", "synth.questions_per_passage=2", "synth.question_style=single",
            "synth.batch_size=2", "eval.max_answer_tokens=4", "eval.retention_questions=12"]


def settings(model_dir, *more):
    return resolve_config(None, [f"model.name={model_dir}", *TINY_RUN, *more])


@pytest.fixture
def finished(tmp_path, tiny_model_dir, ran):
    """A run with every method done once; `ran` is emptied afterwards."""
    docs, tests = write_inputs(tmp_path)
    run, config = RunDir(tmp_path / "run"), settings(tiny_model_dir)
    pipeline.prepare(run, config, docs, tests)
    table = pipeline.run_all(run, config)
    assert [line.split()[0] for line in table.splitlines()[2:2 + len(METHODS)]] == list(METHODS)
    assert ran == ["prepare", "questions", "self-check", "answers-sft", "answers-pd", "train-uft", "train-sft",
                   "teacher", "train-pd"] + evaluations(*METHODS) + RETENTION
    ran.clear()
    ScriptedExpert.prompts, ScriptedExpert.caps = [], []
    return run, config


def test_an_unchanged_run_skips_every_stage(finished, ran):
    run, config = finished
    pipeline.run_all(run, config)
    assert ran == [] and ScriptedExpert.prompts == []


def test_the_report_says_where_the_time_and_memory_went(finished):
    run, _ = finished
    report = json.loads((run.path / "report.json").read_text())
    manifests = {path.stem: json.loads(path.read_text()) for path in (run.path / "manifests").glob("*.json")}
    assert report["stages"] == {name: {"seconds": manifests[name]["seconds"],
                                       "peak_memory_gb": manifests[name]["peak_memory_gb"]}
                                for name in report["stages"]}
    assert list(report["stages"])[:3] == ["prepare", "questions", "self-check"]  # in the order they ran
    markdown = (run.path / "report.md").read_text()
    assert "Where the time went" in markdown and "| train-pd |" in markdown and "peak memory GB" in markdown
    assert set(report["coverage"]) == {"sft", "pd"} and set(report["paired"]) == {
        "pd - sft", "pd - base", "pd - rag", "pd+rag - rag"}


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak memory is measured on Linux only")
def test_each_stage_records_its_own_peak_memory_not_the_process_s_so_far(tmp_path):
    run = RunDir(tmp_path)

    def holding(megabytes):
        def work():
            block = bytearray(megabytes * 2**20)
            block[::4096] = b"x" * len(block[::4096])  # touch every page so that it is resident
            (tmp_path / f"out{megabytes}").write_text("done")
            return {}
        return work

    Stage("big", {}, [], [tmp_path / "out600"]).run(run, holding(600))
    Stage("small", {}, [], [tmp_path / "out1"]).run(run, holding(1))
    costs = run.stage_costs()
    assert list(costs) == ["big", "small"]
    big, small = costs["big"]["peak_memory_gb"], costs["small"]["peak_memory_gb"]
    assert big - small > 0.5  # the second stage's peak does not include the first's 600 MB


kept_by_stages = []  # what a stage's work keeps in memory after it returns


def test_a_stage_in_a_process_of_its_own_writes_its_outputs_and_keeps_its_memory_to_itself(tmp_path, monkeypatch):
    from promptdistill import rundir

    monkeypatch.setattr(rundir, "STAGE_PROCESSES", True)
    run = RunDir(tmp_path)

    def work():
        block = bytearray(300 * 2**20)
        block[::4096] = b"x" * len(block[::4096])
        kept_by_stages.append(block)
        (tmp_path / "out").write_text("done")
        return {"pid": os.getpid()}

    assert Stage("kept", {}, [], [tmp_path / "out"]).run(run, work)
    manifest = json.loads(run.manifest("kept").read_text())
    assert manifest["counts"]["pid"] != os.getpid() and manifest["peak_memory_gb"] >= 0.3
    assert (tmp_path / "out").read_text() == "done" and kept_by_stages == []
    assert not Stage("kept", {}, [], [tmp_path / "out"]).run(run, work)  # done: skipped


def test_an_error_or_a_death_in_a_stage_s_process_is_raised_in_the_command_s(tmp_path, monkeypatch, capfd):
    from promptdistill import rundir
    from promptdistill.errors import UserError

    monkeypatch.setattr(rundir, "STAGE_PROCESSES", True)
    run = RunDir(tmp_path)

    def failing(error):
        def work():
            raise error
        return work

    with pytest.raises(UserError, match="^questions.jsonl line 3: not JSON$"):
        Stage("user", {}, [], [tmp_path / "out"]).run(run, failing(UserError("questions.jsonl line 3: not JSON")))
    assert "Traceback" not in capfd.readouterr().err  # a user's error is one line
    with pytest.raises(ValueError, match="a bug"):
        Stage("bug", {}, [], [tmp_path / "out"]).run(run, failing(ValueError("a bug")))
    assert "bug, in the stage's process:\nTraceback" in capfd.readouterr().err  # where it happened
    class Unpicklable(Exception):
        def __init__(self, code, detail):
            super().__init__(f"{code}: {detail}")

    with pytest.raises(RuntimeError, match=r"^odd: Unpicklable\('7: no'\)"):
        Stage("odd", {}, [], [tmp_path / "out"]).run(run, failing(Unpicklable(7, "no")))
    def interrupted():
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, whatever earlier tests set
        os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):  # Ctrl-C reaches the child
        Stage("stopped", {}, [], [tmp_path / "out"]).run(run, interrupted)
    with pytest.raises(RuntimeError, match=r"^killed: its process ended without finishing \(signal SIGKILL"):
        Stage("killed", {}, [], [tmp_path / "out"]).run(run, lambda: os.kill(os.getpid(), signal.SIGKILL))
    assert not list(run.path.glob("manifests/*.json"))


@pytest.mark.parametrize("setting, expected", [(None, True), ("0", False)])
def test_the_command_line_runs_stages_in_processes_of_their_own_unless_told_not_to(setting, expected, monkeypatch):
    from promptdistill import cli, rundir

    monkeypatch.setattr(rundir, "STAGE_PROCESSES", not expected)  # and back afterwards
    if setting is None:
        monkeypatch.delenv("PROMPTDISTILL_STAGE_PROCESSES")
    else:
        monkeypatch.setenv("PROMPTDISTILL_STAGE_PROCESSES", setting)
    monkeypatch.setattr(sys, "argv", ["promptdistill", "--help"])
    with pytest.raises(SystemExit):
        cli.main()
    assert rundir.STAGE_PROCESSES is expected


def test_a_pipeline_runs_with_its_stages_in_processes_of_their_own(tmp_path, tiny_model_dir):
    """The command line's own process, not this one: the stages' tensor code runs in forked children."""
    docs, tests = write_inputs(tmp_path)
    out = tmp_path / "run"
    env = {key: value for key, value in os.environ.items() if key != "PROMPTDISTILL_STAGE_PROCESSES"}
    subprocess.run([sys.executable, "-m", "promptdistill", "run", "--docs", str(docs), "--test-questions", str(tests),
                    "--out", str(out), "--model", str(tiny_model_dir), "--methods", "base,sft",
                    *(arg for value in TINY_RUN for arg in ("--set", value))], env=env, check=True, capture_output=True)
    manifests = [json.loads(path.read_text()) for path in (out / "manifests").glob("*.json")]
    assert {m["stage"] for m in manifests} >= {"questions", "answers-sft", "train-sft", "evaluate-sft",
                                               "retention-sft"}
    assert (out / "report.md").is_file()


def test_distillation_temperature_retrains_pd_only(finished, ran):
    run, config = finished
    changed = dataclasses.replace(config, train=dataclasses.replace(config.train, distill_temperature=3.0))
    pipeline.run_all(run, changed)
    assert ran == ["teacher", "train-pd", *evaluations("pd", "pd+rag"), "retention-pd"]


def test_a_cross_entropy_weight_retrains_pd_only_and_zero_leaves_the_run_as_it_was(finished, ran):
    run, config = finished
    pipeline.run_all(run, dataclasses.replace(config, train=dataclasses.replace(config.train, distill_ce_weight=0.0)))
    assert ran == []  # off, the setting is not in the key: runs from before it existed stand
    pipeline.run_all(run, dataclasses.replace(config, train=dataclasses.replace(config.train, distill_ce_weight=0.5)))
    assert ran == ["train-pd", *evaluations("pd", "pd+rag"), "retention-pd"]  # the teacher cache stands


def test_a_teacher_instruction_reanswers_retrains_and_reasks_with_the_passage_and_empty_leaves_the_run(finished, ran):
    run, config = finished
    pipeline.run_all(run, dataclasses.replace(config, synth=dataclasses.replace(config.synth, teacher_instruction="")))
    assert ran == []  # empty, the setting is not in the key: runs from before it existed stand
    instruction = "Answer from the text."
    pipeline.run_all(run, dataclasses.replace(config, synth=dataclasses.replace(config.synth,
                                                                               teacher_instruction=instruction)))
    # The scripted expert's answers do not depend on the prompt, so sft's training data and the
    # self-check's references stand; pd's teacher reads the prompt.
    assert ran == ["self-check", "answers-sft", "answers-pd", "teacher", "train-pd",
                   *evaluations("pd", "rag", "pd+rag", "open-book"), "retention-pd"]
    asked = [prompt for prompt in ScriptedExpert.prompts if "?" in prompt.split("\n\n")[-1]]
    with_passage = [prompt for prompt in asked if "\n\n" in prompt]  # closed-book prompts are the question alone
    assert with_passage and all(prompt.split("\n\n")[-2] == instruction for prompt in with_passage)


def test_rag_k_reevaluates_the_retrieving_methods_only(finished, ran):
    run, config = finished
    pipeline.run_all(run, dataclasses.replace(config, eval=dataclasses.replace(config.eval, rag_k=1)))
    assert ran == evaluations("rag", "pd+rag")
    assert all(len(record["retrieved"]) == 1 for record in read_jsonl(run.eval("rag")))


def test_turning_on_the_judge_grades_again_but_answers_nothing_again(finished, ran):
    run, config = finished
    judged = dataclasses.replace(config, eval=dataclasses.replace(config.eval, judge=config.model.name))
    pipeline.run_all(run, judged)
    assert ran == [f"judge-{name}" for name in METHODS] + [f"self-check-judge-{name}" for name in METHODS]
    assert ScriptedExpert.prompts and all(p.startswith("Decide whether a proposed answer") for p in ScriptedExpert.prompts)
    assert json.loads((run.path / "report.json").read_text())["methods"]["pd"]["judge"] == 0.0


def test_editing_one_document_reruns_its_questions_and_everything_downstream(finished, ran, tmp_path):
    run, config = finished
    questions_before = {q["id"]: q for q in read_jsonl(run.questions)}
    docs, tests = write_inputs(tmp_path, {**DOCS, "river": "the oskeva river is 97 steps from the bridge .\n"})
    pipeline.prepare(run, config, docs, tests)
    pipeline.run_all(run, config)
    assert ran == ["prepare", "questions", "self-check", "answers-sft", "answers-pd", "train-uft", "train-sft",
                   "teacher", "train-pd"] + evaluations(*METHODS) + ["retention-uft", "retention-pd"]
    # The base model's retention stands, and so does sft's: its questions and answers name the
    # passage's longest word, unchanged, so its adapter came out byte-equal. uft reads the passage,
    # pd's teacher too.
    # The expert wrote and answered questions about the edited passage alone (evaluation prompts
    # aside); the other passages' questions stand.
    expert = [p for p, cap in zip(ScriptedExpert.prompts, ScriptedExpert.caps) if cap != config.eval.max_answer_tokens
              and (p.endswith("Write a question about the text above.") or re.search(r"number \d+ \d+ \?$", p))]
    # Two questions written, each answered for sft and pd; one self-check question and its reference.
    assert len(expert) == 2 + 2 * 2 + 1 + 1
    assert all("97 steps" in prompt for prompt in expert)
    questions_after = {q["id"]: q for q in read_jsonl(run.questions)}
    assert questions_after.keys() == questions_before.keys()
    assert all(questions_after[i] == questions_before[i] for i in questions_before if not i.startswith("river"))


def test_a_damaged_output_is_made_again(finished, ran):
    run, config = finished
    adapter = run.adapter("pd") / "adapter_model.safetensors"
    original = adapter.read_bytes()
    adapter.write_bytes(original[:100])  # truncated
    pipeline.run_all(run, config)
    assert ran == ["train-pd"]  # the same settings retrain to the same adapter: evaluation stands
    assert adapter.read_bytes() == original


def test_an_edited_output_is_made_again_and_its_consumers_stand(finished, ran):
    run, config = finished
    original = run.answers("sft").read_text()
    answers = read_jsonl(run.answers("sft"))
    write_jsonl(run.answers("sft"), [{**answers[0], "answer": "tobin quarrel ."}] + answers[1:])
    pipeline.run_all(run, config)
    assert ran == ["answers-sft"] and ScriptedExpert.prompts == []  # remade from its stored batches
    assert run.answers("sft").read_text() == original


def test_new_test_questions_reevaluate_but_train_nothing_again(finished, ran, tmp_path):
    """Test questions reach evaluation alone: never question writing, answering or training."""
    run, config = finished
    docs, tests = write_inputs(tmp_path)
    tests.write_text(tests.read_text() + json.dumps({"question": "what is yellow ?", "answers": ["lighthouse"],
                                                     "doc_id": "town"}) + "\n")
    pipeline.prepare(run, config, docs, tests)
    pipeline.run_all(run, config)
    assert ran == ["prepare"] + [f"evaluate-{name}" for name in METHODS]
    assert json.loads((run.path / "report.json").read_text())["counts"]["test_questions"] == 3


def test_pd_and_sft_answers_are_independent_samples_and_each_trains_on_its_own(finished, tiny_model_dir):
    run, config = finished
    pd, sft = read_jsonl(run.answers("pd")), read_jsonl(run.answers("sft"))
    assert [a["question_id"] for a in pd] == [a["question_id"] for a in sft]
    seeds = lambda answers: [re.search(r"seed (\d+)", a["answer"]).group(1) for a in answers]  # noqa: E731
    assert not set(seeds(pd)) & set(seeds(sft))  # another seed for every batch
    from promptdistill.models import load_tokenizer

    tokenizer = load_tokenizer(config.model)
    for name, answers in (("pd", pd), ("sft", sft)):
        examples = pipeline.training_examples(run, config, tokenizer, METHODS[name])
        assert [e.answer_ids[:-1] for e in examples] == [
            tokenizer(a["answer"], add_special_tokens=False).input_ids for a in answers]
    assert all(e.teacher_ids for e in pipeline.training_examples(run, config, tokenizer, METHODS["pd"]))
    assert all(e.teacher_ids is None for e in pipeline.training_examples(run, config, tokenizer, METHODS["sft"]))


def test_several_pd_answers_per_question_reanswer_and_retrain_pd_alone_each_answer_its_own_example(finished, ran):
    run, config = finished
    per_question = lambda count: dataclasses.replace(  # noqa: E731
        config, synth=dataclasses.replace(config.synth, pd_answers_per_question=count))
    pipeline.run_all(run, per_question(1))
    assert ran == []  # one, the setting is not in the key: runs from before it existed stand
    pipeline.run_all(run, per_question(3))
    assert ran == ["answers-pd", "teacher", "train-pd", *evaluations("pd", "pd+rag"), "retention-pd"]
    questions, answers = read_jsonl(run.questions), read_jsonl(run.answers("pd"))
    assert [a["question_id"] for a in answers] == [q["id"] for q in questions for _ in range(3)]
    assert len({a["answer"] for a in answers}) == len(answers)  # each one a sample of its own
    from promptdistill.models import load_tokenizer
    from promptdistill.teacher import TeacherCache

    examples = pipeline.training_examples(run, per_question(3), load_tokenizer(config.model), METHODS["pd"])
    assert [e.key for e in examples] == [key for q in questions for key in (q["id"], f"{q['id']}#1", f"{q['id']}#2")]
    cache = TeacherCache(run.teacher)  # one entry per answer, over that answer's tokens
    assert all(cache[e.key].answer_ids.tolist() == e.answer_ids for e in examples)
    assert json.loads((run.adapter_dir("pd") / "metrics.json").read_text())["examples"] == len(answers)


def test_a_stage_command_records_a_set_and_says_so(finished, monkeypatch, capsys):
    import sys

    from promptdistill import cli

    run, _ = finished
    monkeypatch.setattr(sys, "argv", ["promptdistill", "evaluate", str(run.path), "--method", "base",
                                      "--set", "eval.rag_k=2"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 0
    assert "eval.rag_k 7 -> 2" in " ".join(capsys.readouterr().err.split())
    assert run.load_config().eval.rag_k == 2


def test_evaluating_a_trained_method_before_training_names_the_missing_adapter(tmp_path, tiny_model_dir, ran):
    from promptdistill.errors import UserError

    docs, tests = write_inputs(tmp_path)
    run, config = RunDir(tmp_path / "run"), settings(tiny_model_dir)
    pipeline.prepare(run, config, docs, tests)
    with pytest.raises(UserError, match=r"evaluate-sft: .*adapters/sft/adapter is missing"):
        pipeline.evaluate(run, config, METHODS["sft"])


def test_uft_examples_mask_nothing_but_padding(finished):
    from promptdistill.models import load_tokenizer
    from promptdistill.train.data import Collator

    run, config = finished
    tokenizer = load_tokenizer(config.model)
    examples = pipeline.training_examples(run, config, tokenizer, METHODS["uft"])
    batch = Collator(tokenizer.pad_token_id)(examples)
    for row, passage in enumerate(run.load_passages()):
        tokens = tokenizer(passage.text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        real = batch["student_attention_mask"][row].bool()
        # Every real token but the first is a target; padding is not.
        assert batch["student_input_ids"][row][real].tolist() == tokens
        assert batch["answer_mask"][row].sum().item() == len(tokens) - 1
        assert batch["answer_ids"][row][batch["answer_mask"][row]].tolist() == tokens[1:]
    assert not batch["answer_mask"].all()  # the shorter passage has padding, left out


def test_rag_prompts_carry_exactly_k_retrieved_passages(finished):
    from promptdistill.prompts import teacher_prompt

    run, config = finished
    pipeline.evaluate(run, dataclasses.replace(config, eval=dataclasses.replace(config.eval, rag_k=2)), METHODS["rag"])
    passages = {p.id: p for p in run.load_passages()}
    records = read_jsonl(run.eval("rag"))
    velmora = next(r for r in records if r["question"] == "who founded velmora ?")
    assert velmora["retrieved"][0] == "town#0" and velmora["retrieval_hit"] is True  # names velmora's founder
    expected = [teacher_prompt("\n\n".join(passages[i].text for i in r["retrieved"]), r["question"]) for r in records]
    assert sorted(ScriptedExpert.prompts) == sorted(expected)
    assert all(len(r["retrieved"]) == 2 for r in records)
