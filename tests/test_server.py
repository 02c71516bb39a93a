"""A generation server that promptdistill starts for a run (generation.server_command) and always stops."""

import dataclasses
import json
import sys
import urllib.request
from pathlib import Path

import pytest
from test_pipeline import write_inputs

from promptdistill import pipeline
from promptdistill.config import resolve_config
from promptdistill.errors import UserError
from promptdistill.generation import served, serving
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
                                 "corpus.passage_tokens=12", "eval.max_answer_tokens=4", *more])


def test_a_started_server_answers_the_base_models_test_questions_and_is_stopped(tmp_path, tiny_model_dir):
    docs, tests = write_inputs(tmp_path)
    local, remote = RunDir(tmp_path / "local"), RunDir(tmp_path / "remote")
    local_config = config_for(tiny_model_dir)
    remote_config = config_for(tiny_model_dir, f"generation.server_command={TRANSFORMERS_SERVE}")
    for run, config in ((local, local_config), (remote, remote_config)):
        pipeline.prepare(run, config, docs, tests)
    pipeline.evaluate(local, local_config, METHODS["base"])
    with serving(remote_config.model, remote_config.generation):
        options = served(remote_config.generation)
        assert options["server_model"] == str(tiny_model_dir) and served(remote_config.generation, Path("x")) == {}
        url = options["server_url"]
        assert answers_at(url)
        pipeline.evaluate(remote, remote_config, METHODS["base"])
    assert not answers_at(url)  # stopped with the block
    replies = [[json.loads(line)["reply"] for line in run.eval("base").read_text().splitlines()] for run in (local, remote)]
    assert replies[1] == replies[0]  # greedy, float32: the server answers as the process does
    batches = remote.batches("evaluate-base").read_text()
    assert "127.0.0.1" not in batches and str(tiny_model_dir) not in json.loads(batches.splitlines()[0])["key"]


FAKE_SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b'{"data": []}')
    def log_message(self, *args):
        pass
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
