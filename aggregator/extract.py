"""Final-answer extraction from free text: a multiple-choice letter, a number, or a short answer.

Used to grade experts when profiling on labelled questions, and to count votes. Each
extractor returns the normalised answer, or None when the text commits to none.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType

from experts.types import AnswerKind

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
# "answer is (C)", "Answer: C", "option **D**": the keyword in any case, the letter upper-case only,
# so "the answer is a fraction" does not read as option A
_CHOICE_STATED = re.compile(r"(?i:answer|option|choice)\s*(?i:is|:)?\s*(?:\*\*)?\s*[\(\[]?([A-J])(?![A-Za-z])")
_CHOICE_PAREN = re.compile(r"\(([A-J])\)")
_CHOICE_ALONE = re.compile(r"(?<![A-Za-z'])([A-J])(?![A-Za-z'])")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
_ANSWER_LINE = re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*(.+)", re.IGNORECASE)


def strip_reasoning(text: str) -> str:
    """Drop ``<think>...</think>`` traces: only the committed answer counts."""
    return _THINK.sub("", text).strip()


def extract_choice(text: str, letters: str = "ABCDEFGHIJ") -> str | None:
    """'the answer is (C)' -> 'C'; a letter inside a word never counts."""
    text = strip_reasoning(text)
    for pattern in (_CHOICE_STATED, _CHOICE_PAREN):
        found = [m for m in pattern.findall(text) if m in letters]
        if found:
            return found[-1]
    alone = [m for m in _CHOICE_ALONE.findall(text) if m in letters and m != "I"]  # 'I' is usually the pronoun
    return alone[-1] if alone else None


def extract_number(text: str) -> str | None:
    """The boxed number, else the first number after 'answer is/:', else the last number.

    '1,234.50' -> '1234.5'; '3/4' stays a fraction.
    """
    text = strip_reasoning(text)
    boxed = _BOXED.findall(text)
    if boxed and _NUMBER.findall(boxed[-1]):
        return normalise_number(_NUMBER.findall(boxed[-1])[-1])
    stated = _ANSWER_LINE.findall(text)
    if stated and _NUMBER.findall(stated[-1]):
        return normalise_number(_NUMBER.findall(stated[-1])[0])
    numbers = _NUMBER.findall(text)
    return normalise_number(numbers[-1]) if numbers else None


def normalise_number(value: str) -> str:
    value = value.replace(",", "").strip()
    if "/" in value:
        return value
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() else repr(number)


def extract_exact(text: str) -> str | None:
    """The text after 'answer:' (or the last non-empty line), lower-cased, without punctuation at the ends."""
    text = strip_reasoning(text)
    stated = _ANSWER_LINE.findall(text)
    line = stated[-1] if stated else next((ln for ln in reversed(text.splitlines()) if ln.strip()), "")
    normalised = normalise_text(line)
    return normalised or None


def normalise_text(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().strip(".!?;:,\"'*`").lower())


def extract_text(text: str) -> str | None:
    """The whole committed answer, normalised: two free-text answers agree only when they say the same."""
    normalised = normalise_text(strip_reasoning(text))
    return normalised or None


Extractor = Callable[[str], "str | None"]

EXTRACTORS: Mapping[AnswerKind, Extractor] = MappingProxyType(
    {
        AnswerKind.CHOICE: extract_choice,
        AnswerKind.NUMBER: extract_number,
        AnswerKind.EXACT: extract_exact,
        AnswerKind.TEXT: extract_text,
    }
)


_OPTION_LINE = re.compile(r"(?m)^\s*\(?([A-J])[\).:]\s+\S")
_STATED_NUMBER = re.compile(r"\\boxed\{[^{}]*\d|(?:final answer|answer)\s*(?:is|:)\s*\$?-?\d", re.IGNORECASE)
_STATED_LINE = re.compile(r"(?:final answer|answer)\s*(?:is|:)", re.IGNORECASE)


def infer_answer_kind(question: str, answers: list[str]) -> AnswerKind:
    """How to read the answers when the pool says ``answer_kind: auto``.

    ``choice`` when the question lists lettered options (A), (B)...; ``number`` when every
    answer states a number (boxed, or after "answer is"); ``exact`` when every answer has an
    "Answer:" line; otherwise ``text`` (whole answers compared).
    """
    letters = [m.group(1) for m in _OPTION_LINE.finditer(question)] + _CHOICE_PAREN.findall(question)
    if "A" in letters and "B" in letters:
        return AnswerKind.CHOICE
    committed = [strip_reasoning(answer) for answer in answers]
    if committed and all(_STATED_NUMBER.search(answer) for answer in committed):
        return AnswerKind.NUMBER
    if committed and all(_STATED_LINE.search(answer) for answer in committed):
        return AnswerKind.EXACT
    return AnswerKind.TEXT


MAX_SENTENCE_WORDS = 12  # a final line this short that states the gold answer as whole words counts


def is_correct(kind: AnswerKind | str, prediction: str | None, gold: str) -> bool:
    """Exact after normalisation; for short answers also "The capital is Paris." when the gold is "Paris"."""
    if prediction is None:
        return False
    if kind == "choice":
        return prediction == gold.strip().upper()
    if kind == "number":
        return prediction == normalise_number(gold)
    if kind not in ("exact", "text"):
        return prediction == gold.strip()
    target = normalise_text(gold)
    if prediction == target:
        return True
    words = re.sub(r"[^\w\s]", " ", prediction).split()
    wanted = re.sub(r"[^\w\s]", " ", target).split()
    if not wanted or len(words) > MAX_SENTENCE_WORDS:
        return False
    return any(words[i : i + len(wanted)] == wanted for i in range(len(words) - len(wanted) + 1))
