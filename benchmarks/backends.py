"""Generation throughput of each backend on the same prompts: in-process against servers it starts.

    python benchmarks/backends.py --run runs/demo [--prompts 32] [--batch 32]
        [--server "transformers serve=transformers serve {model} --port {port}"]
        [--server "llama.cpp=python -m llama_cpp.server --model FILE.gguf --port {port}"]

Takes the first N pd answer prompts of a finished run (passage + question, the expert's open-book
answers at the run's settings), generates them once in this process (transformers generate,
batched) and once through each server that a `--server NAME=COMMAND` starts (up to
generation.max_concurrency requests in flight), and prints prompts per second with each one's
ratio to the in-process backend. Each prompt is asked twice, and the count of pairs answered
differently shows whether a backend samples (a server that decodes greedily whatever the
temperature answers both alike); writes JSON. Run it alone: the backends are timed one after the other on a shared machine.
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
    parser.add_argument("--server", action="append", metavar="NAME=COMMAND",
                        help="a server command with {port} (and {model}); repeatable")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "backends.json")
    args = parser.parse_args()

    run = RunDir(args.run)
    config = run.load_config()
    passages = {passage.id: passage for passage in run.load_passages()}
    questions = read_jsonl(run.questions)[: args.prompts]
    prompts = [teacher_prompt(passages[q["passage_id"]].text, q["question"], config.synth.teacher_instruction)
               for q in questions]
    sampling = Sampling(config.synth.pd_answer_temperature, config.synth.max_answer_tokens, config.synth.top_p,
                        top_k=config.synth.top_k)

    def timed(backend) -> dict:
        """Every prompt twice: a backend that samples answers the two differently."""
        started = time.perf_counter()
        replies = generate_all(backend, prompts * 2, sampling, seed=0, batch_size=args.batch, description="")
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "prompts_per_second": 2 * len(prompts) / seconds,
                "reply_words": sum(len(reply.split()) for reply in replies),
                "pairs_differing": sum(a != b for a, b in zip(replies[:len(prompts)], replies[len(prompts):]))}

    servers = dict(server.split("=", 1) for server in args.server or [
        f"transformers serve={Path(sys.executable).with_name('transformers')} serve {{model}} --port {{port}}"])
    results = {"in-process": timed(make_backend(config.model))}
    for name, command in servers.items():
        generation = dataclasses.replace(config.generation, server_command=command, server_url="")
        with serving(config.model, generation):
            results[name] = timed(make_backend(config.model, **served(generation)))
    reference = results["in-process"]["prompts_per_second"]
    print(f"{len(prompts)} answer prompts of {args.run}, batch {args.batch}, T={sampling.temperature}:")
    for name, result in results.items():
        print(f"  {name:<20} {result['prompts_per_second']:6.2f} prompts/s  ({result['seconds']:.0f} s, "
              f"{result['reply_words']} words, {result['pairs_differing']}/{len(prompts)} repeated prompts "
              "answered differently)  "
              f"x{result['prompts_per_second'] / reference:.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"run": str(args.run), "prompts": len(prompts), "batch": args.batch,
                                     "servers": servers, "results": results}, indent=2) + "\n")
    print(f"JSON: {args.json}")


if __name__ == "__main__":
    main()
