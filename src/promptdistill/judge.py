"""An LLM judge of answers, as in the paper, and its agreement with containment grading.

The judge sees the question, the accepted answers and the proposed answer, reasons briefly and
ends with "Verdict: correct" or "Verdict: incorrect" alone on its last line. Only that last
line is read, and only an exact verdict line counts: anything else is unparseable (None), never
quietly a pass or a fail, and words such as "correct" in the reasoning (or in a proposed answer
the judge quotes) cannot decide the verdict.

The judge runs on any generation Backend: a local model (TransformersBackend) or an
OpenAI-compatible chat-completions server (OpenAIJudgeBackend, standard library only).
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from promptdistill.errors import UserError
from promptdistill.generation import Backend, Sampling, generate_all
from promptdistill.models import chat_prompt
from promptdistill.rundir import PartialFile

# "Verdict: correct", any case, optionally in markdown bold (around the line, the label or the
# word) and with a final period.
_VERDICT_LINE = re.compile(
    r"(?:\*\*)?\s*verdict\s*:\s*(?:\*\*)?\s*(correct|incorrect)\s*(?:\*\*)?\s*\.?\s*(?:\*\*)?",
    re.IGNORECASE,
)


def judge_prompt(question: str, answers: list[str], proposed: str) -> str:
    """The judge's user turn for one proposed answer."""
    accepted = "\n".join(f"- {answer}" for answer in answers)
    return (
        "Decide whether a proposed answer to a question is correct. It is correct if it states "
        "the same fact as one of the accepted answers, in any wording; it is incorrect if it "
        "states a different fact, contradicts them, or does not answer.\n\n"
        f"Question: {question}\n\n"
        f"Accepted answers:\n{accepted}\n\n"
        f"Proposed answer: {proposed}\n\n"
        "Reason in one or two sentences, then write your verdict alone on the last line, "
        'exactly "Verdict: correct" or "Verdict: incorrect".'
    )


def parse_verdict(text: str) -> bool | None:
    """True or False from the last non-empty line's verdict; None if that line is not one."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    match = _VERDICT_LINE.fullmatch(lines[-1])
    if match is None:
        return None
    return match.group(1).lower() == "correct"


def judge_all(
    backend: Backend, tokenizer, records: list[dict], max_new_tokens: int = 256,
    batch_size: int = 8, partial: PartialFile | None = None,
) -> list[bool | None]:
    """Greedy verdicts on records with "question", "answers" and "reply" (evaluate.grade_all's).

    `tokenizer` is the judge model's, whose chat template wraps each prompt; pass None for a
    backend that applies the template itself (OpenAIJudgeBackend). A reply cut off by
    `max_new_tokens` before its verdict line is unparseable.
    """
    texts = [judge_prompt(r["question"], r["answers"], r["reply"]) for r in records]
    prompts = texts if tokenizer is None else [chat_prompt(tokenizer, text) for text in texts]
    replies = generate_all(backend, prompts, Sampling(0.0, max_new_tokens), seed=0,
                           batch_size=batch_size, partial=partial, description="judging")
    return [parse_verdict(reply) for reply in replies]


class OpenAIJudgeBackend:
    """A Backend over an OpenAI-compatible /chat/completions endpoint (OpenAI, vLLM, llama.cpp).

    Each prompt is sent as one user message; the server applies the chat template. The API key
    is read from the environment variable named `api_key_env` (None: send no key, as for a local
    server started without one) and is kept out of repr and of error messages.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY",
                 timeout: float = 120.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout = timeout
        self._api_key: str | None = None
        if api_key_env is not None:
            self._api_key = os.environ.get(api_key_env)
            if not self._api_key:
                raise UserError(f"judge: environment variable {api_key_env} (the API key) is not set")

    def __repr__(self) -> str:
        return f"OpenAIJudgeBackend(url={self.url!r}, model={self.model!r})"

    def count_tokens(self, text: str) -> int:
        """Words, not tokens: the server's tokenizer is unknown, and generate_all only sorts by it."""
        return len(text.split())

    def generate_batch(self, prompts: list[str], sampling: Sampling, seed: int) -> list[str]:
        # One request per prompt, sent together: the batch size bounds the concurrent requests.
        with ThreadPoolExecutor(max_workers=max(1, len(prompts))) as pool:
            return list(pool.map(lambda prompt: self._complete(prompt, sampling, seed), prompts))

    def _complete(self, prompt: str, sampling: Sampling, seed: int) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_new_tokens,
            "seed": seed,
        }
        request = urllib.request.Request(
            self.url, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", **self._auth_header()},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.load(response)
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            raise RuntimeError(self._redact(f"judge server {self.url}: HTTP {error.code}: {detail}")) from None
        except (urllib.error.URLError, TimeoutError) as error:
            reason = getattr(error, "reason", error)
            raise RuntimeError(self._redact(f"judge server {self.url}: {reason}")) from None
        except json.JSONDecodeError:
            raise RuntimeError(f"judge server {self.url}: the reply is not JSON") from None
        try:
            return (reply["choices"][0]["message"]["content"] or "").strip()
        except (KeyError, IndexError, TypeError):
            raise RuntimeError(f"judge server {self.url}: unexpected reply {str(reply)[:500]}") from None

    def _auth_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _redact(self, message: str) -> str:
        """A server may echo the key back in an error; it goes no further."""
        return message.replace(self._api_key, "***") if self._api_key else message


def agreement(judge_verdicts: list[bool | None], contains_grades: list[float | bool]) -> dict:
    """How often the judge and containment grading agree, counting only parseable verdicts.

    judge_only: the judge accepts what containment rejects (a paraphrase, or a lenient judge);
    contains_only: containment accepts what the judge rejects (say, the answer among others).
    """
    if len(judge_verdicts) != len(contains_grades):
        raise ValueError(f"{len(judge_verdicts)} verdicts but {len(contains_grades)} grades")
    pairs = [(verdict, bool(grade)) for verdict, grade in zip(judge_verdicts, contains_grades)
             if verdict is not None]
    counts = {
        "both_true": sum(v and g for v, g in pairs),
        "both_false": sum(not v and not g for v, g in pairs),
        "judge_only": sum(v and not g for v, g in pairs),
        "contains_only": sum(not v and g for v, g in pairs),
    }
    parseable = len(pairs)
    return {
        **counts,
        "disagreements": counts["judge_only"] + counts["contains_only"],
        "unparseable": len(judge_verdicts) - parseable,
        "parseable": parseable,
        "agreement": (counts["both_true"] + counts["both_false"]) / parseable if parseable else None,
    }
