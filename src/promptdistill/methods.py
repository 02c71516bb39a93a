"""The methods a run compares, each declared once.

A method says what it trains (nothing, the passages, or the expert's answers with cross-entropy
or with distillation), which adapter it answers with, and what context its test prompts carry
(none: closed-book; retrieved passages; the gold document). Config validation, the stages and
the report all read this table. A new method is one entry here (and, if it trains in a new way,
its loss in train/loop.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from promptdistill.errors import check_choice


class Training(Enum):
    """What a method's adapter learns from."""

    PASSAGES = "passages"  # next-token cross-entropy on the passages themselves
    ANSWERS_CE = "answers, cross-entropy"  # the expert's answers as targets
    ANSWERS_DISTILL = "answers, distillation"  # the teacher's distributions over the expert's answers


class Context(Enum):
    """What the test prompt carries before the question."""

    NONE = "none"  # closed-book
    RETRIEVED = "retrieved"  # the top-k retrieved passages
    GOLD = "gold"  # every passage of the question's document


# The train.* settings every training reads; each kind of training adds its own below.
COMMON_TRAIN_SETTINGS = (
    "train.learning_rate", "train.batch_size", "train.gradient_accumulation_steps", "train.warmup_ratio",
    "train.weight_decay", "train.max_grad_norm", "train.lora_rank", "train.lora_alpha", "train.lora_dropout",
    "train.lora_output_layer", "train.loss_reduction", "train.mixed_precision",
)
# The settings each train.replay reads; off, none, so that runs from before replay existed keep their keys.
_REPLAY = ("train.replay", "train.replay_weight", "train.replay_ratio")
REPLAY_SETTINGS = {"none": (), "self": _REPLAY, "open-book": (*_REPLAY, "synth.teacher_instruction")}
TRAINING_SETTINGS = {
    Training.PASSAGES: ("train.uft_epochs",),
    Training.ANSWERS_CE: ("train.epochs", "train.questions_per_passage"),
    Training.ANSWERS_DISTILL: ("train.epochs", "train.questions_per_passage", "train.distill_temperature",
                               "train.divergence",
                               "train.jsd_beta", "train.teacher", "train.distill_ce_weight",
                               "train.hidden_state_weight", "train.on_policy_share", "train.on_policy_temperature",
                               "train.on_policy_max_tokens", "train.on_policy_ahead", "train.on_policy_mix",
                               "train.online_top_k", "train.online_support",
                               "synth.teacher_instruction"),  # the online teacher's prompt
}


# The settings a method's test prompts read beyond the question: a passage goes in the teacher's prompt.
CONTEXT_SETTINGS = {
    Context.NONE: (),
    Context.RETRIEVED: ("synth.teacher_instruction", "eval.retriever", "eval.rag_k"),  # eval.dense_model if dense
    Context.GOLD: ("synth.teacher_instruction",),
}


@dataclass(frozen=True)
class Method:
    name: str
    note: str  # the report's description of the row
    training: Training | None = None  # None: answers with the base model or another method's adapter
    adapter_of: str | None = None  # answers with this method's adapter (pd+rag: pd's)
    context: Context = Context.NONE
    aliases: tuple[str, ...] = ()
    answer_temperature: str = ""  # the setting that holds its training answers' sampling temperature
    answers_per_question: str = ""  # the setting that holds how many training answers it samples per question
    answer_seed_offset: int = 0  # methods trained on answers sample them independently of each other

    @property
    def adapter(self) -> str | None:
        """The trained adapter this method answers with, if any."""
        return self.name if self.training else self.adapter_of

    @property
    def trains_on_answers(self) -> bool:
        return self.training in (Training.ANSWERS_CE, Training.ANSWERS_DISTILL)

    @property
    def distills(self) -> bool:
        return self.training is Training.ANSWERS_DISTILL

    @property
    def epochs_setting(self) -> str:
        """The setting that says how many epochs this method trains (uft has its own)."""
        return "train.uft_epochs" if self.training is Training.PASSAGES else "train.epochs"

    def train_settings(self) -> tuple[str, ...]:
        return COMMON_TRAIN_SETTINGS + TRAINING_SETTINGS[self.training] if self.training else ()


_ALL = (
    Method("base", "the model closed-book, no training"),
    Method("uft", "closed-book after next-token training on the passages", training=Training.PASSAGES),
    Method("sft", "closed-book after cross-entropy on the expert's answers", training=Training.ANSWERS_CE,
           answer_temperature="synth.sft_answer_temperature", answers_per_question="synth.sft_answers_per_question",
           answer_seed_offset=2),
    Method("pd", "closed-book after prompt distillation", training=Training.ANSWERS_DISTILL,
           answer_temperature="synth.pd_answer_temperature", answers_per_question="synth.pd_answers_per_question",
           answer_seed_offset=1),
    Method("rag", "the base model with retrieved passages", context=Context.RETRIEVED),
    Method("pd+rag", "the pd student with retrieved passages", adapter_of="pd", context=Context.RETRIEVED),
    Method("open-book", "the teacher, passage in prompt: the ceiling", context=Context.GOLD,
           aliases=("oracle",)),  # the paper's name for the base model with the gold passage
)
METHODS: dict[str, Method] = {method.name: method for method in _ALL}  # the report's rows, in order
# A run without test questions trains what its user came for, and the self-check's frame beside it:
# the base model (what was there before) and open-book (the teacher's own reading).
WITHOUT_TEST_QUESTIONS = ("base", "pd", "open-book")
_ALIASES = {alias: method.name for method in _ALL for alias in method.aliases}


def replay_for(method: Method, replay: str) -> str:
    """The replay `method` trains with under train.replay: open-book replays a method's own answers,
    so that uft (no answers) trains without."""
    return "none" if replay == "open-book" and not method.trains_on_answers else replay


def canonical_name(name: str, option: str = "methods") -> str:
    """A method's name, with aliases resolved; an unknown name is a UserError naming `option`."""
    name = _ALIASES.get(name, name)
    check_choice(option, name, [*METHODS, *_ALIASES])
    return name


def trained(names: list[str]) -> list[Method]:
    """The methods whose adapters `names` answer with, in training order (uft, sft, pd)."""
    needed = {METHODS[name].adapter for name in names}
    return [method for method in METHODS.values() if method.training and method.name in needed]
