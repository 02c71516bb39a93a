import json
import sys
import types
from pathlib import Path

import pytest

from promptdistill.corpus import Document
from promptdistill.corpus import TestQuestion as Question  # a Test* name would be collected by pytest
from promptdistill.datasets import load_dataset_spec, read_hotpotqa, read_paper_eval, read_squadshifts
from promptdistill.errors import UserError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"shared data not found at {SHARED_DATA} (it sits beside the clone)"
)


def qa(qid, question, *answers):
    return {"id": qid, "question": question, "answers": [{"text": a, "answer_start": 0} for a in answers]}


SQUAD = {
    "version": "1.0",
    "data": [
        {"title": "Town", "paragraphs": [
            {"context": " Velmora was founded in 1623. \n", "qas": [
                qa("q1", " When was Velmora founded? ", "1623", " 1623", "in 1623", "1623"),
                qa("q2", "What was founded in 1623?", "Velmora"),
                qa("q3", "Which town?", "Velmora"),
            ]},
            {"context": "The lighthouse has 96 steps.", "qas": [
                qa("q4", "How many steps?", "96", "96 steps"),
                qa("q5", "What has 96 steps?", "The lighthouse"),
            ]},
        ]},
        {"title": "River", "paragraphs": [
            {"context": "The Oskeva river is yellow.", "qas": [qa("q6", "What colour is the Oskeva?", "yellow")]},
        ]},
    ],
}


def write_json(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_squadshifts_cut_by_question_keeps_the_paragraph_and_all_answers(tmp_path):
    path = write_json(tmp_path / "nyt_v1.0.json", SQUAD)
    documents, tests = read_squadshifts("nyt", path, limit=4)
    # The 4th question is the first of the second paragraph: that paragraph stays, q5 does not.
    assert documents == [
        Document("nyt-0-0", "Velmora was founded in 1623."),
        Document("nyt-0-1", "The lighthouse has 96 steps."),
    ]
    assert [t.id for t in tests] == ["q1", "q2", "q3", "q4"]
    assert tests[0] == Question("q1", "When was Velmora founded?", ["1623", "in 1623"], "nyt-0-0")
    assert tests[3].answers == ["96", "96 steps"] and tests[3].doc_id == "nyt-0-1"

    documents, tests = read_squadshifts("nyt", path, limit=None)
    assert [d.id for d in documents] == ["nyt-0-0", "nyt-0-1", "nyt-1-0"]
    assert len(tests) == 6 and tests[-1].doc_id == "nyt-1-0"
    assert read_squadshifts("nyt", path) == (documents, tests)  # default limit 1000 > 6


def test_squadshifts_finds_the_subset_file_in_a_folder(tmp_path):
    write_json(tmp_path / "amazon_reviews_v1.0.json", SQUAD)
    assert read_squadshifts("amazon", tmp_path, limit=1)[0][0].id == "amazon-0-0"
    # NYT: the rebuilt file stands in for the original, and the original wins when both exist.
    rebuilt = json.loads(json.dumps(SQUAD))
    rebuilt["data"][0]["paragraphs"][0]["context"] = "Rebuilt."
    write_json(tmp_path / "nyt_v1.0_from_bigbench.json", rebuilt)
    assert read_squadshifts("nyt", tmp_path, limit=1)[0][0].text == "Rebuilt."
    (tmp_path / "deeper").mkdir()
    write_json(tmp_path / "deeper" / "nyt_v1.0.json", SQUAD)
    assert read_squadshifts("nyt", tmp_path, limit=1)[0][0].text == "Rebuilt."  # shallower first
    write_json(tmp_path / "nyt_v1.0.json", SQUAD)
    assert read_squadshifts("nyt", tmp_path, limit=1)[0][0].text == "Velmora was founded in 1623."


def test_squadshifts_from_the_hub_maps_rows_like_the_local_file(tmp_path, monkeypatch):
    # The hub's loader yields one flat row per question, with title, context, question and
    # answers stripped; a stand-in `datasets` module gives such rows without a network.
    rows = [
        {"id": q["id"], "title": article["title"].strip(), "context": paragraph["context"].strip(),
         "question": q["question"].strip(),
         "answers": {"text": [a["text"].strip() for a in q["answers"]], "answer_start": [0] * len(q["answers"])}}
        for article in SQUAD["data"] for paragraph in article["paragraphs"] for q in paragraph["qas"]
    ]
    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return rows

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    local = read_squadshifts("reddit", write_json(tmp_path / "reddit.json", SQUAD), limit=5)
    assert read_squadshifts("reddit", None, limit=5) == local
    assert calls == [(("squadshifts", "reddit"), {"split": "test"})]


@pytest.mark.parametrize("change, message", [
    (lambda d: d["data"][0]["paragraphs"][1]["qas"][0].pop("answers"),
     r"data\[0\]\.paragraphs\[1\]\.qas\[0\]: missing field 'answers'"),
    (lambda d: d["data"][0]["paragraphs"][1]["qas"][0].update(answers=[{"text": "  "}]),
     r"data\[0\]\.paragraphs\[1\]\.qas\[0\]: question 'q4' has no answers"),
    (lambda d: d["data"][1].update(paragraphs="text"),
     r"data\[1\]: field 'paragraphs' must be a list, got str"),
    (lambda d: d.pop("data"), r"not a SQuAD file"),
])
def test_squadshifts_malformed_records_are_named(tmp_path, change, message):
    data = json.loads(json.dumps(SQUAD))
    change(data)
    path = write_json(tmp_path / "nyt.json", data)
    with pytest.raises(UserError, match=rf"nyt\.json: {message}"):
        read_squadshifts("nyt", path, limit=None)


def test_squadshifts_bad_sources(tmp_path):
    (tmp_path / "broken.json").write_text('{"data": [\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"broken\.json:2: malformed JSON"):
        read_squadshifts("nyt", tmp_path / "broken.json")
    with pytest.raises(UserError, match=r"no new_wiki_v1\.0\.json in this folder or below"):
        read_squadshifts("new_wiki", tmp_path)
    with pytest.raises(UserError, match=r"missing\.json: no such file or folder"):
        read_squadshifts("nyt", tmp_path / "missing.json")
    with pytest.raises(UserError, match=r"SquadShifts subset: unknown value 'wiki'; choose from new_wiki, nyt"):
        read_squadshifts("wiki", tmp_path)
    with pytest.raises(UserError, match="limit must be a positive number"):
        read_squadshifts("nyt", tmp_path, limit=0)


# The paper's CSVs: no quoting, ';' inside every field, answers as a Python list literal.
PAPER_ROWS = [
    "Who built it; and when?;['Tobin; in 1623', 'Tobin; in 1623', \"Tobin's crew\"];Tobin built it; in 1623.",
    "Which answer has ];?;['a];b', 'c'];Passage two; with ['x'];y inside.",
    "Who painted it?;['Tobin'];Tobin built it; in 1623.",
]
REWRITES = ["Who built the Velmora bridge and when?", '"Which ""tricky"" answer is it?"', "Who painted the bridge?"]


def write_paper(folder, subset="nyt", rows=PAPER_ROWS, rewrites=REWRITES):
    folder.mkdir(exist_ok=True)
    (folder / f"{subset}.csv").write_text("".join(row + "\n" for row in rows), encoding="utf-8")
    if rewrites is not None:
        (folder / f"{subset}_filtered.csv").write_bytes("".join(q + "\r\n" for q in rewrites).encode())
    return folder


def test_paper_csv_fields_with_semicolons_and_shared_passages(tmp_path):
    folder = write_paper(tmp_path / "paper_eval")
    documents, tests = read_paper_eval("nyt", folder, rewritten=False)
    assert documents == [
        Document("paper-nyt-0", "Tobin built it; in 1623."),
        Document("paper-nyt-1", "Passage two; with ['x'];y inside."),
    ]
    assert tests == [
        Question("paper-nyt-1", "Who built it; and when?", ["Tobin; in 1623", "Tobin's crew"], "paper-nyt-0"),
        Question("paper-nyt-2", "Which answer has ];?", ["a];b", "c"], "paper-nyt-1"),
        Question("paper-nyt-3", "Who painted it?", ["Tobin"], "paper-nyt-0"),
    ]


def test_paper_csv_rewritten_questions_replace_the_originals(tmp_path):
    folder = write_paper(tmp_path)
    documents, tests = read_paper_eval("nyt", folder / "nyt.csv", limit=2)
    assert [t.question for t in tests] == ["Who built the Velmora bridge and when?", 'Which "tricky" answer is it?']
    assert [t.answers for t in tests] == [["Tobin; in 1623", "Tobin's crew"], ["a];b", "c"]]
    assert len(documents) == 2
    assert load_dataset_spec("paper:nyt", folder) == read_paper_eval("nyt", folder)
    assert load_dataset_spec("paper:nyt:original", folder, limit=None) == read_paper_eval("nyt", folder, None, False)


def test_paper_csv_errors_name_file_and_line(tmp_path):
    folder = write_paper(tmp_path / "a", rows=[PAPER_ROWS[0], "No answer list here;passage"])
    with pytest.raises(UserError, match=r"nyt\.csv:2: expected question;\['answer', \.\.\.\];passage"):
        read_paper_eval("nyt", folder)
    folder = write_paper(tmp_path / "b", rows=[PAPER_ROWS[0], "Empty?;[];passage"])
    with pytest.raises(UserError, match=r"nyt\.csv:2: empty question, answer list or passage"):
        read_paper_eval("nyt", folder, rewritten=False)
    folder = write_paper(tmp_path / "c", rewrites=None)
    with pytest.raises(UserError, match=r"nyt_filtered\.csv: file not found .*paper:nyt:original"):
        read_paper_eval("nyt", folder)
    folder = write_paper(tmp_path / "d", rewrites=REWRITES[:1])
    with pytest.raises(UserError, match=r"nyt_filtered\.csv: 1 questions for the 3 rows"):
        read_paper_eval("nyt", folder)
    with pytest.raises(UserError, match="paper evaluation subset: unknown value 'hotpotqa'; choose from nyt"):
        read_paper_eval("hotpotqa", folder)
    with pytest.raises(UserError, match=r"no reddit\.csv in this folder"):
        read_paper_eval("reddit", folder)


def paragraph(title, *sentences):
    return title, list(sentences)


def hotpot_record(question, answer, paragraphs, gold_titles):
    """One question in the Hugging Face layout (as in shared/data)."""
    return {
        "question": question, "answer": answer, "type": "bridge", "level": "hard",
        "supporting_facts": {"title": list(gold_titles), "sent_id": [0] * len(gold_titles)},
        "context": {"title": [t for t, _ in paragraphs], "sentences": [s for _, s in paragraphs]},
    }


HOTPOT = [
    hotpot_record("Where was the painter of the Tobin bridge born?", "Oskeva", [
        paragraph("Tobin bridge", "The Tobin bridge was painted by Ana.", " It is yellow."),
        paragraph("Ana", "Ana was born in Oskeva."),
        paragraph("Velmora", "Velmora is a town."),
    ], ["Tobin bridge", "Ana"]),
    hotpot_record("Is Velmora a town?", "yes", [
        paragraph("Velmora", "Velmora is a town."),
        paragraph("Oskeva", "Oskeva is a river."),
    ], ["Velmora"]),
]


def test_hotpotqa_paragraphs_are_shared_documents_and_gold_is_the_first_supporting_one(tmp_path):
    path = write_json(tmp_path / "hotpot_dev_distractor_v1.json", HOTPOT)
    documents, tests = read_hotpotqa(tmp_path)
    assert documents == [
        Document("hotpotqa-0", "Tobin bridge\nThe Tobin bridge was painted by Ana. It is yellow."),
        Document("hotpotqa-1", "Ana\nAna was born in Oskeva."),
        Document("hotpotqa-2", "Velmora\nVelmora is a town."),
        Document("hotpotqa-3", "Oskeva\nOskeva is a river."),
    ]
    assert tests == [
        Question("hotpotqa-q0", "Where was the painter of the Tobin bridge born?", ["Oskeva"], "hotpotqa-0"),
        Question("hotpotqa-q1", "Is Velmora a town?", ["yes"], "hotpotqa-2"),
    ]
    assert read_hotpotqa(path, limit=1) == (documents[:3], tests[:1])
    assert load_dataset_spec("hotpotqa", tmp_path, limit=None) == (documents, tests)


def test_hotpotqa_official_layout_reads_the_same(tmp_path):
    official = [
        {"_id": f"id{i}", "question": r["question"], "answer": r["answer"],
         "supporting_facts": [[t, 0] for t in r["supporting_facts"]["title"]],
         "context": [[t, s] for t, s in zip(r["context"]["title"], r["context"]["sentences"])]}
        for i, r in enumerate(HOTPOT)
    ]
    documents, tests = read_hotpotqa(write_json(tmp_path / "official.json", official))
    assert (documents, [t.doc_id for t in tests]) == (read_hotpotqa(write_json(tmp_path / "hf.json", HOTPOT))[0],
                                                       ["hotpotqa-0", "hotpotqa-2"])
    assert [t.id for t in tests] == ["id0", "id1"]


def test_hotpotqa_malformed_records_are_named(tmp_path):
    bad = json.loads(json.dumps(HOTPOT))
    bad[1]["supporting_facts"]["title"] = ["Nowhere"]
    with pytest.raises(UserError, match=r"bad\.json: question 1: supporting title 'Nowhere' is not among"):
        read_hotpotqa(write_json(tmp_path / "bad.json", bad))
    bad[1]["context"] = {"title": ["Velmora"], "sentences": []}
    with pytest.raises(UserError, match=r"bad\.json: question 1: 'context' or 'supporting_facts' is not in HotpotQA"):
        read_hotpotqa(write_json(tmp_path / "bad.json", bad))
    with pytest.raises(UserError, match=r"bad\.json: expected a JSON list"):
        read_hotpotqa(write_json(tmp_path / "bad.json", {"data": HOTPOT}))
    with pytest.raises(UserError, match=r"no hotpot_dev_distractor_v1\.json in this folder"):
        read_hotpotqa(tmp_path)


def test_unknown_specs_and_paper_without_a_folder():
    for spec in ["squad:nyt", "hotpotqa:fullwiki", "paper:nyt:rewritten"]:
        with pytest.raises(UserError, match=f"{spec!r}"):
            load_dataset_spec(spec, Path("."))
    with pytest.raises(UserError, match="the paper's CSVs are local files"):
        load_dataset_spec("paper:nyt", None)
    with pytest.raises(UserError, match="SquadShifts subset: unknown value ''"):
        load_dataset_spec("squadshifts", Path("."))


# The shared data (outside the repository). Passage counts for the first 1,000 questions of
# nyt and reddit are the paper's; new_wiki and amazon are as observed.
@needs_shared_data
@pytest.mark.parametrize("subset, passages, questions, paragraphs", [
    ("nyt", 188, 10056, 2017),  # the rebuilt file: 9 questions of the original's 10,065 are lost
    ("reddit", 209, 9803, 2035),
    ("new_wiki", 203, 7938, 1581),
    ("amazon", 207, 9885, 2050),
])
def test_shared_squadshifts_counts(subset, passages, questions, paragraphs):
    documents, tests = load_dataset_spec(f"squadshifts:{subset}", SHARED_DATA, limit=1000)
    assert (len(documents), len(tests)) == (passages, 1000)
    assert {t.doc_id for t in tests} == {d.id for d in documents}
    documents, tests = read_squadshifts(subset, SHARED_DATA / "squadshifts", limit=None)
    assert (len(documents), len(tests)) == (paragraphs, questions)


@needs_shared_data
def test_shared_nyt_is_the_rebuilt_file_not_the_raw_bigbench_copy():
    # Both copies lie under shared/data; only the rebuilt one has BIG-bench's removed answers back.
    tests = {t.id: t for t in read_squadshifts("nyt", SHARED_DATA)[1]}
    assert len(tests["5d700527c8e4820a9b66a885"].answers) == 2


@needs_shared_data
@pytest.mark.parametrize("subset, passages", [("nyt", 188), ("reddit", 209), ("new_wiki", 203), ("amazon", 207)])
def test_shared_paper_csvs_are_the_first_1000_squadshifts_questions(subset, passages):
    folder = SHARED_DATA / "paper_eval"
    documents, tests = read_paper_eval(subset, folder, limit=None, rewritten=False)
    assert (len(documents), len(tests)) == (passages, 1000)
    squad_documents, squad_tests = read_squadshifts(subset, SHARED_DATA)
    assert [t.question for t in tests] == [t.question for t in squad_tests]
    # The one-column questions file (csv-quoted where a question holds '"') says the same.
    lines = (folder / f"{subset}_questions.csv").read_text(encoding="utf-8").splitlines()
    originals = [line[1:-1].replace('""', '"') if line.startswith('"') else line for line in lines]
    assert [t.question for t in tests] == originals
    rewritten = read_paper_eval(subset, folder, limit=None)[1]
    assert len(rewritten) == 1000 and all(r.question != t.question for r, t in zip(rewritten[:5], tests))
    assert [r.answers for r in rewritten] == [t.answers for t in tests]


@needs_shared_data
def test_shared_hotpotqa_first_100():
    documents, tests = load_dataset_spec("hotpotqa", SHARED_DATA, limit=None)
    assert (len(documents), len(tests)) == (991, 100)
    assert tests[0].question == "Were Scott Derrickson and Ed Wood of the same nationality?"
    assert tests[0].answers == ["yes"]
    by_id = {d.id: d for d in documents}
    assert by_id[tests[0].doc_id].text.startswith("Scott Derrickson\nScott Derrickson (born July 16, 1966)")
