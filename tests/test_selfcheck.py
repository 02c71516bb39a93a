"""The self-check: held-out questions the expert wrote, the teacher's answers as references, and a
run without test questions from documents to a report."""

import json
import sys

import pytest
from test_pipeline import ScriptedExpert, ran, settings, write_inputs  # noqa: F401 (ran: a fixture)

from promptdistill import cli, pipeline
from promptdistill.config import resolve_config
from promptdistill.files import read_jsonl
from promptdistill.rundir import RunDir
from promptdistill.selfcheck import key_span, questions_per_passage
from promptdistill.synth import write_questions


@pytest.mark.parametrize("reference, question, span", [
    ("Velmora was founded in 1623 by Tobin Quarrel.", "Who founded Velmora?", "Tobin Quarrel"),
    ("Velmora was founded in 1623 by a fisherman named Tobin Quarrel.", "When was Velmora founded?", "1623"),
    ("About 3,800 people live in Velmora today.", "How many people live in Velmora?", "3,800"),
    ("The Velmora lighthouse is painted saffron yellow.", "What colour is the Velmora lighthouse?",
     "painted saffron yellow"),
    ("It has ninety-six steps.", "How many steps does the lighthouse have?", "ninety-six"),
    ("The recipe is attributed to Agnes Pellory, a cook.", "What is the origin of the recipe?", "Agnes Pellory"),
    ("The Corvane lily blooms only once every seven years.", "How often does the Corvane lily bloom?",
     "once every seven years"),  # "blooms" is the question's "bloom"
    ("The lighthouse stands.", "Which lighthouse stands?", "The lighthouse stands."),  # nothing new: all of it
])
def test_the_key_span_is_what_answers_beyond_what_the_question_says(reference, question, span):
    assert key_span(reference, question) == span


@pytest.mark.parametrize("share, quota, held_out", [(0.2, 20, 5), (0.2, 2, 1), (0.05, 150, 8), (0.0, 20, 0)])
def test_a_share_of_each_passage_s_questions_is_held_out_at_least_one(share, quota, held_out):
    config = resolve_config(None, [f"synth.self_check_share={share}", f"synth.questions_per_passage={quota}"])
    assert questions_per_passage(config) == held_out


def test_a_held_out_question_never_repeats_a_training_question():
    from promptdistill.corpus import Passage

    class Repeating:
        """Writes the training question again, then a new one, then repeats itself."""
        identity = "repeating"
        replies = iter(["Who founded Velmora?", "When was Velmora founded?"])

        def count_tokens(self, text):
            return len(text.split())

        def generate_batch(self, prompts, sampling, seed):
            return [next(self.replies, "When was Velmora founded ?") for _ in prompts]

    config = resolve_config(None, ["synth.question_style=single", "synth.questions_per_passage=2",
                                   "synth.max_attempts=3", "synth.near_duplicate_overlap=0"])
    passage = Passage("town#0", "town", "Velmora was founded in 1623 by Tobin Quarrel.")
    written = {"town#0": ["Who founded velmora"]}
    records, stats = write_questions(Repeating(), [passage], config.synth, 0, written=written)
    assert [r["question"] for r in records] == ["When was Velmora founded?"]  # the other one is the training question's
    assert stats.duplicate >= 1


def test_a_run_without_test_questions_trains_pd_and_reports_the_self_check(tmp_path, tiny_model_dir, ran):  # noqa: F811
    docs, tests = write_inputs(tmp_path)
    run, config = RunDir(tmp_path / "run"), settings(tiny_model_dir, "methods=base,pd,open-book")
    pipeline.prepare(run, config, docs, None)
    table = pipeline.run_all(run, config)
    assert ran == ["prepare", "questions", "self-check", "answers-pd", "teacher", "train-pd", "self-check-base",
                   "self-check-pd", "self-check-open-book", "retention-base", "retention-pd"]
    held_out = read_jsonl(run.self_check_questions)
    training = read_jsonl(run.questions)
    assert held_out and {q["id"].split("/")[0] for q in held_out} == {p.id for p in run.load_passages()}
    assert not {q["question"] for q in held_out} & {q["question"] for q in training}
    # No held-out question reached the training answers, or the teacher that scored them.
    answered = {a["question_id"] for a in read_jsonl(run.answers("pd"))}
    assert answered <= {q["id"] for q in training}
    teacher = json.loads((run.teacher / "index.json").read_text())["entries"]
    assert set(teacher) <= answered
    # Each held-out question's accepted answers are the key span of the teacher's reply and the reply.
    for question in held_out:
        assert question["answers"][0] == key_span(question["answers"][-1], question["question"])
    report = json.loads((run.path / "report.json").read_text())
    assert report["methods"] == {} and report["counts"]["test_questions"] == 0
    assert set(report["self_check"]["methods"]) == {"base", "pd", "open-book"}
    assert report["self_check"]["questions"] == len(held_out)
    assert report["self_check"]["methods"]["pd"]["drift"] >= 0  # what else changed, beside it
    assert set(report["self_check"]["paired"]) == {"pd - base"}
    assert table.splitlines()[0].startswith(f"self-check, % of {len(held_out)} questions the model wrote")
    markdown = (run.path / "report.md").read_text()
    assert "no test questions" in markdown and "an estimate from the model's own questions" in markdown
    assert (run.documents / "town.md").read_text() == (docs / "town.md").read_text()
    from promptdistill.export import export_model

    card = (export_model(run, config, "pd", tmp_path / "export", adapter_only=True) / "README.md").read_text()
    assert "## How well (the self-check: containment on held-out questions the model wrote" in card
    assert "| pd (this model) |" in card and "test questions" not in card

    # Test questions added afterwards are only evaluated: nothing is written, answered or trained again.
    ran.clear()
    pipeline.prepare(run, config, docs, tests)
    pipeline.run_all(run, config)
    assert ran == ["prepare", "evaluate-base", "evaluate-pd", "evaluate-open-book"]
    report = json.loads((run.path / "report.json").read_text())
    assert set(report["methods"]) == {"base", "pd", "open-book"} and report["self_check"]["questions"] == len(held_out)


def test_the_command_line_without_test_questions_runs_the_lean_methods_and_keeps_them(tmp_path, tiny_model_dir,
                                                                                      monkeypatch, capsys, ran):  # noqa: F811
    from test_pipeline import TINY_RUN

    docs, tests = write_inputs(tmp_path)
    out = tmp_path / "run"
    common = ["--out", str(out), "--model", str(tiny_model_dir),
              *(arg for value in TINY_RUN for arg in ("--set", value))]
    for extra in ([], ["--test-questions", str(tests)]):
        monkeypatch.setattr(sys, "argv", ["promptdistill", "run", "--docs", str(docs), *extra, *common])
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
        assert exit_info.value.code == 0
        assert RunDir(out).load_config().methods == ["base", "pd", "open-book"]
    assert "evaluate-pd" in ran and not any(name.startswith(("train-sft", "train-uft", "answers-sft")) for name in ran)
    captured = capsys.readouterr()
    assert "no test questions: the self-check estimates what was learned" in " ".join(captured.err.split())


def test_a_self_check_without_a_usable_question_is_said_and_left_out_of_the_report(tmp_path, tiny_model_dir, ran,
                                                                                  monkeypatch, caplog):  # noqa: F811
    class Unimaginative(ScriptedExpert):
        """Writes one question per passage, again and again."""

        def generate_batch(self, prompts, sampling, seed):
            return [reply.replace(f" number {seed % 1000} {row}", "")
                    for row, reply in enumerate(super().generate_batch(prompts, sampling, seed))]

    monkeypatch.setattr(pipeline, "make_backend", lambda model, adapter=None, **options: Unimaginative(model.name))
    docs, tests = write_inputs(tmp_path)
    run, config = RunDir(tmp_path / "run"), settings(tiny_model_dir, "methods=base,pd", "eval.retention=false")
    pipeline.prepare(run, config, docs, tests)
    pipeline.run_all(run, config)
    assert read_jsonl(run.self_check_questions) == [] and "self-check-pd" not in ran
    assert "self-check: the model wrote no usable held-out question; the report has no self-check" in caplog.text
    assert json.loads((run.path / "report.json").read_text())["self_check"] is None
