"""Typed run configuration: defaults from the paper, presets from YAML, overrides from the CLI.

Resolution order, later wins:
  dataclass defaults (the paper's settings)
  -> the model's preset (the built-in model ships one: configs/smollm2-135m.yaml)
  -> --preset NAME (configs/NAME.yaml: paper, cpu-smoke; `promptdistill demo` uses demo)
  -> --config FILE.yaml
  -> --set section.field=value, repeatable

The resolved config is written to RUN_DIR/config.yaml, so a run says exactly what it did.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from promptdistill import methods as method_table
from promptdistill.errors import UserError, check_choice
from promptdistill.files import read_text

DIVERGENCES = ("forward", "reverse", "jsd")  # of pd's loss: train/losses.py
ANSWER_LENGTHS = ("cap", "sentence")  # where a generated answer ends
QUESTION_STYLES = ("tagged", "single")  # how the expert is asked for questions: synth.py
TEACHERS = ("cached", "server", "online")
ON_POLICY_MIXES = ("replace", "add")  # what the student's own answers do to a batch's expert rows: train/loop.py
ONLINE_SUPPORTS = ("teacher", "student")  # whose top k the online teacher's divergence reads: train/losses.py
LOSS_REDUCTIONS = ("token", "sequence")  # how a batch's token losses are averaged: train/losses.py
TRACKERS = ("", "tensorboard", "trackio", "wandb", "mlflow")  # of train.tracker ("": none): train/tracking.py
REPLAYS = ("none", "self", "open-book")  # what training mixes in to keep the base model's behaviour: retention.py
# Settings added after runs existed, at the value that leaves behaviour as it was: there they stay
# out of stage keys (RunConfig.settings), so that finished runs from before them are not redone.
KEY_NEUTRAL: dict[str, Any] = {"train.distill_ce_weight": 0.0, "synth.teacher_instruction": "",
                               "synth.closed_book_share": 0.0, "train.hidden_state_weight": 0.0,
                               "synth.near_duplicate_overlap": 0.0,
                               "synth.pd_answers_per_question": 1, "synth.sft_answers_per_question": 1,
                               "synth.require_passage_name": False, "train.questions_per_passage": 0,
                               "train.on_policy_share": 0.0, "train.on_policy_temperature": 1.0,
                               "train.on_policy_max_tokens": 64, "train.online_top_k": 0,
                               "train.online_support": "teacher", "train.on_policy_ahead": 1,
                               "train.on_policy_mix": "replace"}


@dataclass
class ModelConfig:
    name: str = field(
        default="smollm2-135m",
        metadata={"help": "built-in name, hub id, local folder or .gguf file"},
    )
    dtype: str = field(default="auto", metadata={"help": "float32, bfloat16, float16 or auto"})

    def __post_init__(self):
        check_choice("model.dtype", self.dtype, ("auto", "float32", "bfloat16", "float16"))


@dataclass
class CorpusConfig:
    passage_tokens: int = field(
        default=384, metadata={"help": "token budget of one passage; paragraphs are packed up to it"}
    )

    def __post_init__(self):
        _check_positive("corpus.passage_tokens", self.passage_tokens)


@dataclass
class SynthConfig:
    questions_per_passage: int = field(
        default=100, metadata={"help": "training questions the expert writes per passage"}
    )
    question_style: str = field(
        default="tagged", metadata={"help": "tagged: five self-contained questions per reply in <question> tags "
                                            "(the official code's style); single: one question per reply"})
    question_temperature: float = field(
        default=1.5, metadata={"help": "sampling temperature of question writing (paper: 1.5)"}
    )
    pd_answer_temperature: float = field(
        default=1.5, metadata={"help": "temperature of the pd training answers (paper: 1.5)"}
    )
    sft_answer_temperature: float = field(
        default=0.25, metadata={"help": "temperature of the sft training answers (paper: 0.25)"}
    )
    pd_answers_per_question: int = field(
        default=1, metadata={"help": "pd training answers sampled per question (official code: lesson_num_choices=1)"})
    sft_answers_per_question: int = field(
        default=1, metadata={"help": "sft training answers sampled per question (official code: exam_num_choices=1)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling cut (paper: none)"})
    top_k: int = field(default=50, metadata={"help": "sample among the k likeliest tokens (official code: 50); "
                                                      "0: the whole vocabulary"})
    max_question_tokens: int = field(
        default=512, metadata={"help": "length cap of a question-writing reply (official code: 512)"})
    max_answer_tokens: int = field(default=256, metadata={"help": "length cap of an answer"})
    answer_length: str = field(
        default="cap", metadata={"help": "cap: answers run until they end or reach max_answer_tokens (the "
                                         "paper's); sentence: each answer ends at its first full sentence"})
    teacher_instruction: str = field(
        default="", metadata={"help": "a line between the passage and the question in the teacher's prompt, "
                                      "which the open-book and rag prompts share; empty: none"})
    near_duplicate_overlap: float = field(
        default=0.0, metadata={"help": "drop a question whose content and question words overlap those of a "
                                       "question already kept for its passage by at least this share (Jaccard, "
                                       "in (0, 1]); 0: only questions identical once normalised are dropped"})
    require_passage_name: bool = field(
        default=False, metadata={"help": "keep only questions that name something their passage names (a word it "
                                         "always capitalises), as a closed-book question must say what it asks "
                                         "about; a passage without such words keeps every question"})
    max_attempts: int = field(
        default=4,
        metadata={"help": "question-writing rounds per passage before settling for fewer"},
    )
    closed_book_share: float = field(
        default=0.0, metadata={"help": "the chance that a token of a training answer is drawn from the model without "
                                       "the passage in its prompt rather than with it (MixSD's mixed answers, "
                                       "about 0.3 there; a mixed answer naming a name or number the passage does not "
                                       "gives way to the expert's own); needs the model in this process; 0: off, "
                                       "the paper's"})
    self_check_share: float = field(
        default=0.2, metadata={"help": "the share of each passage's questions held out from training for the "
                                       "self-check (selfcheck.py): questions_per_passage x share / (1 - share) more "
                                       "are written, at least one; 0: no self-check"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generation batch"})

    def __post_init__(self):
        _check_positive("synth.questions_per_passage", self.questions_per_passage)
        for name in ("question_temperature", "pd_answer_temperature", "sft_answer_temperature"):
            _check_positive(f"synth.{name}", getattr(self, name))
        if self.top_k < 0:
            raise UserError(f"synth.top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"synth.top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.self_check_share < 1:
            raise UserError(f"synth.self_check_share must be in [0, 1), got {self.self_check_share}")
        check_choice("synth.answer_length", self.answer_length, ANSWER_LENGTHS)
        check_choice("synth.question_style", self.question_style, QUESTION_STYLES)
        if not 0 <= self.closed_book_share <= 1:
            raise UserError(f"synth.closed_book_share must be in [0, 1], got {self.closed_book_share}")
        if not 0 <= self.near_duplicate_overlap <= 1:
            raise UserError(f"synth.near_duplicate_overlap must be in [0, 1], got {self.near_duplicate_overlap}")
        for name in ("max_question_tokens", "max_answer_tokens", "pd_answers_per_question", "sft_answers_per_question",
                     "max_attempts", "batch_size"):
            _check_positive(f"synth.{name}", getattr(self, name))


@dataclass
class TrainConfig:
    epochs: int = field(default=10, metadata={"help": "passes over the training answers (paper: 10)"})
    tracker: str = field(
        default="", metadata={"help": "log training curves and results to tensorboard, trackio, wandb or mlflow, in "
                                      "RUN/logs/, offline unless the tracker's environment says (train/tracking.py); "
                                      "empty: none"})
    questions_per_passage: int = field(
        default=0, metadata={"help": "train on the first N of each passage's questions, with all their answers; "
                                     "0: all of them. Smaller sets lie inside larger ones with the same answers: "
                                     "the data-scale variant of `promptdistill compare`"})
    update: bool = field(
        default=False, metadata={"help": "when the documents changed since a method was trained, continue from its "
                                         "adapter on the added and edited passages, rehearsing the others (update.py; "
                                         "`run --update`); a removed document still trains from scratch"})
    update_rehearsal: float = field(
        default=0.25, metadata={"help": "in an update, the share of each unchanged passage's answers trained on again "
                                        "(at least one; 0: none), so that what the adapter learned is kept"})
    update_epochs: int = field(default=0, metadata={"help": "epochs of an update; 0: train.epochs"})
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW peak learning rate (paper: 1e-5)"})
    batch_size: int = field(default=4, metadata={"help": "sequences per optimizer step (paper: 4)"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per step"})
    max_batch_tokens: int = field(
        default=0, metadata={"help": "at most this many tokens (rows x padded width past the shared chat header) "
                                     "through the model at once: a longer batch runs in parts whose gradients add "
                                     "up to the same step; bounds memory on long rows (uft's passages); 0: no bound"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "share of steps with linear warmup"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / rank)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    lora_output_layer: bool = field(
        default=False, metadata={"help": "adapt the output layer too (the paper's setting); a tied output "
                                         "layer is adapted alone, its input embeddings stay as they are"})
    distill_temperature: float = field(
        default=2.0, metadata={"help": "temperature of the teacher and student in the KL (paper: 2)"}
    )
    teacher: str = field(
        default="cached",
        metadata={"help": "cached: top-k teacher targets computed once before training; "
                          "server: the same from the run's server's prompt log-probabilities (vLLM), tempered "
                          "here, or computed in this process where it gives none; "
                          "online: full-vocabulary teacher at every step (the paper's way)"},
    )
    teacher_top_k: int = field(default=20, metadata={"help": "tokens kept per position in the teacher cache"})
    divergence: str = field(
        default="forward",
        metadata={"help": "pd's divergence: forward KL(teacher || student) (the paper's), reverse "
                          "KL(student || teacher), or jsd (generalised Jensen-Shannon, weight jsd_beta)"},
    )
    jsd_beta: float = field(
        default=0.5, metadata={"help": "jsd's mixture weight of the teacher, in (0, 1) (TRL's GKD convention)"})
    distill_ce_weight: float = field(
        default=0.0, metadata={"help": "pd: weight of a cross-entropy term on the expert's answer tokens, "
                                       "closed-book, added to the divergence (the official code's token loss; "
                                       "0: off, the paper's)"})
    on_policy_share: float = field(
        default=0.0, metadata={"help": "pd: the share of each batch's rows whose answers are the student's own, "
                                       "sampled closed-book with its adapter on and scored by the teacher (same "
                                       "weights, adapter off, the passage in its prompt) with train.divergence over "
                                       "the whole vocabulary (on-policy distillation, GKD's lambda); 0: the expert's "
                                       "answers only, the paper's"})
    on_policy_temperature: float = field(
        default=1.0, metadata={"help": "sampling temperature of the student's own answers (train.on_policy_share)"})
    on_policy_max_tokens: int = field(
        default=64, metadata={"help": "length cap of the student's own answers (train.on_policy_share)"})
    on_policy_mix: str = field(
        default="replace", metadata={"help": "replace: the student's answers take the place of the expert's on "
                                             "their rows (GKD's lambda); add: the batch keeps every expert row and "
                                             "the student's answers to the first share of its questions come on top"})
    on_policy_ahead: int = field(
        default=1, metadata={"help": "the student answers the rows of this many batches at once, in one batched "
                                     "generation (fewer, wider decoding steps: cheaper where a step's rows cost "
                                     "little more than one, as on a CPU), with answers up to this many - 1 steps "
                                     "older than the adapter that learns from them (8 cost pd 20 points on the demo, "
                                     "docs/quality.md); 1: each batch's own, at its step"})
    online_top_k: int = field(
        default=0, metadata={"help": "pd: the online teacher's divergence (the student's own answers of "
                                     "train.on_policy_share, every row with train.teacher=online) over k tokens at "
                                     "each position and one bucket for the rest, as the cached teacher's; 0: the "
                                     "whole vocabulary"})
    online_support: str = field(
        default="teacher", metadata={"help": "whose top train.online_top_k tokens: the teacher's (the Tinker "
                                             "cookbook's) or the student's (On-Policy Context Distillation's)"})
    hidden_state_weight: float = field(
        default=0.0, metadata={"help": "pd: weight of a term pulling the student's hidden states at every layer "
                                       "towards the teacher's at the answer tokens (normalised L1, as Deep Context "
                                       "Distillation); needs train.teacher=online; 0: off, the paper's"})
    loss_reduction: str = field(
        default="token", metadata={"help": "token: the mean over a batch's answer tokens; sequence: the mean per "
                                           "answer, then over the batch (the official code's)"})
    mixed_precision: str = field(
        default="auto", metadata={"help": "auto: where model.dtype resolves to bfloat16, forward passes under "
                                          "bfloat16 autocast with the adapter, optimizer and loss in float32; none: "
                                          "everything in model.dtype; bf16: that autocast whatever model.dtype"})
    keep_checkpoints: str = field(
        default="last", metadata={"help": "last: only the newest epoch's checkpoint is kept (all that resuming "
                                          "needs); all: every epoch's"})
    uft_epochs: int = field(default=3, metadata={"help": "epochs of uft, next-token training on the passages (paper: 3)"})
    replay: str = field(
        default="none", metadata={"help": "none; self: mix the base model's own replies to everyday prompts "
                                          "into every batch, with a KL-to-base term on them (the paper's Eq. 2 "
                                          "with the model's replies in place of Tulu data); open-book: mix in the "
                                          "method's own training answers with the passage in the prompt, KL to "
                                          "the base model reading the same, so that the student still reads a "
                                          "passage as the base model does (pd+rag; methods trained on answers)"})
    replay_weight: float = field(default=1.0, metadata={"help": "weight of the replay KL term in the loss"})
    replay_ratio: float = field(
        default=0.25, metadata={"help": "replay rows per training row of a batch (at least one row)"})
    replay_prompts: str = field(
        default="", metadata={"help": "a .jsonl ({\"prompt\"} per line) or .txt (one per line) file of prompts "
                                      "to replay; empty: the 80 bundled ones (data/replay_prompts.jsonl)"})

    def __post_init__(self):
        check_choice("train.teacher", self.teacher, TEACHERS)
        check_choice("train.divergence", self.divergence, DIVERGENCES)
        check_choice("train.keep_checkpoints", self.keep_checkpoints, ("last", "all"))
        check_choice("train.mixed_precision", self.mixed_precision, ("auto", "none", "bf16"))
        check_choice("train.loss_reduction", self.loss_reduction, LOSS_REDUCTIONS)
        check_choice("train.online_support", self.online_support, ONLINE_SUPPORTS)
        check_choice("train.on_policy_mix", self.on_policy_mix, ON_POLICY_MIXES)
        check_choice("train.replay", self.replay, REPLAYS)
        check_choice("train.tracker", self.tracker, TRACKERS)
        if not 0 < self.jsd_beta < 1:
            raise UserError(f"train.jsd_beta must be in (0, 1), got {self.jsd_beta}")
        for name in ("epochs", "learning_rate", "batch_size", "gradient_accumulation_steps",
                     "lora_rank", "lora_alpha", "distill_temperature", "max_grad_norm", "teacher_top_k",
                     "uft_epochs", "replay_weight", "replay_ratio", "on_policy_temperature", "on_policy_max_tokens",
                     "on_policy_ahead"):
            _check_positive(f"train.{name}", getattr(self, name))
        if not 0 <= self.warmup_ratio < 1:
            raise UserError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 <= self.on_policy_share <= 1:
            raise UserError(f"train.on_policy_share must be in [0, 1], got {self.on_policy_share}")
        if not 0 <= self.update_rehearsal <= 1:
            raise UserError(f"train.update_rehearsal must be in [0, 1], got {self.update_rehearsal}")
        for name in ("weight_decay", "distill_ce_weight", "hidden_state_weight", "max_batch_tokens",
                     "questions_per_passage", "update_epochs", "online_top_k"):
            if getattr(self, name) < 0:
                raise UserError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.hidden_state_weight and self.teacher != "online":
            raise UserError("train.hidden_state_weight needs train.teacher=online: the teacher cache holds no "
                            f"hidden states (train.teacher is {self.teacher!r})")
        if not 0 <= self.lora_dropout < 1:
            raise UserError(f"train.lora_dropout must be in [0, 1), got {self.lora_dropout}")


@dataclass
class EvalConfig:
    max_answer_tokens: int = field(default=48, metadata={"help": "length cap of a test answer"})
    answer_temperature: float = field(
        default=0.0, metadata={"help": "0: greedy test answers (ours; the official evaluate.py's default); "
                                       "the paper samples them at 0.25"})
    answer_length: str = field(
        default="cap", metadata={"help": "cap: test answers run until they end or reach max_answer_tokens; "
                                         "sentence: each ends at its first full sentence"})
    batch_size: int = field(default=16, metadata={"help": "test questions per generation batch"})
    match: str = field(
        default="words", metadata={"help": "contains: an accepted answer as whole words of the reply (words), or "
                                           "anywhere in it (substring, the official code's: '6' counts in '1846')"})
    retriever: str = field(default="bm25", metadata={"help": "rag retriever: bm25 or dense"})
    rag_k: int = field(default=7, metadata={"help": "passages retrieved into the rag prompt (paper: 7)"})
    dense_model: str = field(
        default="all-minilm-l6-v2",
        metadata={"help": "sentence-transformers model of the dense retriever (built in: all-minilm-l6-v2)"},
    )
    judge: str = field(
        default="", metadata={"help": "LLM judge: a model name as for --model, or the model at judge_url; "
                                      "empty: lexical grades only"})
    judge_url: str = field(default="", metadata={"help": "OpenAI-compatible endpoint for the judge"})
    judge_api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "environment variable holding the judge endpoint's key"})
    judge_max_tokens: int = field(default=256, metadata={"help": "length cap of the judge's reasoning"})
    judge_style: str = field(
        default="verdict", metadata={"help": "verdict: zero-shot, a verdict line (ours); few-shot: three worked "
                                             "examples, reasoning and <grade> tags (the official code's format)"})
    bootstrap_resamples: int = field(default=10_000, metadata={"help": "resamples of the 95% intervals"})
    retention: bool = field(
        default=True, metadata={"help": "measure what each trained method forgot: the bundled general questions "
                                        "the base model gets right, and drift (KL to the base model) on everyday "
                                        "prompts (retention.py)"})
    retention_max_tokens: int = field(
        default=32, metadata={"help": "length cap of the replies the retention check generates"})
    retention_questions: int = field(
        default=0, metadata={"help": "general questions the retention check asks, spread evenly over the "
                                     "bundled kinds; 0: all 234"})

    def __post_init__(self):
        check_choice("eval.retriever", self.retriever, ("bm25", "dense"))
        check_choice("eval.answer_length", self.answer_length, ANSWER_LENGTHS)
        check_choice("eval.match", self.match, ("words", "substring"))
        if self.answer_temperature < 0:
            raise UserError(f"eval.answer_temperature must be >= 0, got {self.answer_temperature}")
        check_choice("eval.judge_style", self.judge_style, ("verdict", "few-shot"))
        for name in ("max_answer_tokens", "batch_size", "rag_k", "judge_max_tokens", "bootstrap_resamples",
                     "retention_max_tokens"):
            _check_positive(f"eval.{name}", getattr(self, name))
        if self.retention_questions < 0:
            raise UserError(f"eval.retention_questions must be >= 0, got {self.retention_questions}")
        if self.judge_url and not self.judge:
            raise UserError("eval.judge_url needs eval.judge, the model name to ask the endpoint for")


@dataclass
class DatasetConfig:
    """Where `promptdistill reproduce` takes its documents and test questions from."""

    spec: str = field(default="", metadata={"help": "squadshifts:SUBSET, paper:SUBSET or hotpotqa (reproduce)"})
    limit_questions: int = field(default=1000, metadata={"help": "first N test questions in file order (paper: 1000)"})
    limit_passages: int = field(
        default=0, metadata={"help": "keep the first N documents and their test questions; 0 keeps all"})
    rewrite_questions: bool = field(
        default=False, metadata={"help": "rewrite test questions to stand alone with the model and passage "
                                         "(off for paper:SUBSET, whose questions are already rewritten)"})

    def __post_init__(self):
        _check_positive("dataset.limit_questions", self.limit_questions)
        if self.limit_passages < 0:
            raise UserError(f"dataset.limit_passages must be >= 0, got {self.limit_passages}")


@dataclass
class GenerationConfig:
    server_url: str = field(
        default="", metadata={"help": "an OpenAI-compatible server (http://HOST:PORT/v1) for the run's generations: "
                                      "questions, answers, rewrites, test answers (a method's adapter too where the "
                                      "server loads it, as vLLM does; else in this process)"})
    server_command: str = field(
        default="", metadata={"help": "a command that starts such a server, with {model} (the model's local "
                                      "folder or hub id) and {port}: started when a run begins, stopped at its end, "
                                      "also after an error or Ctrl-C"})
    server_model: str = field(
        default="", metadata={"help": "the model name requests carry (default: what {model} stands for, or model.name)"})
    api_key_env: str = field(default="", metadata={"help": "environment variable with the server's key; empty: none"})
    startup_seconds: int = field(default=900, metadata={"help": "how long a started server may take to answer"})
    max_concurrency: int = field(
        default=32, metadata={"help": "requests in flight at once to a server (it batches them), also the judge's"})
    max_retries: int = field(
        default=5, metadata={"help": "retries of a server request after a refused connection, a timeout, 408, 429 "
                                     "or 5xx, waiting 0.5 s doubling to 8 s"})

    def __post_init__(self):
        if self.server_command and "{port}" not in self.server_command:
            raise UserError("generation.server_command must contain {port}, where the server is to listen")
        _check_positive("generation.startup_seconds", self.startup_seconds)
        _check_positive("generation.max_concurrency", self.max_concurrency)
        if self.max_retries < 0:
            raise UserError(f"generation.max_retries: {self.max_retries}; 0 or more")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    methods: list[str] = field(default_factory=lambda: list(method_table.METHODS))
    seed: int = 0

    def __post_init__(self):
        self.methods = [method_table.canonical_name(method) for method in self.methods]
        if not self.methods:
            raise UserError("methods: empty; choose one or more of " + ", ".join(method_table.METHODS))
        if self.train.teacher == "server" and not (self.generation.server_url or self.generation.server_command):
            raise UserError("train.teacher=server needs the run's server: generation.server_url or "
                            "generation.server_command")
        if self.synth.closed_book_share and (self.generation.server_url or self.generation.server_command):
            raise UserError("synth.closed_book_share mixes two prompts' tokens one at a time, which a generation "
                            "server cannot: leave generation.server_url and generation.server_command empty")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def settings(self, *paths: str) -> dict[str, Any]:
        """The values of some settings by dotted path, e.g. ("train.epochs", "seed"), as a stage's
        key reads them: a setting at its KEY_NEUTRAL value is left out."""
        values = {path: self.value(path) for path in paths}
        return {path: value for path, value in values.items() if path not in KEY_NEUTRAL or value != KEY_NEUTRAL[path]}

    def value(self, path: str) -> Any:
        """One setting by dotted path, e.g. "synth.pd_answer_temperature"."""
        value: Any = self
        for part in path.split("."):
            value = getattr(value, part)
        return value


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise UserError(f"{name} must be > 0, got {value}")


def _build(cls, values: dict[str, Any], where: str):
    """Make dataclass `cls` from a nested dict, naming the offending key on error."""
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else key
        if key not in known:
            raise UserError(f"unknown setting {path!r}; known: {', '.join(sorted(known))}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise UserError(f"setting {path!r} must be a mapping, got {value!r}")
            kwargs[key] = _build(hint, value, path)
        else:
            kwargs[key] = _coerce(hint, value, path)
    return cls(**kwargs)


def _coerce(hint, value, path: str):
    if hint is float and isinstance(value, str):
        try:  # YAML reads "1e-4" (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is bool and isinstance(value, bool):
        return value
    if hint is str and isinstance(value, str):
        return value
    if getattr(hint, "__origin__", None) is list:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            return [str(item) for item in value]
    raise UserError(f"setting {path!r} expects {getattr(hint, '__name__', hint)}, got {value!r}")


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> dict[str, Any]:
    """'train.learning_rate=1e-4' -> {'train': {'learning_rate': 1e-4}}"""
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected SECTION.FIELD=VALUE, e.g. train.epochs=3")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    nested: dict[str, Any] = value
    for part in reversed(key.strip().split(".")):
        nested = {part: nested}
    return nested


def read_yaml(path: Path) -> dict[str, Any]:
    if not Path(path).is_file():
        raise UserError(f"{path}: config file not found")
    try:
        loaded = yaml.safe_load(read_text(path))
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML: {error}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: expected a mapping of settings at the top level")
    return loaded


def preset_path(name: str) -> Path | None:
    """The YAML preset shipped for a built-in model or a named preset, if there is one."""
    candidate = resources.files("promptdistill") / "configs" / f"{name}.yaml"
    return Path(str(candidate)) if candidate.is_file() else None


def preset_names() -> list[str]:
    folder = resources.files("promptdistill") / "configs"
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def resolve_config(
    config_file: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    preset: str | None = None,
    defaults: dict[str, Any] | None = None,
) -> RunConfig:
    """Resolve the configuration of a run (see the module docstring for the order); `defaults`
    sit above the model's preset and below the rest (the methods of a run without test questions)."""
    named: dict[str, Any] = {}
    if preset is not None:
        path = preset_path(preset)
        if path is None:
            raise UserError(f"--preset {preset}: no such preset; choose from {', '.join(preset_names())}")
        named = read_yaml(path)
    user: dict[str, Any] = read_yaml(config_file) if config_file else {}
    for text in overrides:
        user = _merge(user, parse_override(text))
    model_name = user.get("model", {}).get("name") or named.get("model", {}).get("name") or ModelConfig.name
    model_preset = preset_path(str(model_name))
    values = read_yaml(model_preset) if model_preset is not None else {}
    values = _merge(_merge(_merge(values, defaults or {}), named), user)
    return _build(RunConfig, values, "")


def load_run_config(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read back the resolved config.yaml of a run directory, with --set overrides on top.

    A setting that promptdistill gained after the run was made is missing from the file; it takes
    the model preset's value, as at resolution, before the dataclass default.
    """
    values = read_yaml(path)
    model_preset = preset_path(str(values.get("model", {}).get("name") or ModelConfig.name))
    if model_preset is not None:
        values = _merge(read_yaml(model_preset), values)
    for text in overrides:
        values = _merge(values, parse_override(text))
    return _build(RunConfig, values, "")
