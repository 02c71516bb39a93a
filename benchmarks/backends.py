"""Generation throughput of each backend on the same prompts: in-process against a started server.

    python benchmarks/backends.py --run runs/demo [--prompts 32] [--batch 32]
        [--server-command "transformers serve {model} --port {port}"]

Takes the first N pd answer prompts of a finished run (passage + question, the expert's open-book
answers at the run's settings), generates them once in this process (transformers generate,
batched) and once through the server that `--server-command` starts (requests in flight up to
the batch size), and prints prompts per second with the server's ratio to the in-process
backend; writes JSON. Run it alone: the two are timed one after the other on a shared machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from promptdistill.files import read_jsonl
from promptdistill.generation import Sampling, generate_all, make_backend, served, serving
from promptdistill.prompts import teacher_prompt
from promptdistill.rundir import RunDir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--server-command",
                        default=f"{Path(sys.executable).with_name('transformers')} serve {{model}} --port {{port}}")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "backends.json")
    args = parser.parse_args()

    run = RunDir(args.run)
    config = run.load_config()
    passages = {passage.id: passage for passage in run.load_passages()}
    questions = read_jsonl(run.questions)[: args.prompts]
    prompts = [teacher_prompt(passages[q["passage_id"]].text, q["question"]) for q in questions]
    sampling = Sampling(config.synth.pd_answer_temperature, config.synth.max_answer_tokens, config.synth.top_p,
                        top_k=config.synth.top_k)

    def timed(backend) -> dict:
        started = time.perf_counter()
        replies = generate_all(backend, prompts, sampling, seed=0, batch_size=args.batch, description="")
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "prompts_per_second": len(prompts) / seconds,
                "reply_words": sum(len(reply.split()) for reply in replies)}

    results = {"in-process": timed(make_backend(config.model))}
    generation = dataclasses.replace(config.generation, server_command=args.server_command, server_url="")
    with serving(config.model, generation):
        results["server"] = timed(make_backend(config.model, **served(generation)))
    reference = results["in-process"]["prompts_per_second"]
    print(f"{len(prompts)} answer prompts of {args.run}, batch {args.batch}, T={sampling.temperature}:")
    for name, result in results.items():
        print(f"  {name:<11} {result['prompts_per_second']:6.2f} prompts/s  ({result['seconds']:.0f} s, "
              f"{result['reply_words']} words)  x{result['prompts_per_second'] / reference:.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"run": str(args.run), "prompts": len(prompts), "batch": args.batch,
                                     "server_command": args.server_command, "results": results}, indent=2) + "\n")
    print(f"JSON: {args.json}")


if __name__ == "__main__":
    main()
