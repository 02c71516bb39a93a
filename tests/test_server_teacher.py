"""The teacher cache from a server's prompt log-probabilities (train.teacher=server), against a
fake vLLM that scores prompts with the tiny model, and against the exact local cache."""

import dataclasses
import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from promptdistill import pipeline
from promptdistill.config import ModelConfig
from promptdistill.errors import UserError
from promptdistill.generation import ServerBackend
from promptdistill.methods import METHODS
from promptdistill.models import load_model
from promptdistill.rundir import RunDir
from promptdistill.teacher import TeacherCache, tempered_targets

from conftest import FakeServer, serving_in_thread
from test_pipeline import scripted_backend, settings, write_inputs

TOP_K = 5


def test_tempered_targets_by_hand():
    # Raw (T=1) probabilities 0.5 and 0.3 kept of a 10-token vocabulary: tail mass 0.2.
    entries = [{7: math.log(0.5), 2: math.log(0.3), 9: math.log(0.01)}]  # 9: the actual token, past the top 2
    exact = tempered_targets(entries, [9], top_k=2, temperature=1.0, vocab_size=10)
    assert exact.token_ids.tolist() == [[7, 2]]
    torch.testing.assert_close(exact.logprobs, torch.log(torch.tensor([[0.5, 0.3]])))
    torch.testing.assert_close(exact.tail_mass, torch.tensor([0.2]))

    # T=2: tail weight between 0.2 * 0.3^(-1/2) (thick) and 8^(1/2) * 0.2^(1/2) (thin); their geometric mean.
    tail = math.sqrt(0.2 * 0.3 ** -0.5 * math.sqrt(8) * math.sqrt(0.2))
    z = math.sqrt(0.5) + math.sqrt(0.3) + tail
    tempered = tempered_targets(entries, [9], top_k=2, temperature=2.0, vocab_size=10)
    torch.testing.assert_close(tempered.logprobs, torch.tensor([[math.log(math.sqrt(0.5) / z),
                                                                 math.log(math.sqrt(0.3) / z)]]))
    torch.testing.assert_close(tempered.tail_mass, torch.tensor([tail / z]))
    with pytest.raises(UserError, match="the server gave 3 log-probabilities at an answer position, fewer than the 5"):
        tempered_targets(entries, [9], top_k=5, temperature=1.0, vocab_size=10)


class FakeVLLM(FakeServer):
    """/v1/completions with vLLM's prompt_logprobs, scored by a real model: entry 0 null, then
    the top k plus the actual token, keyed by token id. Under /plain the field is missing, as
    from a server that ignores it."""

    model = None
    asked: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeVLLM.asked.append(body)
        if body["prompt_logprobs"] > 20:  # vLLM's --max-logprobs, 20 by default
            return self.reply(400, {"object": "error", "type": "BadRequestError", "code": 400, "message":
                                    f"Requested prompt logprobs of {body['prompt_logprobs']}, which is greater "
                                    "than max allowed: 20"})
        choice = {"index": 0, "text": "x", "finish_reason": "length", "logprobs": None}
        if not self.path.startswith("/plain"):
            choice["prompt_logprobs"] = self._prompt_logprobs(body["prompt"], body["prompt_logprobs"])
        self.reply(200, {"id": "c", "object": "text_completion", "created": 0, "model": body["model"],
                         "choices": [choice]})


    def _prompt_logprobs(self, token_ids: list[int], k: int) -> list:
        with torch.no_grad():
            logprobs = F.log_softmax(self.model(torch.tensor([token_ids])).logits[0].float(), dim=-1)
        entries = [None]
        for position in range(1, len(token_ids)):
            row = logprobs[position - 1]
            top = row.topk(k)
            entry = {str(token): {"logprob": value, "rank": rank + 1, "decoded_token": f"token_id:{token}"}
                     for rank, (value, token) in enumerate(zip(top.values.tolist(), top.indices.tolist()))}
            actual = token_ids[position]
            entry.setdefault(str(actual), {"logprob": row[actual].item(), "rank": 99, "decoded_token": "?"})
            entries.append(entry)
        return entries



@pytest.fixture
def fake_vllm(tiny_model_dir):
    FakeVLLM.model = load_model(ModelConfig(name=str(tiny_model_dir), dtype="float32"))[0]
    FakeVLLM.asked = []
    with serving_in_thread(FakeVLLM) as url:
        yield url


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_the_server_teacher_matches_the_local_cache(tmp_path, tiny_model_dir, fake_vllm, monkeypatch, caplog,
                                                    temperature):
    docs, tests = write_inputs(tmp_path)
    local_config = settings(tiny_model_dir, "methods=pd", "model.dtype=float32", f"train.teacher_top_k={TOP_K}",
                            f"train.distill_temperature={temperature}")
    local = RunDir(tmp_path / "local")
    monkeypatch.setattr(pipeline, "make_backend", scripted_backend)
    pipeline.prepare(local, local_config, docs, tests)
    pipeline.questions(local, local_config)
    pipeline.answers(local, local_config, METHODS["pd"])
    monkeypatch.undo()
    for name in ("server", "plain"):
        shutil.copytree(local.path, tmp_path / name)
    pipeline.teacher_cache(local, local_config, METHODS["pd"])

    server = RunDir(tmp_path / "server")
    server_config = settings(tiny_model_dir, "methods=pd", "model.dtype=float32", f"train.teacher_top_k={TOP_K}", "train.teacher=server",
                             f"train.distill_temperature={temperature}", f"generation.server_url={fake_vllm}/v1")
    pipeline.teacher_cache(server, server_config, METHODS["pd"])
    assert FakeVLLM.asked and all(body["prompt_logprobs"] == TOP_K and body["return_tokens_as_token_ids"]
                                  for body in FakeVLLM.asked)
    assert json.loads(server.manifest("teacher").read_text())["counts"]["source"] == "server"
    exact, approximate = TeacherCache(local.teacher), TeacherCache(server.teacher)
    assert exact.entries.keys() == approximate.entries.keys()
    for key in exact.entries:
        want, got = exact[key], approximate[key]
        assert torch.equal(got.answer_ids, want.answer_ids) and torch.equal(got.token_ids, want.token_ids)
        if temperature == 1.0:  # exact: the server's raw log-probabilities are the teacher's
            torch.testing.assert_close(got.logprobs, want.logprobs, atol=1e-4, rtol=0)
            torch.testing.assert_close(got.tail_mass, want.tail_mass, atol=1e-4, rtol=0)
        else:  # the kept tokens' ratios are exact; only the tail's weight is estimated
            torch.testing.assert_close(got.logprobs - got.logprobs[:, :1], want.logprobs - want.logprobs[:, :1],
                                       atol=1e-4, rtol=0)

    plain = RunDir(tmp_path / "plain")
    caplog.set_level("INFO")
    plain_config = dataclasses.replace(server_config, generation=dataclasses.replace(
        server_config.generation, server_url=f"{fake_vllm}/plain/v1"))
    pipeline.teacher_cache(plain, plain_config, METHODS["pd"])
    assert json.loads(plain.manifest("teacher").read_text())["counts"]["source"] == "local"
    assert "gives no prompt log-probabilities" in caplog.text
    fallback = TeacherCache(plain.teacher)
    for key in exact.entries:
        torch.testing.assert_close(fallback[key].logprobs, exact[key].logprobs)


def test_a_top_k_beyond_the_servers_limit_is_one_line(tiny_model_dir, fake_vllm):
    backend = ServerBackend(f"{fake_vllm}/v1", "m", api_key_env=None)
    with pytest.raises(UserError, match=r"/v1/completions: HTTP 400: .*prompt logprobs of 50, .*max allowed: 20"):
        backend.prompt_logprobs([1, 2, 3], 50)
