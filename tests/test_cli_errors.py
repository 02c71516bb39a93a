"""Bad input: a clear message naming the file, line or option, exit code 2, nothing damaged."""

import dataclasses
import errno
import json
import os
import sys

import pytest

from promptdistill import cli


def run_cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["promptdistill", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    return exit_info.value.code, capsys.readouterr().err


@pytest.fixture
def inputs(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "town.md").write_text("velmora was founded in 1623 by tobin quarrel .\n")
    tests = tmp_path / "tests.jsonl"
    tests.write_text(json.dumps({"question": "who founded velmora ?", "answers": ["quarrel"], "doc_id": "town"}) + "\n")
    return docs, tests


@pytest.fixture
def prepared_run(tmp_path, inputs, tiny_model_dir, monkeypatch, capsys):
    """A run directory whose files must survive every bad command below."""
    docs, tests = inputs
    out = tmp_path / "run"
    code, _ = run_cli(monkeypatch, capsys, "prepare", "--docs", str(docs), "--test-questions", str(tests),
                      "--out", str(out), "--model", str(tiny_model_dir))
    assert code == 0
    assert (out / "passages.jsonl").is_file()
    return out


def snapshot(run_dir):
    """Every file of a run but the cache of converted documents, which may gain a new file's text."""
    return {path: path.read_bytes() for path in sorted(run_dir.rglob("*"))
            if path.is_file() and path.name != "documents.jsonl"}


def bad_utf8_docs(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes('{"id": "cafe", "text": "caf\xe9"}\n'.encode("latin-1"))
    return path


def malformed_tests(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "a?", "answers": ["b"], "doc_id": "town"}\n{"question": \n')
    return path


def unknown_doc_tests(tmp_path):
    path = tmp_path / "unknown.jsonl"
    path.write_text(json.dumps({"question": "a?", "answers": ["b"], "doc_id": "nowhere"}) + "\n")
    return path


def empty_folder(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


CASES = {
    "empty folder": (lambda t, d, q: ["--docs", str(empty_folder(t)), "--test-questions", str(q)],
                     "empty: folder has no documents (.txt .md"),
    "not utf-8": (lambda t, d, q: ["--docs", str(bad_utf8_docs(t)), "--test-questions", str(q)],
                  "latin.jsonl: not UTF-8 text (invalid continuation byte at byte 27); save it as UTF-8"),
    "malformed line": (lambda t, d, q: ["--docs", str(d), "--test-questions", str(malformed_tests(t))],
                       "bad.jsonl:2: malformed JSON"),
    "unknown doc_id": (lambda t, d, q: ["--docs", str(d), "--test-questions", str(unknown_doc_tests(t))],
                       "unknown.jsonl:1: unknown doc_id 'nowhere'"),
    "unknown model": (lambda t, d, q: ["--docs", str(d), "--test-questions", str(q), "--model", "no-such-model"],
                      "--model no-such-model: unknown model"),
    "negative learning rate": (lambda t, d, q: ["--docs", str(d), "--test-questions", str(q),
                                                "--set", "train.learning_rate=-0.001"],
                               "train.learning_rate must be > 0, got -0.001"),
    "corrupt gguf": (lambda t, d, q: ["--docs", str(d), "--test-questions", str(q), "--model", str(corrupt_gguf(t))],
                     "truncated.gguf: not a readable GGUF model"),
    "unreachable hub id": (lambda t, d, q: ["--docs", str(d), "--test-questions", str(q),
                                            "--model", "nobody-here/no-such-model"],
                           "--model nobody-here/no-such-model: cannot load its tokenizer"),
}


def corrupt_gguf(tmp_path):
    path = tmp_path / "truncated.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 64)
    return path


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No hub, and model conversions in a scratch cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PROMPTDISTILL_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_named_and_damages_nothing(case, tmp_path, inputs, prepared_run, monkeypatch, capsys):
    docs, tests = inputs
    make_args, message = CASES[case]
    before = snapshot(prepared_run)
    code, err = run_cli(monkeypatch, capsys, "run", *make_args(tmp_path, docs, tests), "--out", str(prepared_run))
    assert code == 2
    assert message in " ".join(err.split())
    assert snapshot(prepared_run) == before


def test_stage_command_on_a_folder_that_is_not_a_run(tmp_path, monkeypatch, capsys):
    code, err = run_cli(monkeypatch, capsys, "evaluate", str(tmp_path))
    assert code == 2
    assert "not a run directory (no config.yaml)" in " ".join(err.split())


def test_usage_errors_exit_non_zero(monkeypatch, capsys):
    code, _ = run_cli(monkeypatch, capsys, "run", "--docs")
    assert code == 2


def test_demo_is_quick_unless_full(monkeypatch, capsys):
    seen = {}

    def fake_run(docs, tests, out, model, methods, config, overrides, preset=None):
        from promptdistill.config import resolve_config

        seen[str(out)] = resolve_config(config, overrides, preset)

    monkeypatch.setattr(cli, "_run", fake_run)
    assert run_cli(monkeypatch, capsys, "demo")[0] == 0
    assert run_cli(monkeypatch, capsys, "demo", "--full")[0] == 0
    quick, full = seen["runs/demo"], seen["runs/demo-full"]
    assert (quick.synth.batch_size, full.synth.batch_size) == (32, 8)
    assert "pd+rag" not in quick.methods and "pd+rag" in full.methods
    # What is learned differs in one setting alone: one answer per question instead of the preset's two.
    assert (full.synth.pd_answers_per_question, full.synth.sft_answers_per_question) == (2, 2)
    assert quick.synth == dataclasses.replace(full.synth, batch_size=32, pd_answers_per_question=1,
                                              sft_answers_per_question=1)
    assert quick.train == full.train


def test_a_second_command_on_a_busy_run_names_the_holder(prepared_run, monkeypatch, capsys):
    from promptdistill.rundir import RunDir

    before = snapshot(prepared_run)
    with RunDir(prepared_run).lock():
        code, err = run_cli(monkeypatch, capsys, "train", str(prepared_run))
    assert code == 2
    assert f"{prepared_run} is in use by pid {os.getpid()}" in " ".join(err.split())
    # A lock file left by a process that is gone holds nothing: the next command runs.
    (prepared_run / ".lock").write_text("pid 999999 (`promptdistill run`, since 10:00:00)\n")
    code, err = run_cli(monkeypatch, capsys, "report", str(prepared_run))
    assert "in use" not in err
    assert {path: data for path, data in snapshot(prepared_run).items() if path.name != ".lock"} == \
        {path: data for path, data in before.items() if path.name != ".lock"}


def test_out_that_is_a_file(tmp_path, inputs, monkeypatch, capsys):
    docs, tests = inputs
    (tmp_path / "taken").write_text("mine")
    code, err = run_cli(monkeypatch, capsys, "run", "--docs", str(docs), "--test-questions", str(tests),
                        "--out", str(tmp_path / "taken"))
    assert code == 2 and "taken: exists and is not a directory" in " ".join(err.split())
    assert (tmp_path / "taken").read_text() == "mine"


def test_a_stage_before_its_inputs_names_what_to_run(prepared_run, monkeypatch, capsys):
    code, err = run_cli(monkeypatch, capsys, "answers", str(prepared_run))
    assert code == 2
    assert "questions.jsonl is missing; run the stages before it" in " ".join(err.split())


def test_ctrl_c_prints_the_command_that_resumes(prepared_run, inputs, monkeypatch, capsys):
    from promptdistill import pipeline

    def interrupted(run, config):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_all", interrupted)
    docs, tests = inputs
    args = ["run", "--docs", str(docs), "--test-questions", str(tests), "--out", str(prepared_run)]
    code, err = run_cli(monkeypatch, capsys, *args)
    assert code == 130
    assert f"To resume: promptdistill {' '.join(args)}" in " ".join(err.split())


@pytest.mark.parametrize("number, says", [
    (errno.ENOSPC, "no space left on device (/runs/x/epoch-1): free some space and rerun"),
    (errno.EROFS, "read-only file system (/runs/x/epoch-1): the run directory is on a read-only file system"),
])
def test_a_full_or_read_only_disk_is_one_line(prepared_run, monkeypatch, capsys, number, says):
    from promptdistill import pipeline

    def failing(*stage):
        raise OSError(number, os.strerror(number), "/runs/x/epoch-1")

    monkeypatch.setattr(pipeline, "evaluate", failing)
    code, err = run_cli(monkeypatch, capsys, "evaluate", str(prepared_run), "--method", "base")
    assert code == 2
    assert says in " ".join(err.split())
    assert "Traceback" not in err


def test_a_gguf_file_has_one_converted_copy_wherever_it_is_installed(tmp_path, monkeypatch):
    from promptdistill.models import _gguf_cache_dir

    monkeypatch.setenv("PROMPTDISTILL_CACHE", str(tmp_path / "cache"))
    content = b"GGUF" + bytes(range(256)) * 20_000  # 5 MB: head and tail are read, the middle not
    places = [tmp_path / "venv-a", tmp_path / "venv-b", tmp_path / "other"]
    for place, data in zip(places, [content, content, content[:-1] + b"!"]):
        place.mkdir()
        (place / "model.Q4.gguf").write_bytes(data)
    copies = [_gguf_cache_dir(str(place), "model.Q4.gguf") for place in places]
    assert copies[0] == copies[1]  # a second install of the same file reuses its copy
    assert copies[2] != copies[0] and copies[0].parent == tmp_path / "cache" / "models"
    assert copies[0].name.startswith("model.Q4-")
