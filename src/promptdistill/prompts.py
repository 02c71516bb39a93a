"""The user turns of every role, in one place so that training and evaluation agree.

The teacher's turn is the passage (and an instruction) followed by exactly the student's turn: the
two sequences differ only by that prefix, and the answer tokens after them are the same.
"""

from __future__ import annotations


def question_writing_prompt(passage: str) -> str:
    """The expert writes one question per sample; many samples give many questions.

    Measured on the built-in model (docs/sampling.md): this plain request gave 36 of 40 usable
    questions at T=0.7, a longer instruction ("name the subject in full...") 13 of 40.
    """
    return f"{passage}\n\nWrite a question about the text above."


QUESTIONS_PER_TAGGED_REPLY = 5


def tagged_question_writing_prompt(passage: str) -> str:
    """The official code's style of request: several hard, self-contained trivia questions per
    reply, each in <question> tags (our wording; synth.question_style=tagged)."""
    return (
        f"Read this paragraph:\n{passage}\n\n"
        f"Write {QUESTIONS_PER_TAGGED_REPLY} difficult trivia questions about the facts in it. Whoever answers "
        "will not see the paragraph, so every question must make sense on its own: name the people, places "
        "and things it asks about. No multiple choice. Reply with the questions only, each on its own line "
        "inside tags, like this:\n"
        "<question>In which year did the Eiffel Tower open?</question>\n"
        "<question>Which river flows through Vienna?</question>"
    )


def student_prompt(question: str) -> str:
    """Closed-book: the question alone, in training and at test time."""
    return question


def teacher_context(passage: str, instruction: str = "") -> str:
    """What the teacher reads before the student's turn: the passage, then `instruction`
    (synth.teacher_instruction) if any."""
    return f"{passage}\n\n{instruction}" if instruction else passage


def teacher_prompt(passage: str, question: str, instruction: str = "") -> str:
    """Open-book: the passage (and the instruction), then the student's turn unchanged.

    On the demo's test questions the built-in model answered 68% correctly with the passage and
    question alone, and 90% with "Answer the question below from the text above." between them
    (docs/quality.md).
    """
    return f"{teacher_context(passage, instruction)}\n\n{student_prompt(question)}"


def rewriting_prompt(passage: str, question: str) -> str:
    """Make a test question stand alone ("How old was he?" -> names him), as the paper did
    before grading closed-book."""
    return (f"{passage}\n\nRewrite this question about the text above so that it can be understood "
            f"without the text: name the people, places and things it refers to. "
            f"Reply with the question only.\nQuestion: {question}")
