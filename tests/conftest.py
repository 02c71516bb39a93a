"""Fixtures: a tiny random chat model built from a config, so unit tests run in seconds; and
fake HTTP servers that stand in for generation servers."""

from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

# The tests call cli.main() in this process, after tensor code has run in it: a stage forked from it
# would hang (rundir.STAGE_PROCESSES); test_rundir runs the command line in a process of its own.
os.environ["PROMPTDISTILL_STAGE_PROCESSES"] = "0"

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }} {{ message['content'] }}<|im_end|> "
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)
WORDS = (
    "the a of in is was who what when where which how many year town river lighthouse bridge "
    "velmora oskeva tobin quarrel founded built painted yellow saffron fourteen 1623 96 steps "
    "answer question text write about ? . , : 1 2 3 4 5 6 7 8 9 0 "
    "abcdef"  # transformers' stop-string matching probes a vocabulary with this word
).split()


def make_tokenizer() -> PreTrainedTokenizerFast:
    specials = ["[PAD]", "[UNK]", "<|im_start|>", "<|im_end|>", "user", "assistant"]
    vocab = {token: index for index, token in enumerate(specials + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", eos_token="<|im_end|>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_model(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=True, pad_token_id=0, eos_token_id=3, bos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


def give_adapter_an_effect(model, std: float = 0.5, seed: int | None = None) -> None:
    """Draw a LoRA adapter's B matrices from N(0, std), as if trained: at their initial zeros the
    adapter changes nothing, and no gradient reaches A. `seed`: from a generator of its own."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, std, generator=generator)


@pytest.fixture
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def tiny_model(tokenizer):
    return make_model(len(tokenizer))


@pytest.fixture
def tiny_model_dir(tmp_path, tokenizer):
    """A saved tiny model, loadable by `--model DIR` like any local model folder."""
    path = tmp_path / "tiny-model"
    make_model(len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


class FakeServer(BaseHTTPRequestHandler):
    """The handler of a fake server: `reply` sends JSON (or a text), and nothing is logged."""

    def reply(self, status: int, payload: dict | str) -> None:
        text = isinstance(payload, str)
        data = (payload if text else json.dumps(payload)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if text else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass  # keep test output quiet


@contextmanager
def serving_in_thread(handler: type[FakeServer]) -> Iterator[str]:
    """`handler` on a free local port, on a thread, for the block's length; yields its base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@contextmanager
def killed_after_epoch(monkeypatch, epoch: int) -> Iterator[None]:
    """Inside it, training stops (KeyboardInterrupt) right after writing epoch `epoch`'s
    checkpoint, as a killed run would; the interrupt is expected, and saving is whole again after."""
    import promptdistill.train.loop as loop

    original = loop.save_checkpoint

    def save_then_die(*args, **kwargs):
        original(*args, **kwargs)
        if args[-1] == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        yield
    monkeypatch.setattr(loop, "save_checkpoint", original)


def assert_same_adapter(expected_dir, actual_dir) -> None:
    """The two PEFT adapter folders hold the same weights (up to float rounding)."""
    from safetensors.torch import load_file

    expected = load_file(expected_dir / "adapter_model.safetensors")
    actual = load_file(actual_dir / "adapter_model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=1e-6, rtol=1e-5)
