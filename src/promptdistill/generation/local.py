"""The in-process backend: transformers `generate`, batched, each batch's shared prompt prefix read once."""

from __future__ import annotations

import torch

from promptdistill.generation.core import Sampling
from promptdistill.models import chat_prompt

# Below this many shared tokens a separate prefix pass costs more than it saves.
MIN_SHARED_PREFIX = 16


def shared_prefix_length(rows: list[list[int]]) -> int:
    """Tokens at the start of every row, leaving each row at least one token of its own."""
    length, shortest = 0, min(len(row) for row in rows)
    while length < shortest - 1 and all(row[length] == rows[0][length] for row in rows):
        length += 1
    return length


class TransformersBackend:
    """Batched `model.generate` on the model's own chat template; the model may carry a LoRA adapter.

    The rows of a batch often start alike: the expert's prompts about one passage all begin with
    the chat header and the passage. That shared prefix is read once and its KV cache copied to
    every row, instead of being read once per row; the rest of each row follows, left-padded.
    """

    def __init__(self, model, tokenizer, identity: str = "local"):
        self.model = model
        self.tokenizer = tokenizer
        self.identity = identity

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    @torch.no_grad()
    def generate_batch(self, prompts: list[str], sampling: Sampling, seed: int) -> list[str]:
        rows = [self.tokenizer(chat_prompt(self.tokenizer, prompt), add_special_tokens=False).input_ids
                for prompt in prompts]
        shared = shared_prefix_length(rows) if len(rows) > 1 else 0
        shared = shared if shared >= MIN_SHARED_PREFIX else 0
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for number, row in enumerate(rows):  # the shared prefix, padding, then the row's own tokens
            own = width - (len(row) - shared)
            input_ids[number, :shared], input_ids[number, own:] = torch.tensor(row[:shared]), torch.tensor(row[shared:])
            attention_mask[number, :shared], attention_mask[number, own:] = 1, 1
        device = self.model.device
        cache = {}
        if shared:
            prefix = self.model(input_ids=input_ids[:1, :shared].to(device), use_cache=True).past_key_values
            prefix.batch_repeat_interleave(len(rows))
            cache = {"past_key_values": prefix}
        torch.manual_seed(seed)
        greedy = sampling.temperature == 0
        output = self.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            **cache,
            max_new_tokens=sampling.max_new_tokens,
            do_sample=not greedy,
            temperature=None if greedy else sampling.temperature,
            top_p=None if greedy else sampling.top_p,
            top_k=None if greedy or not sampling.top_k else sampling.top_k,  # None overrides generation_config's
            pad_token_id=self.tokenizer.pad_token_id,
            # A row that met a stop string is finished; the batch ends when every row is.
            stop_strings=list(sampling.stop) or None,
            tokenizer=self.tokenizer if sampling.stop else None,
        )
        completions = output[:, width:]
        return [text.strip() for text in self.tokenizer.batch_decode(completions, skip_special_tokens=True)]
