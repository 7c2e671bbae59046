"""Final-answer extraction from free text: a multiple-choice letter, a number, or a short answer.

Used to grade experts when profiling on labelled questions, and to count votes. Each
extractor returns the normalised answer, or None when the text commits to none.

Every pattern here reads text a client or a model controls, on the request's event loop, so each
is linear: no two quantifiers can match the same characters. Runs of ``\\s*`` side by side around
optional words, a line start's ``\\s*`` that crossed newlines and ``<think>.*?</think>`` over
unclosed tags made the regex engine rescan the text from every start: seconds to minutes on a few
KB of spaces, newlines or tags, with the event loop blocked (issue 27). The amount read is bounded too:

- the extractors read the last ``MAX_EXTRACT_CHARS`` of an answer once its reasoning traces are
  stripped (the strip itself is a linear scan of the whole text): a final answer is stated at
  the end. ``extract_text`` is the exception: it compares whole answers, and cutting them would
  make two long answers that differ early agree; its work is a linear normalisation.
- ``infer_answer_kind`` looks for lettered options in the first and the last
  ``OPTION_WINDOW_CHARS`` of the question (all of it up to twice that): the options follow the
  question's stem, which may follow a long passage or earlier turns of the conversation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType

from experts.types import AnswerKind

MAX_EXTRACT_CHARS = 16_000  # ~4k tokens of an answer's end: all of a normal answer, with its reasoning stripped
OPTION_WINDOW_CHARS = 16_000  # of a question's start and of its end, searched for lettered options

_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s")
# "answer is (C)", "Answer: C", "option **D**": the keyword in any case, the letter upper-case only,
# so "the answer is a fraction" does not read as option A. Each run of spaces belongs to the word before it.
_CHOICE_STATED = re.compile(r"(?i:answer|option|choice)\s*(?:(?i:is|:)\s*)?(?:\*\*\s*)?[\(\[]?([A-J])(?![A-Za-z])")
_CHOICE_PAREN = re.compile(r"\(([A-J])\)")
_CHOICE_ALONE = re.compile(r"(?<![A-Za-z'])([A-J])(?![A-Za-z'])")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
# what follows "answer:", from its first non-space: "\s*(.+)" let both runs take the same spaces; on the stripped
# texts read here the two are the same
_ANSWER_LINE = re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*(\S.*)", re.IGNORECASE)


def strip_reasoning(text: str) -> str:
    """Drop ``<think>...</think>`` traces: only the committed answer counts.

    A scan for each opening tag and the first closing tag after it, as ``<think>.*?</think>`` matched, but
    linear: that pattern rescanned the rest of the text from every unclosed ``<think>``. An unclosed trace
    is kept, as it was.
    """
    kept: list[str] = []
    position = 0
    while (opened := _THINK_OPEN.search(text, position)) is not None:
        closed = _THINK_CLOSE.search(text, opened.end())
        if closed is None:  # no closing tag after this one, so none after any later one either
            break
        kept.append(text[position : opened.start()])
        position = closed.end()
    kept.append(text[position:])
    return "".join(kept).strip()


def answer_tail(text: str) -> str:
    """The last ``MAX_EXTRACT_CHARS`` of ``text``, cut at a space: half a word or number must not read as one."""
    start = len(text) - MAX_EXTRACT_CHARS
    if start <= 0:
        return text
    if not text[start - 1].isspace():
        space = _WHITESPACE.search(text, start)
        start = space.start() if space is not None else start
    return text[start:]


def committed_answer(text: str) -> str:
    """What the extractors read: the answer without its reasoning traces, its last ``MAX_EXTRACT_CHARS``."""
    return answer_tail(strip_reasoning(text))


def extract_choice(text: str, letters: str = "ABCDEFGHIJ") -> str | None:
    """'the answer is (C)' -> 'C'; a letter inside a word never counts."""
    text = committed_answer(text)
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
    text = committed_answer(text)
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
    text = committed_answer(text)
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


# a line that starts with an option's letter: "(A) shark", "B. whale"; only spaces within the line before it
_OPTION_LINE = re.compile(r"(?m)^[^\S\n]*\(?([A-J])[\).:]\s+\S")
# a digit inside \boxed{...} (the run before it holds no digit, so it cannot give one back), or after "answer is"
_STATED_NUMBER = re.compile(r"\\boxed\{[^{}\d]*\d|(?:final answer|answer)\s*(?:is|:)\s*\$?-?\d", re.IGNORECASE)
_STATED_LINE = re.compile(r"(?:final answer|answer)\s*(?:is|:)", re.IGNORECASE)


def infer_answer_kind(question: str, answers: list[str]) -> AnswerKind:
    """How to read the answers when the pool says ``answer_kind: auto``.

    ``choice`` when the question lists lettered options (A), (B)...; ``number`` when every
    answer states a number (boxed, or after "answer is"); ``exact`` when every answer has an
    "Answer:" line; otherwise ``text`` (whole answers compared).
    """
    letters = option_letters(question)
    if "A" in letters and "B" in letters:
        return AnswerKind.CHOICE
    committed = [committed_answer(answer) for answer in answers]
    if committed and all(_STATED_NUMBER.search(answer) for answer in committed):
        return AnswerKind.NUMBER
    if committed and all(_STATED_LINE.search(answer) for answer in committed):
        return AnswerKind.EXACT
    return AnswerKind.TEXT


def option_letters(question: str) -> list[str]:
    """The letters of the options listed in the first and last ``OPTION_WINDOW_CHARS`` of ``question``.

    Searched in place (``pos``/``endpos``), so a window that starts mid-line never makes that point a line start.
    """
    if len(question) <= 2 * OPTION_WINDOW_CHARS:
        windows = [(0, len(question))]
    else:
        windows = [(0, OPTION_WINDOW_CHARS), (len(question) - OPTION_WINDOW_CHARS, len(question))]
    letters: list[str] = []
    for start, end in windows:
        letters += [match.group(1) for match in _OPTION_LINE.finditer(question, start, end)]
        letters += _CHOICE_PAREN.findall(question, start, end)
    return letters


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
