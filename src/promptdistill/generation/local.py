"""The in-process backend: transformers `generate`, batched with left padding."""

from __future__ import annotations

import torch

from promptdistill.generation.core import Sampling
from promptdistill.models import chat_prompt


class TransformersBackend:
    """Batched `model.generate` on the model's own chat template; the model may carry a LoRA adapter."""

    def __init__(self, model, tokenizer, identity: str = "local"):
        self.model = model
        self.tokenizer = tokenizer
        self.identity = identity

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    @torch.no_grad()
    def generate_batch(self, prompts: list[str], sampling: Sampling, seed: int) -> list[str]:
        self.tokenizer.padding_side = "left"
        rendered = [chat_prompt(self.tokenizer, prompt) for prompt in prompts]
        batch = self.tokenizer(rendered, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = batch.to(self.model.device)
        torch.manual_seed(seed)
        greedy = sampling.temperature == 0
        output = self.model.generate(
            **batch,
            max_new_tokens=sampling.max_new_tokens,
            do_sample=not greedy,
            temperature=None if greedy else sampling.temperature,
            top_p=None if greedy else sampling.top_p,
            top_k=None,  # the model's generation_config may set one; this samples from the whole vocabulary
            pad_token_id=self.tokenizer.pad_token_id,
            # A row that met a stop string is finished; the batch ends when every row is.
            stop_strings=list(sampling.stop) or None,
            tokenizer=self.tokenizer if sampling.stop else None,
        )
        completions = output[:, batch.input_ids.shape[1]:]
        return [text.strip() for text in self.tokenizer.batch_decode(completions, skip_special_tokens=True)]
