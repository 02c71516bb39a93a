"""`promptdistill compare` on the tiny model: variants share what they leave alone, each draw is
a run of its own, and the table pairs every variant with the run."""

import json
import os
import shutil
import sys

import pytest
from test_pipeline import ran, settings, write_inputs  # noqa: F401 (ran: a fixture)

from promptdistill import cli, pipeline
from promptdistill.compare import (Variant, compare, draw_record, method_pairs, pairs_with_run, parse_variant, plot,
                                   points, pooled, pooled_kept, summary)
from promptdistill.config import RunConfig
from promptdistill.errors import UserError
from promptdistill.files import path_digest, read_jsonl, write_jsonl
from promptdistill.rundir import RunDir

PD_STAGES = ["train-pd", "evaluate-pd", "self-check-pd", "retention-pd"]  # what a training setting reruns


@pytest.fixture
def finished(tmp_path, tiny_model_dir, ran):  # noqa: F811
    docs, tests = write_inputs(tmp_path)
    run, config = RunDir(tmp_path / "run"), settings(tiny_model_dir, "methods=base,pd")
    pipeline.prepare(run, config, docs, tests)
    pipeline.run_all(run, config)
    run.save_config(config)
    ran.clear()
    return run, config


def digests(run: RunDir) -> dict[str, str]:
    return {str(path.relative_to(run.path)): path_digest(path) for path in run.path.rglob("*")
            if path.is_file() and "compare" not in path.parts}


def test_variants_share_every_stage_they_leave_alone_and_pair_with_the_run(finished, ran):  # noqa: F811
    run, config = finished
    before = digests(run)
    table = compare(run, config, [parse_variant("fast:train.learning_rate=0.02")], seeds=[0, 1])
    # Seed 0 is the run's own draw: the run is its reference, and the variant only trains and evaluates.
    # Seed 1 draws new questions: its reference runs what depends on the seed, its variant again only pd.
    seed_one = ["questions", "self-check", "answers-pd", "teacher", "train-pd", "evaluate-pd", "self-check-base",
                "self-check-pd", "retention-pd"]
    assert ran == PD_STAGES + seed_one + PD_STAGES
    assert digests(run) == before  # the run itself is untouched
    variant = run.path / "compare" / "seed-0" / "fast"
    for shared in ("questions.jsonl", "answers/pd.jsonl", "teacher/index.json", "eval/base.jsonl"):
        assert os.stat(variant / shared).st_ino == os.stat(run.path / shared).st_ino  # linked, not copied
    assert os.stat(variant / "adapters/pd/adapter/adapter_model.safetensors").st_ino != os.stat(
        run.path / "adapters/pd/adapter/adapter_model.safetensors").st_ino
    assert RunDir(variant).load_config().train.learning_rate == 0.02
    results = json.loads((run.path / "compare" / "compare.json").read_text())
    assert results["seeds"] == [0, 1] and results["question_set"] == "test"
    fast, reference = results["results"]["fast"]["pd"], results["results"]["run"]["pd"]
    assert fast["questions"] == reference["questions"] == 2 * len(read_jsonl(run.test_questions))
    assert "vs_run" in fast and "vs_run" not in reference and fast["train_seconds"] > 0 and "drift" in fast
    assert results["results"]["fast"]["base"]["vs_run"]["difference"] == 0  # base is the same model
    references = ((0, run), (1, RunDir(run.path / "compare" / "seed-1" / "run")))
    pd_grades, base_grades = ({f"{seed}/{record['id']}": record["contains"] for seed, draw in references
                               for record in read_jsonl(draw.eval(method))} for method in ("pd", "base"))
    assert results["pairs"]["run"]["pd - base"]["difference"] == pytest.approx(
        100 * sum(pd_grades[key] - base_grades[key] for key in pd_grades) / len(pd_grades))
    assert "within each variant, and against the run's methods, paired:\nrun: pd - base" in table
    assert set(results["pairs"]["fast"]) == {"pd - base"}  # its base is the run's: no second "of the run"
    for seed, draw in references:
        graded = read_jsonl(draw.eval("pd"))
        assert reference["by_draw"][str(seed)] == 100 * sum(record["contains"] for record in graded) / len(graded)
    assert (run.path / "compare" / "accuracy_vs_seconds.png").is_file()
    assert (run.path / "compare" / "accuracy_vs_retention.png").is_file()
    assert [line.split()[:2] for line in table.splitlines()[2:6]] == [["run", "base"], ["run", "pd"], ["fast", "base"],
                                                                      ["fast", "pd"]]

    # Once more, with one more variant: only that variant's stages run.
    ran.clear()
    compare(run, config, [parse_variant("fast:train.learning_rate=0.02"), parse_variant("two epochs:train.epochs=1")],
            seeds=[0, 1])
    assert ran == PD_STAGES + PD_STAGES
    assert (run.path / "compare" / "seed-1" / "two-epochs" / "config.yaml").is_file()


def test_draws_kept_in_an_earlier_compare_json_pool_as_if_their_run_folders_were_still_there(finished, tmp_path,
                                                                                              ran):  # noqa: F811
    run, config = finished
    fast = [parse_variant("fast:train.learning_rate=0.02")]
    both = compare(run, config, fast, seeds=[0, 1], chosen_methods=["pd"])
    saved = tmp_path / "earlier.json"
    shutil.copy(run.path / "compare" / "compare.json", saved)
    whole = json.loads(saved.read_text())
    assert set(whole["draws"]["fast"]["pd"]) == {"0", "1"}
    assert whole["draws"]["run"]["pd"]["1"]["replies"] == {
        record["id"]: {"question": record["question"], "contains": record["contains"]}
        for record in read_jsonl(RunDir(run.path / "compare" / "seed-1" / "run").eval("pd"))}
    shutil.rmtree(run.path / "compare" / "seed-1")  # the second draw's folders lost, its numbers kept
    ran.clear()
    again = compare(run, config, fast, seeds=[0], chosen_methods=["pd"], earlier=[saved])
    assert ran == []  # seed 0 is done, seed 1 comes from the file
    assert again == both
    assert json.loads((run.path / "compare" / "compare.json").read_text()) == whole

    def refused(match, **changes):
        saved.write_text(json.dumps({**whole, **changes}))
        with pytest.raises(UserError, match=match):
            compare(run, config, fast, seeds=[0], chosen_methods=["pd"], earlier=[saved])

    refused("it has no 'fast' with", settings={**whole["settings"], "fast": ["train.learning_rate=0.03"]})
    refused("it keeps no draws", draws=None)
    other = json.loads(json.dumps(whole["draws"]))
    next(iter(other["run"]["pd"]["1"]["replies"].values()))["question"] = "Another corpus's question?"
    refused("its test questions are not this run's", draws=other)
    assert ran == []


def test_a_data_scale_variant_trains_on_the_first_questions_of_each_passage_with_the_same_answers(finished, ran):  # noqa: F811
    run, config = finished
    compare(run, config, [parse_variant("one question:train.questions_per_passage=1")], seeds=[0])
    assert ran == PD_STAGES
    variant = RunDir(run.path / "compare" / "seed-0" / "one-question")
    trained = json.loads(variant.manifest("train-pd").read_text())["counts"]["examples"]
    full = json.loads(run.manifest("train-pd").read_text())["counts"]["examples"]
    passages = len(run.load_passages())
    assert trained == passages * config.synth.pd_answers_per_question < full
    first = {}
    for question in read_jsonl(run.questions):
        first.setdefault(question["passage_id"], question["id"])
    from promptdistill.teacher import TeacherCache

    assert set(TeacherCache(variant.teacher).entries) >= set(first.values())  # the same cache, linked


def test_variants_are_named_and_checked_before_any_work(finished, ran):  # noqa: F811
    run, config = finished
    with pytest.raises(UserError, match="give each variant a name of its own"):
        compare(run, config, [Variant("a b", ("train.epochs=1",)), Variant("a-b", ("train.epochs=2",))], seeds=[0])
    with pytest.raises(UserError, match="unknown setting 'train.epoch'"):
        compare(run, config, [parse_variant("typo:train.epoch=1")], seeds=[0])
    with pytest.raises(UserError, match="with a name other than 'run'"):
        parse_variant("run:train.epochs=1")
    assert ran == [] and not (run.path / "compare").exists()


def test_an_on_policy_variant_reports_the_seconds_spent_sampling(finished, ran):  # noqa: F811
    run, config = finished
    compare(run, config, [parse_variant("on-policy:train.on_policy_share=0.5")], seeds=[0], chosen_methods=["pd"])
    results = json.loads((run.path / "compare" / "compare.json").read_text())["results"]
    trained = run.path / "compare" / "seed-0" / "on-policy" / "adapters" / "pd"
    metrics = json.loads((trained / "metrics.json").read_text())
    on_policy = results["on-policy"]["pd"]
    assert on_policy["sampling_seconds"] == pytest.approx(sum(epoch["sampling_seconds"] for epoch in metrics["epochs"]))
    assert 0 < on_policy["sampling_seconds"] < on_policy["train_seconds"]
    assert "sampling_seconds" not in results["run"]["pd"]


def trained_by_hand(path, kept: list[bool]) -> RunDir:
    """A run whose pd answered one test question right, kept these general questions (g0, g1, ...),
    trained in 10 seconds."""
    run = RunDir(path)
    write_jsonl(run.eval("pd"), [{"id": "q0", "question": "Q?", "reply": "yes", "contains": 1}])
    write_jsonl(run.retention("pd"), [{"id": f"g{index}", "correct": value} for index, value in enumerate(kept)])
    write_jsonl(run.retention("pd.drift"), [{"prompt": "hi", "kl": 0.5}])
    for file, content in ((run.manifest("train-pd"), {"seconds": 10}),
                          (run.adapter_dir("pd") / "metrics.json", {"epochs": [{"seconds": 10}]})):
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(content))
    return run


def test_retention_is_paired_with_the_run_and_between_methods(tmp_path):
    config = RunConfig()
    reference = {"0": draw_record(trained_by_hand(tmp_path / "run", [True, True, True, False]), "pd", "test")}
    variant = {"0": draw_record(trained_by_hand(tmp_path / "variant", [True, False, False, True]), "pd", "test")}
    kept, reference_kept = pooled_kept(variant), pooled_kept(reference)
    assert kept == {"0/g0": 1.0, "0/g1": 0.0, "0/g2": 0.0, "0/g3": 1.0}
    graded = pooled(variant)
    assert graded == {"0/q0": {"question": "Q?", "contains": 1}}
    result = summary(variant, graded, kept, graded, reference_kept, "pd", config)
    assert result["train_seconds"] == 10 and result["drift"]["mean"] == 0.5 and "sampling_seconds" not in result
    assert result["retention"]["mean"] == 50
    # per question: 0, -100, -100, +100 points
    assert result["retention_vs_run"]["difference"] == -25 and result["retention_vs_run"]["questions"] == 4
    assert "retention_vs_run" not in summary(reference, graded, reference_kept, None, None, "pd", config)
    pairs = method_pairs({"pd": graded, "sft": graded}, {"pd": kept, "sft": reference_kept}, config)
    assert pairs["pd - sft"]["difference"] == 0 and pairs["retention: pd - sft"]["difference"] == -25
    untrained = trained_by_hand(tmp_path / "unchecked", [])
    untrained.retention("pd").unlink()
    assert pooled_kept({**variant, "1": draw_record(untrained, "pd", "test")}) is None  # a draw not yet checked


def test_a_variant_that_retrains_sft_too_is_paired_with_the_runs_sft():
    config = RunConfig()

    def graded(*contains):
        return {f"0/q{index}": {"question": f"Q{index}?", "contains": value} for index, value in enumerate(contains)}

    variant = {"pd": graded(1, 1, 1, 0), "sft": graded(0, 0, 1, 0)}  # both trained 30 epochs, say
    run = {"pd": graded(1, 0, 0, 0), "sft": graded(1, 0, 1, 0)}
    run["sft"]["0/q3"]["question"] = "another question?"  # a self-check question the run drew otherwise
    kept, run_kept = {"pd": {"0/g0": 1.0, "0/g1": 1.0}, "sft": {"0/g0": 0.0, "0/g1": 0.0}}, \
        {"pd": {"0/g0": 1.0, "0/g1": 0.0}, "sft": {"0/g0": 1.0, "0/g1": 0.0}}
    own = method_pairs(variant, kept, config)
    assert own["pd - sft"]["difference"] == 50 and own["retention: pd - sft"]["difference"] == 100
    with_run = pairs_with_run(variant, kept, run, run_kept, own, config)
    # q0..q2 only: 1-1, 1-0, 1-1 points per question; retention 1-1, 1-0
    assert with_run["pd - sft of the run"]["difference"] == pytest.approx(100 / 3)
    assert with_run["pd - sft of the run"]["questions"] == 3
    assert with_run["retention: pd - sft of the run"]["difference"] == 50
    # a variant that changes pd alone links the run's sft: nothing "of the run" is new
    unchanged = {"pd": variant["pd"], "sft": graded(1, 0, 1, 0)}, {"pd": kept["pd"], "sft": run_kept["sft"]}
    run_unchanged = {"pd": run["pd"], "sft": unchanged[0]["sft"]}
    assert pairs_with_run(*unchanged, run_unchanged, run_kept, method_pairs(*unchanged, config), config) == {}


def test_the_plots_draw_a_variants_reused_training_once(tmp_path):
    def result(seconds, accuracy, kept):
        return {"train_seconds": seconds, "accuracy": {"mean": accuracy, "interval": [accuracy - 5, accuracy + 5]},
                "retention": {"mean": kept, "interval": [kept - 5, kept + 5]}}

    untrained = {"accuracy": {"mean": 0, "interval": [0, 0]}}
    results = {"run": {"base": untrained, "sft": result(300, 40, 60), "pd": result(340, 36, 59)},
               # the variant changed pd's training only: its sft is the run's own, drawn once
               "on-policy": {"base": untrained, "sft": result(300, 40, 60), "pd": result(2000, 40, 73)}}
    assert [(variant, method, x) for variant, method, x, _ in points(results, "train_seconds")] == [
        ("run", "sft", 300), ("run", "pd", 340), ("on-policy", "pd", 2000)]
    assert [(variant, method, x) for variant, method, x, _ in points(results, "retention")] == [
        ("run", "sft", 60), ("run", "pd", 59), ("on-policy", "pd", 73)]
    results["on-policy"]["sft"] = result(300, 38, 60)  # same seconds, another accuracy: a point of its own
    assert ("on-policy", "sft", 300) in [point[:3] for point in points(results, "train_seconds")]
    # more variants than the palette has colours: each still drawn
    results.update({f"lr {index}": {"pd": result(400 + index, 30, 60)} for index in range(25)})
    plot(results, tmp_path)
    assert (tmp_path / "accuracy_vs_seconds.png").is_file() and (tmp_path / "accuracy_vs_retention.png").is_file()


def test_the_command_line_prints_the_table(finished, monkeypatch, capsys, ran):  # noqa: F811
    run, _ = finished
    monkeypatch.setattr(sys, "argv", ["promptdistill", "compare", str(run.path),
                                      "--variant", "fast:train.learning_rate=0.02", "--methods", "pd"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 0
    out = capsys.readouterr()
    assert out.out.splitlines()[0].startswith("compare: containment on 2 test questions, over 1 draw(s) (seeds 0)")
    assert [line.split()[:2] for line in out.out.splitlines()[2:]] == [["run", "pd"], ["fast", "pd"]]
    assert "| base |" in (run.path / "report.md").read_text()  # the run's report keeps the methods left out
    monkeypatch.setattr(sys, "argv", ["promptdistill", "compare", str(run.path), "--variant", "x:train.epochs=1",
                                      "--methods", "sft"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2 and "--methods: sft not among the run's (base, pd)" in capsys.readouterr().err
    missing = run.path / "missing.json"
    monkeypatch.setattr(sys, "argv", ["promptdistill", "compare", str(run.path), "--variant", "x:train.epochs=1",
                                      "--methods", "pd", "--draws-from", str(missing)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2 and f"--draws-from {missing}: cannot read" in capsys.readouterr().err

