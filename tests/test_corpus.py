import json

import pytest

from promptdistill.corpus import read_documents, read_test_questions, split_passages
from promptdistill.errors import UserError


def test_paragraphs_are_packed_under_the_budget_with_stable_ids(tmp_path):
    (tmp_path / "town.md").write_text("one two three\n\nfour five six\n\nseven eight nine ten\n")
    (tmp_path / "notes.txt").write_text("alpha beta\n")
    (tmp_path / "ignored.csv").write_text("x,y\n")
    documents = read_documents(tmp_path)
    assert [d.id for d in documents] == ["notes", "town"]
    passages = split_passages(documents, str.split, " ".join, max_tokens=6)
    assert [(p.id, p.text) for p in passages] == [
        ("notes#0", "alpha beta"),
        ("town#0", "one two three\n\nfour five six"),
        ("town#1", "seven eight nine ten"),
    ]
    assert split_passages(read_documents(tmp_path), str.split, " ".join, 6) == passages


def test_long_paragraph_splits_between_sentences():
    from promptdistill.corpus import Document

    text = "First one here. Second one here. Third one here."
    passages = split_passages([Document("d", text)], str.split, " ".join, max_tokens=6)
    assert [p.text for p in passages] == ["First one here. Second one here.", "Third one here."]


def test_a_sentence_longer_than_the_budget_is_cut_at_token_boundaries(caplog):
    from promptdistill.corpus import Document

    text = "intro here. " + " ".join(f"w{i}" for i in range(14)) + "\n\nshort tail."
    passages = split_passages([Document("d", text)], str.split, " ".join, max_tokens=6)
    assert [p.text for p in passages] == ["intro here.", "w0 w1 w2 w3 w4 w5", "w6 w7 w8 w9 w10 w11",
                                          "w12 w13\n\nshort tail."]
    assert all(len(p.text.split()) <= 6 for p in passages)
    assert "a sentence of 14 tokens is longer than corpus.passage_tokens=6" in caplog.text


def test_upper_case_suffixes_count_and_other_files_are_listed(tmp_path, caplog):
    (tmp_path / "A.TXT").write_text("alpha")
    (tmp_path / "b.Md").write_text("beta")
    (tmp_path / "c.csv").write_bytes(b"x,y")
    (tmp_path / ".DS_Store").write_bytes(b"x")
    assert [d.id for d in read_documents(tmp_path)] == ["A", "b"]
    assert "skipped 1 file(s) that are not documents (.txt .md .markdown .pdf" in caplog.text
    assert caplog.text.rstrip().endswith(": c.csv")


def test_a_run_directory_inside_the_documents_is_not_read(tmp_path):
    (tmp_path / "town.md").write_text("velmora")
    run = tmp_path / "runs" / "mine"
    (run / "adapters" / "pd" / "adapter").mkdir(parents=True)
    (run / "report.md").write_text("# report")
    (run / "adapters" / "pd" / "adapter" / "README.md").write_text("# adapter")
    assert [d.id for d in read_documents(tmp_path, exclude=run)] == ["town"]
    (run / ".lock").write_text("")  # any run directory, not only this run's
    older = tmp_path / "export"
    older.mkdir()
    (older / "README.md").write_text("# model card")
    (older / "promptdistill-export.json").write_text("{}")
    assert [d.id for d in read_documents(tmp_path)] == ["town"]


def test_jsonl_documents_and_test_questions(tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "a", "text": "Alpha."}\n\n{"id": 7, "text": "Seven."}\n')
    assert [(d.id, d.text) for d in read_documents(docs)] == [("a", "Alpha."), ("7", "Seven.")]
    tests = tmp_path / "tests.jsonl"
    tests.write_text(json.dumps({"question": "What?", "answers": ["Alpha"], "doc_id": "a"}) + "\n")
    (question,) = read_test_questions(tests, {"a", "7"})
    assert (question.id, question.answers, question.doc_id) == ("test-1", ["Alpha"], "a")


@pytest.mark.parametrize("content, message", [
    ('{"id": "a", "text": "x"}\n{"id": "b", "text": \n', "docs.jsonl:2: malformed JSON"),
    ('{"id": "a"}\n', "docs.jsonl:1: missing field(s) text"),
    ('[1, 2]\n', "docs.jsonl:1: expected a JSON object"),
    ('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', "document id 'a' appears twice"),
    ('{"id": "a", "text": "  "}\n', "empty document(s): a"),
    ('{"id": "a", "text": "bin\\u0000ary"}\n', "document 'a' holds a NUL byte (at character 3)"),
])
def test_bad_document_files_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "docs.jsonl"
    path.write_text(content)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_documents(path)


def test_bad_folders(tmp_path):
    with pytest.raises(UserError, match="has no documents"):
        read_documents(tmp_path)
    (tmp_path / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(UserError, match=r"none of its 1 document\(s\) gives text"):
        read_documents(tmp_path)
    with pytest.raises(UserError, match="no such file or folder"):
        read_documents(tmp_path / "missing")


@pytest.mark.parametrize("record, message", [
    ({"question": "Q?", "answers": ["x"], "doc_id": "zzz"}, "tests.jsonl:2: unknown doc_id 'zzz'"),
    ({"question": "Q?", "answers": [], "doc_id": "a"}, "tests.jsonl:2: 'answers' must be a non-empty list"),
    ({"question": "Q?", "doc_id": "a"}, "tests.jsonl:2: missing field"),
    ({"question": "Q?", "answers": ["x", ""], "doc_id": "a"}, "tests.jsonl:2: an accepted answer is empty"),
    ({"question": "Q?", "answers": ["x"], "doc_id": "a", "id": "q1"}, "tests.jsonl:2: id 'q1' was already used on line 1"),
])
def test_bad_test_questions_name_the_line(tmp_path, record, message):
    path = tmp_path / "tests.jsonl"
    first = {"question": "Ok?", "answers": ["x"], "doc_id": "a", "id": "q1"}
    path.write_text(json.dumps(first) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(UserError, match=message):
        read_test_questions(path, {"a"})
