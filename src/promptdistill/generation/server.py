"""A backend over an OpenAI-compatible /chat/completions endpoint (OpenAI, vLLM, SGLang, llama.cpp,
transformers serve), through the `openai` client, and a server started for the length of a run.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import openai

from promptdistill.errors import UserError
from promptdistill.files import content_key
from promptdistill.generation.core import Sampling

log = logging.getLogger(__name__)

NO_KEY = "EMPTY"  # what a server started without a key is sent (the client insists on one), as vLLM's examples do


class ServerBackend:
    """Each prompt is sent as one user message; the server applies the chat template.

    Up to `max_concurrency` requests are in flight at once, across batches (generate_all runs
    that many batches side by side), so a batching server (vLLM, SGLang) sees a full queue. The
    client retries a refused connection, a timeout, 408, 429 and 5xx `max_retries` times with
    exponential backoff (0.5 s doubling to 8 s). The API key is read from the environment
    variable named `api_key_env` (None: no key) and is kept out of repr and error messages.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY",
                 timeout: float = 900.0, identity: str = "", max_concurrency: int = 32, max_retries: int = 5,
                 tokenizer=None):
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.identity = identity or f"{self.url}|{model}"  # a started server's port changes; its command does not
        self.max_concurrency = max_concurrency
        self.tokenizer = tokenizer  # the served model's, when known: replies are counted as the server counts
        self._api_key: str | None = None
        if api_key_env is not None:
            self._api_key = os.environ.get(api_key_env)
            if not self._api_key:
                raise UserError(f"environment variable {api_key_env} (the API key of {self.url}) is not set")
        # timeout per request: a server without continuous batching queues what it is sent.
        self._client = openai.OpenAI(base_url=self.base_url, api_key=self._api_key or NO_KEY, timeout=timeout,
                                     max_retries=max_retries)
        self._requests: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()  # guards the request pool, made once, and what the server is
        self._refused: set[str] = set()  # vLLM's fields this server said it does not take
        self._warned_greedy = False
        self._repeats: list[bool] = []  # per prompt asked 3 times or more in a batch: all its replies alike
        self._vllm: bool | None = None

    def __repr__(self) -> str:
        return f"ServerBackend(url={self.url!r}, model={self.model!r})"

    def count_tokens(self, text: str) -> int:
        """Tokens of the served model's tokenizer when known (synth tells a reply cut at the cap by
        it), else words."""
        if self.tokenizer is None:
            return len(text.split())
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def generate_batch(self, prompts: list[str], sampling: Sampling, seed: int) -> list[str]:
        with self._lock:  # one pool of request threads for every batch in flight
            if self._requests is None:
                self._requests = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="request")
        # Each row its own seed, drawn from the batch's: one seed for all would sample one reply for all.
        seeds = [int(content_key(seed, row), 16) % 2**31 for row in range(len(prompts))]
        replies = list(self._requests.map(lambda prompt, row_seed: self._complete(prompt, sampling, row_seed),
                                          prompts, seeds))
        if sampling.temperature > 0:
            self._check_it_samples(prompts, replies, sampling.temperature)
        return replies

    def _check_it_samples(self, prompts: list[str], replies: list[str], temperature: float) -> None:
        """Warn once if the first three prompts asked 3 times or more in a batch each got a single
        reply and none got more: the server decodes greedily whatever the temperature
        (transformers serve does, unless the model's own generation config samples), and a stage
        that samples (questions) gets one reply for all."""
        by_prompt: dict[str, list[str]] = {}
        for prompt, reply in zip(prompts, replies):
            by_prompt.setdefault(prompt, []).append(reply)
        for group in by_prompt.values():
            if len(group) >= 3:
                self._repeats.append(len(set(group)) == 1)
        if not self._warned_greedy and len(self._repeats) >= 3 and all(self._repeats):
            self._warned_greedy = True
            log.warning("server %s gave one reply to each prompt asked 3 times or more at temperature %g: it does "
                        "not sample, so sampled stages (questions, answers) get the same reply again and again",
                        self.url, temperature)

    def _complete(self, prompt: str, sampling: Sampling, seed: int) -> str:
        while True:  # a server that refuses one of vLLM's fields is asked again without it
            extra = self._vllm_fields(sampling)
            try:
                reply = self._client.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": prompt}],
                    temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_new_tokens,
                    seed=seed, stop=list(sampling.stop) if "include_stop_str_in_output" in extra else openai.omit,
                    extra_body=extra or None,
                )
                break
            except openai.APIStatusError as error:
                refused = {name for name in extra if name in error.response.text} if error.status_code in (400, 422) \
                    else set()
                if not refused:
                    raise self._status_error(self.url, error) from None
                self._refuse(refused)
            except openai.APIConnectionError as error:
                raise self._connection_error(self.url, error) from None
        try:
            return (reply.choices[0].message.content or "").strip()
        except (AttributeError, IndexError, TypeError):
            shown = reply.model_dump() if hasattr(reply, "model_dump") else reply
            raise UserError(self._redact(f"server {self.url}: unexpected reply {str(shown)[:500]}")) from None

    def _vllm_fields(self, sampling: Sampling) -> dict:
        """Fields beyond OpenAI's API that keep a reply as the in-process backend makes it."""
        extra = {}
        if sampling.top_k and "top_k" not in self._refused:
            extra["top_k"] = sampling.top_k  # vLLM, SGLang, llama.cpp and transformers serve read it
        if sampling.stop and self._is_vllm() and "include_stop_str_in_output" not in self._refused:
            # Other servers drop the stop string from the reply, or ignore the stop: they get none, and
            # the reply, run to the cap, is cut here (generate_all), keeping the stop string as in-process.
            extra["include_stop_str_in_output"] = True
        return extra

    def _is_vllm(self) -> bool:
        """Whether /v1/models says vLLM serves the model (asked once)."""
        with self._lock:
            if self._vllm is None:
                try:
                    self._vllm = any(getattr(model, "owned_by", "") == "vllm" for model in self._client.models.list())
                except openai.OpenAIError:
                    self._vllm = False
            return self._vllm

    def _refuse(self, fields: set[str]) -> None:
        for name in fields - self._refused:
            self._refused.add(name)
            log.warning("server %s does not take %s: %s", self.url, name, {
                "top_k": "it samples without the top-k cut that the in-process backend makes",
                "include_stop_str_in_output": "replies run to the token cap and are cut at the stop strings here",
            }[name])

    def prompt_logprobs(self, token_ids: list[int], top_k: int) -> list[dict[int, float] | None] | None:
        """The server's top-k log-probabilities (at temperature 1) of each token of `token_ids`
        given those before it, keyed by token id: vLLM's `prompt_logprobs` on /v1/completions with
        `return_tokens_as_token_ids` (entry 0 is None; an entry may hold the actual token past the
        top k). None where the server sends none, or keys them by text as llama.cpp does."""
        with self._one_line_errors(self.base_url + "/completions"):
            reply = self._client.completions.create(
                model=self.model, prompt=token_ids, max_tokens=1, temperature=0.0,
                extra_body={"prompt_logprobs": top_k, "return_tokens_as_token_ids": True})
        entries = getattr(reply.choices[0], "prompt_logprobs", None) if getattr(reply, "choices", None) else None
        if not entries:
            return None
        try:
            return [None if entry is None else {int(token): float(value["logprob"]) for token, value in entry.items()}
                    for entry in entries]
        except (AttributeError, KeyError, TypeError, ValueError):
            return None

    @contextmanager
    def _one_line_errors(self, url: str) -> Iterator[None]:
        """The server's refusal or absence as one line, the key redacted, after the client's retries."""
        try:
            yield
        except openai.APIStatusError as error:
            raise self._status_error(url, error) from None
        except openai.APIConnectionError as error:  # also a timeout
            raise self._connection_error(url, error) from None

    def _status_error(self, url: str, error: openai.APIStatusError) -> UserError:
        return UserError(self._redact(f"server {url}: HTTP {error.status_code}: {error.response.text[:500]}"))

    def _connection_error(self, url: str, error: openai.APIConnectionError) -> UserError:
        return UserError(self._redact(f"server {url}: {error.__cause__ or error}; is it running?"))

    def load_adapter(self, name: str, path: Path) -> str | None:
        """Ask the server to serve the PEFT adapter in `path` as model `name` (vLLM's
        /v1/load_lora_adapter, on with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING); from
        then on requests name it. None once it serves it, else the server's reason for not."""
        with self._one_line_errors(self.base_url + "/load_lora_adapter"):  # connection errors
            try:
                self._client.post("/load_lora_adapter", body={"lora_name": name, "lora_path": str(path.resolve())},
                                  cast_to=str)
            except openai.APIStatusError as error:
                if "already been loaded" not in error.response.text:  # the name holds the digest: the same adapter
                    return self._redact(f"HTTP {error.status_code}: {error.response.text.strip()[:300]}")
        self.model = name
        return None

    def _redact(self, message: str) -> str:
        """A server may echo the key back; it goes no further."""
        return message.replace(self._api_key, "***") if self._api_key else message


def _die_with_parent() -> None:
    """In the server's process, before it runs: Linux sends it SIGTERM when promptdistill dies,
    even by kill -9, so that no server outlives the run that started it."""
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@contextmanager
def started_server(command: str, model: str, startup_seconds: float) -> Iterator[str]:
    """Run `command` ({model} and {port} filled in) until the block ends; yield its base URL once
    GET /v1/models answers. The server is stopped at the end, after an error and after Ctrl-C
    (SIGTERM to its process group, SIGKILL 30 s later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    arguments = shlex.split(command.format(model=shlex.quote(model), port=port))
    with tempfile.TemporaryFile() as output:  # the server's own words, for an error at start
        try:
            process = subprocess.Popen(arguments, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                                       preexec_fn=_die_with_parent,
                                       env={**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"})  # adapters
        except OSError as error:
            raise UserError(f"generation.server_command: cannot start {arguments[0]}: {error.strerror}") from None
        try:
            url = f"http://127.0.0.1:{port}/v1"
            _wait_until_answering(process, output, url, startup_seconds)
            yield url
        finally:
            _stop(process)


def _wait_until_answering(process: subprocess.Popen, output, url: str, startup_seconds: float) -> None:
    deadline = time.monotonic() + startup_seconds
    probe = openai.OpenAI(base_url=url, api_key=NO_KEY, timeout=2, max_retries=0)  # GET /v1/models
    while True:
        if process.poll() is not None:
            output.seek(0)
            tail = output.read().decode(errors="replace").strip().splitlines()[-3:]
            raise UserError(f"generation.server_command exited with code {process.returncode} before it "
                            f"answered: {' | '.join(tail) or 'no output'}")
        try:
            probe.models.list()
            return
        except openai.APIStatusError:  # it answers, if only to refuse a request without its key
            return
        except openai.APIConnectionError:
            if time.monotonic() > deadline:
                raise UserError(f"generation.server_command: no answer at {url} after {startup_seconds} s "
                                "(generation.startup_seconds)") from None
            time.sleep(0.5)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
