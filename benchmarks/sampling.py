"""What sampling settings does a model need to be a usable expert? Side by side, in one run.

    python benchmarks/sampling.py [--model smollm2-135m] [--out benchmarks/results/sampling.json]

On the bundled demo documents and their 50 test questions:
  questions: for each (temperature, top-p), how many of 8 samples per document are usable
             questions (cleaned, on-topic) and how many of those are distinct;
  answers:   for each (temperature, top-p), the share of sampled open-book answers to the test
             questions that contain an accepted answer, and how many hit the length cap.
Prints two tables and writes JSON. docs/sampling.md records a run.
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import resources
from pathlib import Path

from promptdistill.config import ModelConfig
from promptdistill.corpus import read_documents
from promptdistill.evaluate import grade
from promptdistill.generation import Sampling, generate_all, make_backend
from promptdistill.prompts import question_writing_prompt, teacher_prompt
from promptdistill.files import read_jsonl
from promptdistill.synth import clean_question, content_words

SETTINGS = [(0.25, 1.0), (0.7, 0.9), (1.0, 0.9), (1.0, 1.0), (1.5, 1.0), (1.5, 0.9)]
QUESTIONS_PER_DOCUMENT = 8
QUESTION_TOKENS, ANSWER_TOKENS = 48, 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sampling.json"))
    args = parser.parse_args()

    demo = Path(str(resources.files("promptdistill") / "demo"))
    documents = read_documents(demo / "docs")
    texts = {document.id: document.text for document in documents}
    tests = read_jsonl(demo / "test_questions.jsonl")
    backend = make_backend(ModelConfig(name=args.model))

    question_jobs = [document for document in documents for _ in range(QUESTIONS_PER_DOCUMENT)]
    question_prompts = [question_writing_prompt(d.text) for d in question_jobs]
    answer_prompts = [teacher_prompt(texts[t["doc_id"]], t["question"]) for t in tests]
    rows = []
    for temperature, top_p in SETTINGS:
        started = time.time()
        replies = generate_all(backend, question_prompts, Sampling(temperature, QUESTION_TOKENS, top_p),
                               seed=0, batch_size=8, description=f"questions T={temperature}")
        usable = [question for question, document in zip(map(clean_question, replies), question_jobs)
                  if question and content_words(question) & content_words(document.text)]
        answers = generate_all(backend, answer_prompts, Sampling(temperature, ANSWER_TOKENS, top_p),
                               seed=1, batch_size=16, description=f"answers T={temperature}")
        rows.append({
            "temperature": temperature, "top_p": top_p,
            "usable_questions": len(usable), "distinct_questions": len(set(usable)),
            "questions_written": len(replies),
            "answers_correct_pct": 100 * sum(grade(a, t["answers"])["contains"] for a, t in zip(answers, tests)) / len(tests),
            "answers_at_length_cap": sum(backend.count_tokens(a) >= ANSWER_TOKENS - 1 for a in answers),
            "answers": len(answers), "seconds": round(time.time() - started, 1),
        })
        row = rows[-1]
        print(f"T={temperature:<4} top_p={top_p:<4} questions usable {row['usable_questions']:>2}/{row['questions_written']}"
              f" distinct {row['distinct_questions']:>2} | answers correct {row['answers_correct_pct']:5.1f}%"
              f" at cap {row['answers_at_length_cap']:>2}/{row['answers']} | {row['seconds']}s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
