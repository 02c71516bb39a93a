"""Talk to a run's trained model: one answer (`promptdistill ask`) or a conversation (`chat`).

`ask` answers through evaluation's own path (evaluate.answer_questions): the same prompt, decoding
and answer length, so asking a test question gives the reply that the report graded when answers
are greedy (the default). (Evaluation answers in batches; in bfloat16 a batch's padding can,
rarely, tip a near-tie.)

`chat` loads the base model once with every trained adapter of the run beside it, streams each
reply as it is generated, and keeps the conversation within the model's context by dropping the
oldest exchanges.
"""

from __future__ import annotations

from typing import Callable

import torch

from promptdistill import methods
from promptdistill.config import RunConfig
from promptdistill.corpus import join_passages
from promptdistill.errors import UserError
from promptdistill.evaluate import answer_questions
from promptdistill.generation import make_backend
from promptdistill.models import load_adapter, load_model
from promptdistill.rundir import RunDir

CHAT_HELP = "/method NAME switches model, /reset forgets the conversation, /exit or Ctrl-D leaves"


def ask(run: RunDir, config: RunConfig, question: str, name: str = "pd", rag: bool = False) -> str:
    """One reply of method `name` (base, uft, sft, pd; rag and pd+rag retrieve) to `question`."""
    method = methods.METHODS[methods.canonical_name(name, "--method")]
    if method.context is methods.Context.GOLD:
        raise UserError(f"--method {name}: open-book needs the question's document; use --rag for retrieval")
    adapter = run.trained_adapter(method.adapter) if method.adapter else None
    contexts = None
    if rag or method.context is methods.Context.RETRIEVED:
        from promptdistill.retrieval import make_retriever

        retriever = make_retriever(config.eval, run.load_passages())
        contexts = [join_passages(retriever.search(question, config.eval.rag_k))]
    backend = make_backend(config.model, adapter)
    return answer_questions(backend, [question], contexts, config.eval, description="",
                            teacher_instruction=config.synth.teacher_instruction)[0]


class ChatModel:
    """The base model with the run's trained adapters loaded beside it; `use` switches between them."""

    def __init__(self, run: RunDir, config: RunConfig, method: str, max_new_tokens: int, temperature: float):
        model, self.tokenizer = load_model(config.model)
        self.adapters = {m.name: run.adapter(m.name) for m in methods.METHODS.values()
                         if m.training and run.trained(m.name)}
        for number, (name, adapter) in enumerate(self.adapters.items()):
            if number == 0:
                model = load_adapter(model, adapter, name)
            else:
                model.load_adapter(str(adapter), adapter_name=name)
        self.model = model.eval()
        self.context_tokens = getattr(self.model.config, "max_position_embeddings", 2048)
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.method = "base"
        self.use(method)

    @property
    def choices(self) -> list[str]:
        return ["base", *self.adapters]

    def use(self, name: str) -> None:
        if name not in self.choices:
            raise UserError(f"/method {name}: this run has {', '.join(self.choices)}")
        if name != "base":
            self.model.set_adapter(name)
        self.method = name

    def prompt_ids(self, messages: list[dict]) -> torch.Tensor:
        """The conversation's tokens, its oldest exchanges dropped (from `messages` itself) until a
        reply fits the model's context."""
        while True:
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
            if ids.shape[1] + self.max_new_tokens <= self.context_tokens:
                return ids
            if len(messages) == 1:
                raise UserError("that message is longer than the model's context; write a shorter one")
            del messages[:2]  # the oldest user turn and its reply

    @torch.no_grad()
    def reply(self, messages: list[dict], write: Callable[[str], None]) -> str:
        from transformers import TextStreamer

        class Streamer(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                write(text + ("\n" if stream_end else ""))

        ids = self.prompt_ids(messages)
        sample = self.temperature > 0
        options = dict(
            input_ids=ids.to(self.model.device), attention_mask=torch.ones_like(ids).to(self.model.device),
            max_new_tokens=self.max_new_tokens, do_sample=sample, temperature=self.temperature if sample else None,
            top_p=None, top_k=None, pad_token_id=self.tokenizer.pad_token_id,
            streamer=Streamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True),
        )
        if self.method == "base" and self.adapters:
            with self.model.disable_adapter():
                output = self.model.generate(**options)
        else:
            output = self.model.generate(**options)
        return self.tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True).strip()


def chat_session(model: ChatModel, read: Callable[[str], str], write: Callable[[str], None]) -> None:
    """Read a line, answer it, until /exit, Ctrl-D or Ctrl-C at the prompt. Ctrl-C during a reply
    stops that reply only."""
    write(f"chatting with {model.method} ({', '.join(model.choices)} available). {CHAT_HELP}\n")
    messages: list[dict] = []
    while True:
        try:
            line = read("you: ").strip()
        except (EOFError, KeyboardInterrupt):
            write("\n")
            return
        if line in ("/exit", "/quit"):
            return
        if line == "/reset":
            messages = []
            write("(conversation forgotten)\n")
        elif line.startswith("/method"):
            try:
                model.use(line.removeprefix("/method").strip() or "?")
                write(f"(now answering with {model.method}; the conversation so far is kept)\n")
            except UserError as error:
                write(f"{error}\n")
        elif line.startswith("/"):
            write(f"unknown command {line.split()[0]}: {CHAT_HELP}\n")
        elif line:
            messages.append({"role": "user", "content": line})
            write(f"{model.method}: ")
            try:
                messages.append({"role": "assistant", "content": model.reply(messages, write)})
            except KeyboardInterrupt:
                messages.pop()
                write("\n(reply interrupted)\n")
            except UserError as error:
                messages.pop()
                write(f"{error}\n")
