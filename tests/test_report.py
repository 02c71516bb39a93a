import json

import pytest

from promptdistill.report import paired_differences, write_report


def records(grades):
    return [{"id": f"q{i}", "contains": float(grade)} for i, grade in enumerate(grades)]


def test_paired_differences_compare_the_same_questions():
    pd = records([1, 1, 0, 1, 1, 0, 1, 0])
    sft = records([0, 1, 0, 0, 1, 0, 1, 0])
    sft_shuffled = list(reversed(sft))  # matched by question id, not by position
    paired = paired_differences({"pd": pd, "sft": sft_shuffled, "base": pd}, resamples=2000, seed=0)
    assert set(paired) == {"pd - sft", "pd - base"}  # pairs whose methods both ran
    assert paired["pd - sft"]["difference"] == pytest.approx(25.0)
    low, high = paired["pd - sft"]["interval"]
    assert 0 <= low < 25 < high <= 50  # two questions differ, both in pd's favour
    assert paired["pd - base"] == {"difference": 0.0, "interval": [0.0, 0.0], "questions": 8}


def test_the_report_states_paired_differences(tmp_path):
    results = {name: {"contains": 50.0, "contains_interval": [40.0, 60.0], "em": 0.0, "f1": 1.0}
               for name in ("sft", "pd")}
    paired = {"pd - sft": {"difference": 12.5, "interval": [2.0, 24.0], "questions": 40}}
    settings = {"model": {"name": "m"}, "eval": {"judge": "", "rag_k": 7, "retriever": "bm25"}}
    counts = {"test_questions": 40, "documents": 1, "passages": 1, "questions": 0}
    table = write_report(tmp_path, results, settings, counts, paired=paired)
    assert table.splitlines()[-1] == "pd - sft: +12.5 points, 95% interval [+2.0, +24.0] (paired over 40 questions)"
    assert "- pd - sft: +12.5 points" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "report.json").read_text())["paired"] == paired


def test_coverage_counts_test_questions_whose_answer_some_training_answer_of_their_document_holds():
    from promptdistill.report import answer_coverage

    tests = [{"question": "who founded velmora?", "answers": ["Tobin Quarrel"], "doc_id": "town"},
             {"question": "what colour?", "answers": ["yellow"], "doc_id": "town"},
             {"question": "how long is it?", "answers": ["96 steps"], "doc_id": "river"}]
    passage_docs = {"town#0": "town", "river#0": "river"}
    questions = [{"id": "town#0/q0", "passage_id": "town#0"}, {"id": "river#0/q0", "passage_id": "river#0"}]
    answers = [{"question_id": "town#0/q0", "answer": "It was founded by Tobin Quarrel."},
               {"question_id": "river#0/q0", "answer": "It is yellow."}]  # yellow, but about another document
    assert answer_coverage(tests, passage_docs, questions, answers) == {"covered": pytest.approx(100 / 3),
                                                                         "questions": 3}
