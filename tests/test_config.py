import dataclasses

import pytest
import yaml

from promptdistill.config import KEY_NEUTRAL, RunConfig, TrainConfig, parse_override, preset_path, resolve_config
from promptdistill.errors import UserError


def test_paper_defaults():
    config = RunConfig()
    assert (config.synth.question_temperature, config.synth.pd_answer_temperature) == (1.5, 1.5)
    assert config.synth.sft_answer_temperature == 0.25
    assert (config.train.distill_temperature, config.train.learning_rate, config.train.batch_size) == (2.0, 1e-5, 4)


def test_order_preset_then_file_then_overrides(tmp_path):
    config_file = tmp_path / "mine.yaml"
    config_file.write_text("train:\n  epochs: 2\n  learning_rate: 0.01\n")
    config = resolve_config(config_file, ["train.epochs=7", "methods=base,pd"])
    assert config.train.epochs == 7  # --set beats the file
    assert config.train.learning_rate == 0.01  # the file beats the model preset
    assert config.synth.questions_per_passage == 20  # the built-in model's preset beats the paper
    assert config.methods == ["base", "pd"]
    other_model = resolve_config(None, ["model.name=Qwen/Qwen2.5-3B-Instruct"])
    assert other_model.synth.questions_per_passage == RunConfig().synth.questions_per_passage


def test_the_paper_preset_undoes_every_setting_of_the_built_in_models_preset():
    # --preset paper runs on the default model too: each value the built-in preset changes must be
    # stated in paper.yaml, or the paper's run silently takes the 135M model's choice.
    built_in, paper = (yaml.safe_load(preset_path(name).read_text()) for name in ("smollm2-135m", "paper"))
    missing = [f"{section}.{name}" for section, values in built_in.items() for name in values
               if name not in paper.get(section, {})]
    assert missing == []
    config = resolve_config(None, [], "paper")
    assert (config.synth.pd_answers_per_question, config.synth.sft_answers_per_question) == (1, 1)


@pytest.mark.parametrize("override, message", [
    ("train.learning_rate=-1e-4", "train.learning_rate must be > 0, got -0.0001"),
    ("train.lerning_rate=1", "unknown setting 'train.lerning_rate'"),
    ("train.epochs=two", "setting 'train.epochs' expects int, got 'two'"),
    ("methods=base,magic", "methods: unknown value 'magic'"),
    ("methods=", "methods: empty; choose one or more of base"),
    ("train.teacher=server", "train.teacher=server needs the run's server: generation.server_url or"),
    ("generation.max_concurrency=0", "generation.max_concurrency must be > 0"),
    ("generation.max_retries=-1", "generation.max_retries: -1; 0 or more"),
    ("train.keep_checkpoints=some", "train.keep_checkpoints: unknown value 'some'"),
    ("synth.top_p=1.5", r"synth.top_p must be in \(0, 1\]"),
    ("train.distill_ce_weight=-0.5", "train.distill_ce_weight must be >= 0, got -0.5"),
    ("synth.near_duplicate_overlap=1.5", r"synth.near_duplicate_overlap must be in \[0, 1\], got 1.5"),
    ("synth.closed_book_share=-0.3", r"synth.closed_book_share must be in \[0, 1\], got -0.3"),
    ("synth.pd_answers_per_question=0", "synth.pd_answers_per_question must be > 0, got 0"),
    ("train.on_policy_share=1.5", r"train.on_policy_share must be in \[0, 1\], got 1.5"),
    ("train.online_support=mine", "train.online_support: unknown value 'mine'"),
    ("train.on_policy_mix=swap", "train.on_policy_mix: unknown value 'swap'"),
    ("train.online_top_k=-20", "train.online_top_k must be >= 0, got -20"),
    ("train.update_rehearsal=1.5", r"train.update_rehearsal must be in \[0, 1\], got 1.5"),
    ("train.update_epochs=-1", "train.update_epochs must be >= 0, got -1"),
    ("train.hidden_state_weight=0.5", "train.hidden_state_weight needs train.teacher=online: the teacher cache"),
    ("epochs", "expected SECTION.FIELD=VALUE"),
])
def test_bad_settings_name_the_setting(override, message):
    with pytest.raises(UserError, match=message):
        resolve_config(None, [override])


def test_mixed_answers_refuse_a_generation_server_before_any_work():
    with pytest.raises(UserError, match="synth.closed_book_share mixes two prompts' tokens one at a time"):
        resolve_config(None, ["synth.closed_book_share=0.3", "generation.server_url=http://localhost:8000/v1"])


def test_parse_override_types():
    assert parse_override("train.epochs=3") == {"train": {"epochs": 3}}
    assert resolve_config(None, ["train.learning_rate=1e-4"]).train.learning_rate == 1e-4
    assert TrainConfig(learning_rate=1).learning_rate == 1


def test_a_run_made_before_a_setting_existed_reads_it_from_the_model_preset(tmp_path):
    from promptdistill.config import load_run_config

    saved = resolve_config(None, []).to_dict()  # the built-in model
    del saved["synth"]["top_k"], saved["synth"]["question_style"], saved["train"]["loss_reduction"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(saved))
    config = load_run_config(path)
    assert (config.synth.top_k, config.synth.question_style) == (0, "single")  # the preset's, not the paper's
    assert config.train.loss_reduction == "token"
    assert config.synth.question_temperature == 0.7 and load_run_config(path, ["synth.top_k=5"]).synth.top_k == 5


def test_settings_added_later_are_left_out_of_stage_keys_at_their_defaults():
    """A finished run from before a setting existed keeps its keys: each KEY_NEUTRAL value is the default."""
    config = RunConfig()
    assert config.settings(*KEY_NEUTRAL) == {}
    assert {path: config.value(path) for path in KEY_NEUTRAL} == KEY_NEUTRAL
    changed = dataclasses.replace(config, synth=dataclasses.replace(config.synth, require_passage_name=True))
    assert changed.settings("seed", "synth.require_passage_name") == {"seed": 0, "synth.require_passage_name": True}
