"""A generation server that promptdistill starts for a run (generation.server_command) and always stops;
requests in flight side by side, and retried."""

import dataclasses
import json
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import FakeServer, make_model, serving_in_thread
from peft import LoraConfig, get_peft_model
from test_pipeline import write_inputs

from promptdistill import pipeline
from promptdistill.config import ModelConfig, resolve_config
from promptdistill.errors import UserError
from promptdistill.files import path_digest
from promptdistill.generation import (BatchStore, Sampling, ServerBackend, TransformersBackend, cut_at_stop,
                                      generate_all, make_backend, served, serving)
from promptdistill.methods import METHODS
from promptdistill.rundir import RunDir

TRANSFORMERS_SERVE = f"{Path(sys.executable).with_name('transformers')} serve {{model}} --port {{port}}"


def answers_at(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/models", timeout=2).close()
        return True
    except OSError:
        return False


def config_for(model_dir, *more):
    return resolve_config(None, [f"model.name={model_dir}", "model.dtype=float32", "methods=base",
                                 "corpus.passage_tokens=12", "eval.max_answer_tokens=4", "synth.top_k=1",
                                 "synth.question_style=single", "synth.questions_per_passage=2",
                                 "synth.max_attempts=1", "synth.max_question_tokens=6", *more])


def test_a_started_server_answers_the_base_models_test_questions_and_is_stopped(tmp_path, tiny_model_dir):
    docs, tests = write_inputs(tmp_path)
    local, remote = RunDir(tmp_path / "local"), RunDir(tmp_path / "remote")
    local_config = config_for(tiny_model_dir)
    remote_config = config_for(tiny_model_dir, f"generation.server_command={TRANSFORMERS_SERVE}")
    for run, config in ((local, local_config), (remote, remote_config)):
        pipeline.prepare(run, config, docs, tests)
    pipeline.evaluate(local, local_config, METHODS["base"])
    with pytest.raises(UserError, match="no usable question"):  # a random model writes none; its replies are kept
        pipeline.questions(local, local_config)
    with serving(remote_config.model, remote_config.generation):
        with pytest.raises(UserError, match="no usable question"):
            pipeline.questions(remote, remote_config)
        options = served(remote_config.generation)
        assert options["server_model"] == str(tiny_model_dir)
        counting = make_backend(remote_config.model, **options)  # the run's server: the model's tokenizer counts
        assert counting.tokenizer is not None and counting.count_tokens("velmora was founded") == 3
        url = options["server_url"]
        assert answers_at(url)
        pipeline.evaluate(remote, remote_config, METHODS["base"])
    assert not answers_at(url)  # stopped with the block
    replies = [[json.loads(line)["reply"] for line in run.eval("base").read_text().splitlines()] for run in (local, remote)]
    assert replies[1] == replies[0]  # greedy, float32: the server answers as the process does
    written = [sorted(cut_at_stop(reply, ("?",)) for line in run.batches("questions").read_text().splitlines()
                      for reply in json.loads(line)["replies"]) for run in (local, remote)]
    assert written[0] and written[1] == written[0]  # question writing too (top_k=1: greedy in both)
    batches = remote.batches("evaluate-base").read_text()
    assert "127.0.0.1" not in batches and str(tiny_model_dir) not in json.loads(batches.splitlines()[0])["key"]


FAKE_SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b'{"data": []}')
HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def test_the_server_is_stopped_after_an_error_and_after_ctrl_c(tmp_path, tiny_model_dir):
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    config = config_for(tiny_model_dir, f"generation.server_command={sys.executable} {script} {{port}}")
    for interruption in (RuntimeError("a stage failed"), KeyboardInterrupt()):
        with pytest.raises(type(interruption)):
            with serving(config.model, config.generation):
                url = served(config.generation)["server_url"]
                assert answers_at(url)
                raise interruption
        assert not answers_at(url)


def test_a_server_that_dies_at_start_or_a_command_without_port_is_one_line(tmp_path, tiny_model_dir):
    config = config_for(tiny_model_dir, f"generation.server_command={sys.executable} -c \"print('no gpu here'); exit(3)\" {{port}}")
    with pytest.raises(UserError, match=r"exited with code 3 before it answered: no gpu here"):
        with serving(config.model, config.generation):
            pass
    with pytest.raises(UserError, match=r"generation.server_command must contain \{port\}"):
        config_for(tiny_model_dir, "generation.server_command=vllm serve {model}")
    both = dataclasses.replace(config.generation, server_url="http://localhost:1/v1")
    with pytest.raises(UserError, match="set one, not both"):
        with serving(config.model, both):
            pass


class EchoServer(FakeServer):
    """Chat completions that echo the prompt after a short wait, counting requests in flight;
    under /flaky the first two requests get 503; under /strict vLLM's own fields get 422; under
    /greedy the reply does not depend on the seed; under
    /lora, vLLM's runtime adapter loading (elsewhere it is missing, as on a server without it)."""

    lock = threading.Lock()
    in_flight = peak = requests = 0
    loaded: list[tuple[str, str]] = []
    bodies: list[dict] = []

    def do_GET(self):  # /v1/models: under /vllm, vLLM's
        owner = "vllm" if self.path.startswith("/vllm") else "someone"
        self.reply(200, {"object": "list", "data": [{"id": "m", "object": "model", "created": 0, "owned_by": owner}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path.endswith("/load_lora_adapter"):
            return self._load_adapter(body)
        EchoServer.bodies.append(body)
        if "broken" in body["messages"][0]["content"]:
            return self.reply(500, {"error": {"message": "the engine died"}})
        unexpected = {"top_k", "include_stop_str_in_output"} & set(body)
        if self.path.startswith("/strict") and unexpected:  # as transformers serve answers
            return self.reply(422, {"detail": f"Unexpected fields in the request: {unexpected}"})
        with self.lock:
            EchoServer.requests += 1
            failing = self.path.startswith("/flaky") and EchoServer.requests <= 2
            EchoServer.in_flight += 1
            EchoServer.peak = max(EchoServer.peak, EchoServer.in_flight)
        time.sleep(0.1)
        with self.lock:
            EchoServer.in_flight -= 1
        if failing:
            return self.reply(503, {"error": {"message": "overloaded"}})
        content = f"re: {body['messages'][0]['content']}"
        if not self.path.startswith("/greedy"):  # a server that samples: the seed shows
            content += f" (seed {body['seed']})"
        if body["model"].startswith("adapter-"):
            content += f" from {body['model']}"
        self.reply(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                      "finish_reason": "stop"}]})

    def _load_adapter(self, body: dict):
        """As vLLM answers: plain text on success, 400 for a name loaded before; FastAPI's 404 without it."""
        if not self.path.startswith("/lora"):
            return self.reply(404, {"detail": "Not Found"})
        if any(name == body["lora_name"] for name, _ in EchoServer.loaded):
            return self.reply(400, {"object": "error", "type": "InvalidUserInput", "code": 400,
                                    "message": f"The lora adapter '{body['lora_name']}' has already been loaded."})
        EchoServer.loaded.append((body["lora_name"], body["lora_path"]))
        self.reply(200, f"Success: LoRA adapter '{body['lora_name']}' added successfully.")




@pytest.fixture
def echo_server():
    EchoServer.in_flight = EchoServer.peak = EchoServer.requests = 0
    EchoServer.loaded = []
    EchoServer.bodies = []
    with serving_in_thread(EchoServer) as url:
        yield url


def test_requests_go_out_side_by_side_across_batches_up_to_the_bound(echo_server, tmp_path):
    prompts = [f"prompt {n}" for n in range(24)]
    groups = [f"passage {n // 3}" for n in range(24)]  # batches of at most 3: a passage's prompts
    one_at_a_time = ServerBackend(echo_server + "/v1", "m", api_key_env=None, max_concurrency=1)
    expected = generate_all(one_at_a_time, prompts, Sampling(1.0, 8), seed=5, batch_size=2, groups=groups)
    assert EchoServer.peak == 1

    EchoServer.peak = 0
    backend = ServerBackend(echo_server + "/v1", "m", api_key_env=None, max_concurrency=6)
    with BatchStore(tmp_path / "batches.jsonl") as store:
        replies = generate_all(backend, prompts, Sampling(1.0, 8), seed=5, batch_size=2, groups=groups, store=store)
    assert EchoServer.peak == 6  # more than a batch of 2, never more than the bound
    assert replies == expected and replies[7].startswith("re: prompt 7 (seed ")  # in order, same seeds
    seeds = [reply.split("(seed ")[1] for reply in replies]
    assert len(set(seeds)) == len(seeds)  # each row its own: one seed per batch would sample one reply per batch
    stored = [json.loads(line) for line in (tmp_path / "batches.jsonl").read_text().splitlines()]
    assert len(stored) == 16 and sorted(len(entry["replies"]) for entry in stored) == [1] * 8 + [2] * 8


def test_a_failing_request_is_retried_with_backoff_then_answers(echo_server):
    backend = ServerBackend(echo_server + "/flaky/v1", "m", api_key_env=None, max_retries=2)
    assert backend.generate_batch(["hello"], Sampling(0.0, 8), seed=1)[0].startswith("re: hello (seed ")
    assert EchoServer.requests == 3
    EchoServer.requests = 0
    impatient = ServerBackend(echo_server + "/flaky/v1", "m", api_key_env=None, max_retries=1)
    with pytest.raises(UserError, match=r"/flaky/v1/chat/completions: HTTP 503: .*overloaded"):
        impatient.generate_batch(["hello"], Sampling(0.0, 8), seed=1)


def test_an_adapter_is_served_where_the_server_loads_it_else_in_process(echo_server, tmp_path, tiny_model_dir,
                                                                          tokenizer, caplog):
    adapter = tmp_path / "adapter"
    get_peft_model(make_model(len(tokenizer)), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    model = ModelConfig(name=str(tiny_model_dir), dtype="float32")
    name = f"adapter-{path_digest(adapter)[:16]}"

    on_server = make_backend(model, adapter, server_url=echo_server + "/lora/v1", api_key_env=None)
    again = make_backend(model, adapter, server_url=echo_server + "/lora/v1", api_key_env=None)  # loaded before
    assert on_server.model == again.model == name
    assert EchoServer.loaded == [(name, str(adapter.resolve()))]
    assert on_server.generate_batch(["hi"], Sampling(0.0, 4), seed=3)[0].endswith(f") from {name}")
    assert on_server.identity.endswith(f"|adapter {path_digest(adapter)}")

    caplog.set_level("INFO")
    in_process = make_backend(model, adapter, server_url=echo_server + "/v1", api_key_env=None)
    assert isinstance(in_process, TransformersBackend) and in_process.identity.endswith(path_digest(adapter))
    assert "cannot serve the adapter" in caplog.text and "HTTP 404" in caplog.text


def test_stop_strings_go_to_vllm_alone_and_a_refused_field_is_dropped(echo_server, caplog):
    sampling = Sampling(1.0, 8, stop=(". ", "? "), top_k=50)
    vllm = ServerBackend(echo_server + "/vllm/v1", "m", api_key_env=None)
    assert generate_all(vllm, ["one. two"], sampling, seed=0, batch_size=1) == ["re: one."]
    assert EchoServer.bodies[-1]["stop"] == [". ", "? "] and EchoServer.bodies[-1]["include_stop_str_in_output"]

    EchoServer.bodies = []
    strict = ServerBackend(echo_server + "/strict/v1", "m", api_key_env=None, max_concurrency=1)
    replies = generate_all(strict, ["one. two", "three? four"], sampling, seed=0, batch_size=2)
    assert replies == ["re: one.", "re: three?"]  # run to the cap there, cut here keeping the stop, as in-process
    first, *rest = EchoServer.bodies
    assert first["top_k"] == 50 and not {"stop", "include_stop_str_in_output"} & set(first)
    assert rest and all("top_k" not in body for body in rest) and len(rest) == 2  # refused once, then without
    assert caplog.text.count("does not take top_k") == 1


def test_a_failed_batch_stops_the_pass_and_a_rerun_generates_only_what_is_missing(echo_server, tmp_path):
    prompts = [f"prompt {n}" for n in range(12)] + ["broken prompt"]
    failing = ServerBackend(echo_server + "/v1", "m", api_key_env=None, max_concurrency=3, max_retries=0)
    with pytest.raises(UserError, match="HTTP 500: .*the engine died"):
        with BatchStore(tmp_path / "batches.jsonl") as store:
            generate_all(failing, prompts, Sampling(1.0, 8), seed=1, batch_size=2, store=store)
    stored = [json.loads(line) for line in (tmp_path / "batches.jsonl").read_text().splitlines()]
    assert 0 < len(stored) < 7  # the batches that finished are kept; the failed one is not
    assert not any("broken" in reply for entry in stored for reply in entry["replies"])

    EchoServer.bodies = []
    prompts[-1] = "mended prompt"
    with BatchStore(tmp_path / "batches.jsonl") as store:
        replies = generate_all(failing, prompts, Sampling(1.0, 8), seed=1, batch_size=2, store=store)
    assert len(EchoServer.bodies) == len(prompts) - sum(len(entry["replies"]) for entry in stored)
    assert [reply.split(" (seed")[0] for reply in replies] == [f"re: {prompt}" for prompt in prompts]


def test_a_server_that_does_not_sample_is_named(echo_server, caplog):
    """Under /greedy the replies ignore the seed, as transformers serve's do unless the model samples."""
    backend = ServerBackend(echo_server + "/greedy/v1", "m", api_key_env=None)
    backend.generate_batch(["ask"] * 3 + ["other"], Sampling(1.0, 8), seed=0)
    backend.generate_batch(["more"] * 3, Sampling(1.0, 8), seed=1)
    assert "does not sample" not in caplog.text  # two repeated prompts answered alike could be chance
    backend.generate_batch(["ask"] * 4, Sampling(1.0, 8), seed=2)  # three: it is not
    backend.generate_batch(["ask"] * 4, Sampling(1.0, 8), seed=3)
    assert caplog.text.count("it does not sample") == 1 and "at temperature 1" in caplog.text
    caplog.clear()
    sampling = ServerBackend(echo_server + "/v1", "m", api_key_env=None)
    for seed in range(3):
        sampling.generate_batch(["ask"] * 3, Sampling(1.0, 8), seed=seed)
    assert "does not sample" not in caplog.text  # the echo's replies differ by seed
