"""Using a run's result: ask, chat, export and serve, on a pd adapter trained on the tiny model
(tied embeddings, the output layer adapted too)."""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from test_pipeline import scripted_backend, settings, write_inputs
from typer.testing import CliRunner

from promptdistill import chat, cli, pipeline
from promptdistill.errors import UserError
from promptdistill.export import MARKER, current_export, export_model
from promptdistill.files import shareable_mode
from promptdistill.generation import make_backend
from promptdistill.methods import METHODS
from promptdistill.models import load_adapter, load_model
from promptdistill.report import report_run
from promptdistill.rundir import RunDir


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """base and pd evaluated on the tiny model (pd's questions and answers scripted)."""
    from conftest import make_model, make_tokenizer

    tmp_path = tmp_path_factory.mktemp("use")
    tokenizer = make_tokenizer()
    make_model(len(tokenizer)).save_pretrained(tmp_path / "tiny-model")
    tokenizer.save_pretrained(tmp_path / "tiny-model")
    docs, tests = write_inputs(tmp_path)
    run = RunDir(tmp_path / "run")
    config = settings(tmp_path / "tiny-model", "methods=base,pd", "model.dtype=float32", "train.lora_output_layer=true")
    pipeline.prepare(run, config, docs, tests)
    pipeline.make_backend = scripted_backend
    try:
        pipeline.questions(run, config)
        pipeline.answers(run, config, METHODS["pd"])
        pipeline.train(run, config, METHODS["pd"])
    finally:
        pipeline.make_backend = make_backend
    for name in config.methods:
        pipeline.evaluate(run, config, METHODS[name])
    report_run(run, config)
    return run, config


def logits_of(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_ask_gives_the_reply_that_evaluation_graded(trained):
    run, config = trained
    for name in ("base", "pd"):
        for record in [json.loads(line) for line in run.eval(name).read_text().splitlines()]:
            assert chat.ask(run, config, record["question"], name) == record["reply"]


def test_ask_on_the_command_line_prints_the_reply(trained):
    run, _ = trained
    record = json.loads(run.eval("pd").read_text().splitlines()[0])
    result = CliRunner().invoke(cli.app, ["ask", str(run.path), record["question"]])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == record["reply"]


def test_ask_names_a_method_that_was_not_trained(trained):
    run, config = trained
    with pytest.raises(UserError, match=r"--method sft: .*adapters/sft/adapter is missing; train it"):
        chat.ask(run, config, "who founded velmora ?", "sft")


def test_export_loads_in_plain_transformers_with_the_adapters_logits(trained, tmp_path):
    run, config = trained
    out = export_model(run, config, "pd", tmp_path / "export")
    ids = torch.tensor([[7, 30, 31, 9, 12, 40]])
    # Reloaded in a process that never imports promptdistill.
    script = ("import sys, torch; from transformers import AutoModelForCausalLM, AutoTokenizer;"
              "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval(); AutoTokenizer.from_pretrained(sys.argv[1]);"
              "ids = torch.tensor([[7, 30, 31, 9, 12, 40]]);"
              "torch.save({'logits': m(input_ids=ids).logits.detach(), 'embed': m.get_input_embeddings().weight.detach(),"
              " 'tied': m.config.tie_word_embeddings}, sys.argv[2])")
    subprocess.run([sys.executable, "-c", script, str(out), str(tmp_path / "reloaded.pt")], check=True)
    reloaded = torch.load(tmp_path / "reloaded.pt")

    base, _ = load_model(config.model)
    base_embeddings = base.get_input_embeddings().weight.detach().clone()
    base_logits = logits_of(base, ids)
    with_adapter = load_adapter(base, run.adapter("pd")).eval()
    assert "lm_head" in {name.split(".")[-1] for name in with_adapter.peft_config["default"].target_modules}
    expected = logits_of(with_adapter, ids)
    assert (expected - base_logits).abs().max() > 1e-3  # the adapter changes the answer
    assert torch.allclose(reloaded["logits"], expected, atol=1e-4)
    assert torch.equal(reloaded["embed"], base_embeddings)  # the tied input embeddings are untouched
    assert reloaded["tied"] is False
    card = (out / "README.md").read_text()
    assert "pd (this model)" in card and "| town | 2 |" in card and "train.lora_output_layer | True" in card


def test_adapter_only_export_names_its_base_model(trained, tmp_path):
    run, config = trained
    out = export_model(run, config, "pd", tmp_path / "adapter", adapter_only=True)
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str((run.path.parent / "tiny-model").resolve())
    assert (out / "adapter_model.safetensors").read_bytes() == (run.adapter("pd") / "adapter_model.safetensors").read_bytes()
    assert "library_name: peft" in (out / "README.md").read_text()
    for file in out.iterdir():  # shareable like the rest of a run (safetensors itself writes 0600)
        assert stat.S_IMODE(file.stat().st_mode) == shareable_mode(), file.name


def test_export_replaces_an_earlier_export_but_no_other_folder(trained, tmp_path):
    run, config = trained
    out = export_model(run, config, "pd", tmp_path / "export", adapter_only=True)
    export_model(run, config, "pd", out)
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export"]  # nothing staged is left
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep")
    with pytest.raises(UserError, match="is not a promptdistill export"):
        export_model(run, config, "pd", precious)
    with pytest.raises(UserError, match="only a trained method"):
        export_model(run, config, "rag", tmp_path / "rag")


def test_serving_a_run_exports_once_per_adapter(trained):
    run, config = trained
    first = current_export(run, config, "pd")
    stamp = (first / MARKER).stat().st_mtime_ns
    assert current_export(run, config, "pd") == first
    assert (first / MARKER).stat().st_mtime_ns == stamp


def test_chat_through_standard_input(trained, monkeypatch):
    run, config = trained
    seen = []
    real_reply = chat.ChatModel.reply

    def recording(self, messages, write):
        seen.append((self.method, [m["role"] for m in messages]))
        return real_reply(self, messages, write)

    monkeypatch.setattr(chat.ChatModel, "reply", recording)
    turns = ["who founded velmora ?", "what is the river ?", "/reset", "/method base", "who founded velmora ?",
             "/method nope", "/exit", "never read"]
    result = CliRunner().invoke(cli.app, ["chat", str(run.path), "--max-tokens", "4"], input="\n".join(turns) + "\n")
    assert result.exit_code == 0, result.output
    assert seen == [("pd", ["user"]), ("pd", ["user", "assistant", "user"]), ("base", ["user"])]
    pd_first = result.stdout.split("pd: ")[1].split("\n")[0].strip()
    assert pd_first == chat.ask(run, config, "who founded velmora ?", "pd")  # greedy, 4 tokens, as evaluated
    assert "(conversation forgotten)" in result.stdout and "this run has base, pd" in result.stdout


def test_chat_drops_the_oldest_exchanges_to_fit_the_context(trained):
    run, config = trained
    model = chat.ChatModel(run, config, "pd", max_new_tokens=4, temperature=0)
    messages = [{"role": role, "content": "who founded velmora ?"} for role in ["user", "assistant"] * 3][:-1]
    whole = model.prompt_ids(list(messages)).shape[1]
    model.context_tokens = whole + 4 - 1  # one token short
    kept = list(messages)
    assert model.prompt_ids(kept).shape[1] + 4 <= model.context_tokens
    assert kept == messages[2:]
    model.context_tokens = 5
    with pytest.raises(UserError, match="longer than the model's context"):
        model.prompt_ids([messages[0]])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_answers_a_chat_request_and_stops_cleanly(trained, tmp_path):
    run, config = trained
    out = export_model(run, config, "pd", tmp_path / "export")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "promptdistill", "serve", str(out), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):  # the server imports and loads the model first
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                time.sleep(0.5)
        request = urllib.request.Request(f"{url}/v1/chat/completions", headers={"Content-Type": "application/json"},
                                         data=json.dumps({"model": str(out.resolve()), "max_tokens": 3,
                                                          "messages": [{"role": "user", "content": "who ?"}]}).encode())
        reply = json.loads(urllib.request.urlopen(request, timeout=60).read())
        assert reply["choices"][0]["message"]["role"] == "assistant"
        assert reply["usage"]["completion_tokens"] <= 3
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
    with pytest.raises(ProcessLookupError):  # the server was this process (exec), and it is gone
        os.kill(server.pid, 0)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/health", timeout=1)
