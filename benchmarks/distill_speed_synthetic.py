"""Epoch cost of sft, pd with the online teacher and pd with the cached teacher, at any model size.

    python benchmarks/distill_speed_synthetic.py                       # small, on the CPU
    python benchmarks/distill_speed_synthetic.py --hidden 2048 --layers 16 --passage-tokens 512 \
        --passages 16 --questions 16                                    # a 1B-class model, on a GPU

A randomly initialised Llama-shaped model and random token sequences shaped like the paper's data
(a passage, many questions on it, an answer each): speed only, no accuracy (for accuracy see
distill_speed.py on real answers). Each variant trains one epoch with the package's own loop;
the cached variant's teacher pass (shared prefixes) is timed separately. Prints a table and
writes JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from promptdistill.config import TrainConfig
from promptdistill.teacher import TeacherCache, TeacherInput, build_teacher_cache
from promptdistill.train.data import Example
from promptdistill.methods import METHODS
from promptdistill.train.loop import train_adapter


def synthetic_examples(args, generator: torch.Generator) -> list[Example]:
    def tokens(count: int) -> list[int]:
        return torch.randint(10, args.vocab, (count,), generator=generator).tolist()

    examples = []
    for passage in range(args.passages):
        prefix = tokens(args.passage_tokens)
        for question in range(args.questions):
            asked, answer = tokens(args.question_tokens), tokens(args.answer_tokens)
            examples.append(Example(key=f"p{passage}q{question}", student_ids=asked, answer_ids=answer,
                                    teacher_ids=prefix + asked, teacher_prefix_length=len(prefix)))
    return examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--passages", type=int, default=4)
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--passage-tokens", type=int, default=256)
    parser.add_argument("--question-tokens", type=int, default=20)
    parser.add_argument("--answer-tokens", type=int, default=48)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/distill_speed_synthetic.json"))
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=max(args.hidden // 128, 2),
                         num_key_value_heads=max(args.hidden // 512, 1), max_position_embeddings=4096)
    examples = synthetic_examples(args, torch.Generator().manual_seed(0))
    # Two epochs, the second timed: the first also pays for warm-up (allocations, kernel choice).
    train_config = TrainConfig(epochs=2, learning_rate=1e-4, batch_size=args.batch_size, lora_rank=16)

    def fresh_model():
        torch.manual_seed(0)
        return LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        cache_dir = Path(scratch) / "teacher"
        model = fresh_model()
        started = time.time()
        build_teacher_cache(model, [TeacherInput(e.key, e.teacher_ids[:e.teacher_prefix_length],
                                                 e.teacher_ids[e.teacher_prefix_length:], e.answer_ids)
                                    for e in examples],
                            args.top_k, train_config.distill_temperature, args.batch_size, cache_dir, {})
        if device.type == "cuda":
            torch.cuda.synchronize()
        cache_seconds = time.time() - started
        del model
        for variant, method, cache in (("sft", "sft", None), ("pd-online", "pd", None),
                                       ("pd-cached", "pd", TeacherCache(cache_dir))):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            metrics = train_adapter(fresh_model(), 0, examples, METHODS[method], train_config,
                                    Path(scratch) / variant, seed=0, teacher_cache=cache)
            rows.append({"variant": variant, "epoch_seconds": metrics["epochs"][-1]["seconds"],
                         "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None})
    sft = rows[0]["epoch_seconds"]
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), "
          f"{sum(p.numel() for p in LlamaForCausalLM(config).parameters()) / 1e6:.0f}M parameters, "
          f"{len(examples)} examples; teacher cache built in {cache_seconds:.1f} s")
    print(f"{'variant':<10} {'s/epoch':>8} {'x sft':>6} {'peak GPU MiB':>13}")
    for row in rows:
        peak = "-" if row["peak_gpu_mib"] is None else f"{row['peak_gpu_mib']:.0f}"
        print(f"{row['variant']:<10} {row['epoch_seconds']:8.2f} {row['epoch_seconds'] / sft:6.2f} {peak:>13}")
    online, cached = rows[1]["epoch_seconds"], rows[2]["epoch_seconds"]
    print(f"online / cached epoch: {online / cached:.2f}x; cache build + 10 cached epochs vs 10 online: "
          f"{(cache_seconds + 10 * cached) / (10 * online):.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "device": str(device),
                                    "teacher_cache_seconds": cache_seconds, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
