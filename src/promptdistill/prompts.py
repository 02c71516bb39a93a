"""The user turns of every role, in one place so that training and evaluation agree.

The teacher's turn is the passage followed by exactly the student's turn: the two sequences
differ only by that prefix, and the answer tokens after them are the same.
"""

from __future__ import annotations


def question_writing_prompt(passage: str) -> str:
    """The expert writes one question per sample; many samples give many questions."""
    return (
        "Read the text and write one question about a fact stated in it. "
        "Name the subject in full. Reply with the question only.\n\n"
        f"Text:\n{passage}"
    )


def student_prompt(question: str) -> str:
    """Closed-book: what the student sees in training and at test time."""
    return f"Answer the question in one short sentence.\nQuestion: {question}"


def teacher_prompt(passage: str, question: str) -> str:
    """Open-book: the passage, then the student's turn unchanged."""
    return f"{passage}\n\n{student_prompt(question)}"
