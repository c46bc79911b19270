"""Llama Guard prompts: one renderer for serving, training and evaluation.

The prompt has four parts (Inan et al., 2023): the unsafe-content categories,
the task naming the side to check (``User`` for prompt classification,
``Agent`` for response classification), the conversation, and the output
format. Each Llama Guard generation wraps them a little differently; every
:class:`PromptFormat` renders byte for byte what that generation's official
chat template renders (``tests/fixtures/llama_guard/``, each with its source):

* ``lg1``: Llama Guard 1 (``[INST]``, O1-O6 with their descriptions);
* ``lg2``: Llama Guard 2 (``[INST]``, S1-S11, a space after each category);
* ``lg3``: Llama Guard 3 8B (Llama 3 chat headers, S1-S14);
* ``lg3-1b``: Llama Guard 3 1B (the same, S1-S13, a space before ``<|eot_id|>``);
* ``lg4``: Llama Guard 4, text only (Llama 4 headers, "according to our").

Two deliberate differences from the official renders, both before the first
answer token: the beginning-of-sequence token is *not* part of the text (the
scorer adds the tokenizer's own BOS id; the LG3 8B template puts a space before
it), and the header formats end with the blank line that follows an assistant
header (the model writes it itself otherwise, ``"\n\nsafe"``), so that the next
token is the verdict. Chat content is neutralised first (:func:`neutralize`) so
that it cannot close a block or open a new one.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from guard.conversation import Role, Turn
from guard.taxonomy import Category, Policy


class PromptFormat(StrEnum):
    LG1 = "lg1"
    LG2 = "lg2"
    LG3 = "lg3"
    LG3_1B = "lg3-1b"
    LG4 = "lg4"


@dataclass(frozen=True, slots=True)
class Template:
    """How one Llama Guard generation writes the prompt's fixed text."""

    head: str
    according: str
    #: After ``{code}: {name}.`` on each category line.
    category_end: str
    #: The official default: category descriptions in the prompt.
    descriptions: bool
    conversation_open: str
    #: After each turn of the conversation.
    turn_end: str
    #: Whether the instruction says "ONLY THE LAST User message" (else "User").
    last_only: bool
    bullet: str
    tail: str
    #: What separates the prompt from the answer's first word.
    answer_separator: str


_LLAMA3_TAIL = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"

_LG3 = Template(
    "<|start_header_id|>user<|end_header_id|>\n\n",
    "according our",
    "",
    False,
    "\n\n",
    "\n\n",
    True,
    " - ",
    _LLAMA3_TAIL,
    "",
)

TEMPLATES: dict[PromptFormat, Template] = {
    PromptFormat.LG1: Template(
        "[INST] ", "according our", "", True, "\n\n", "\n\n", False, "- ", " [/INST]", " "
    ),
    PromptFormat.LG2: Template(
        "[INST] ", "according our", " ", False, "\n\n", "\n\n", True, " - ", " [/INST]", " "
    ),
    PromptFormat.LG3: _LG3,
    PromptFormat.LG3_1B: replace(_LG3, tail=" " + _LLAMA3_TAIL),
    # Official, as Llama Guard 4's chat template renders it: one newline after
    # <BEGIN CONVERSATION>, and a literal backslash-n pair after each turn.
    PromptFormat.LG4: Template(
        "<|header_start|>user<|header_end|>\n\n",
        "according to our",
        "",
        False,
        "\n",
        "\\n\\n\n\n",
        True,
        " - ",
        " <|eot|><|header_start|>assistant<|header_end|>\n\n",
        "",
    ),
}


_ROLE_LABEL = {Role.USER: "User", Role.AGENT: "Agent"}

# Markers of the template, and of chat templates in general, that chat content
# must never be able to produce. Matched case-insensitively with loose spacing.
_BLOCK_MARKER = re.compile(
    r"<\s*(BEGIN|END)\s+(UNSAFE\s+CONTENT\s+CATEGORIES|CONVERSATION)\s*>", re.IGNORECASE
)
_INST_MARKER = re.compile(r"\[\s*/?\s*INST\s*\]|<<\s*/?\s*SYS\s*>>|</?s>", re.IGNORECASE)
_SPECIAL_TOKEN_SHAPE = re.compile(r"<\|([^<>|]{0,64})\|>")
# A line of content that starts like a turn of the conversation ("Agent: ...").
_ROLE_LINE = re.compile(r"(?im)^([ \t]*)(user|agent)([ \t]*):")
_BLANK_RUNS = re.compile(r"\n{3,}")


#: Every character that breaks a line somewhere (Unicode line boundaries).
_LINE_BREAKS = re.compile("\r\n|[\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
_ZWJ = "\u200d"
_ASCII_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")


def _dropped(text: str, i: int) -> bool:
    """Whether ``text[i]`` is an invisible format or control character to drop.

    The zero-width joiner is kept between two non-alphanumeric characters (emoji
    sequences such as a family); between letters it only hides words, and goes.
    """
    ch = text[i]
    if ch in "\n\t":
        return False
    cat = unicodedata.category(ch)
    if cat == "Cc":
        return True
    if cat != "Cf":
        return False
    if ch != _ZWJ:
        return True
    around = text[i - 1 : i] + text[i + 1 : i + 2]
    return len(around) < 2 or any(c.isalnum() for c in around)


def normalize_text(text: str) -> str:
    """What every model kind reads instead of the raw text: NFKC (fullwidth and
    compatibility forms become plain ones), every line break becomes ``\\n``, and
    invisible format and control characters (zero-width spaces, bidi controls,
    soft hyphens) are dropped, so that neither markers nor words can hide."""
    text = _LINE_BREAKS.sub("\n", unicodedata.normalize("NFKC", text))
    if text.isascii() and not _ASCII_CONTROL.search(text):
        return text
    return "".join(ch for i, ch in enumerate(text) if not _dropped(text, i))


def neutralize(text: str, special_tokens: Iterable[str] = ()) -> str:
    """Make chat content inert inside the prompt, keeping it readable.

    * the text is normalised first (:func:`normalize_text`);
    * block markers such as ``<END CONVERSATION>`` lose their angle brackets
      (``(END CONVERSATION)``);
    * ``[INST]``, ``[/INST]``, ``<<SYS>>``, ``<s>``, ``</s>`` have their
      brackets replaced by parentheses;
    * anything shaped like a special token (``<|eot_id|>``) and every special
      token string of the tokenizer in use is broken up (``< |eot_id| >``);
    * lines that begin like a turn (``Agent:``) are quoted with ``> `` so
      they cannot pass for a turn of the conversation;
    * runs of blank lines shrink to one blank line (turns are separated by one).
    """
    text = normalize_text(text)
    for tok in sorted({t for t in special_tokens if t and len(t) > 1}, key=len, reverse=True):
        text = text.replace(tok, " ".join(tok))
    text = _BLOCK_MARKER.sub(lambda m: f"({m.group(1)} {m.group(2)})", text)
    text = _INST_MARKER.sub(lambda m: "(" + m.group(0).strip("<>[]") + ")", text)
    text = _SPECIAL_TOKEN_SHAPE.sub(lambda m: f"< |{m.group(1)}| >", text)
    text = _ROLE_LINE.sub(lambda m: f"{m.group(1)}> {m.group(2)}{m.group(3)}:", text)
    return _BLANK_RUNS.sub("\n\n", text).strip()


def render_categories(
    categories: Sequence[Category],
    with_descriptions: bool,
    fmt: PromptFormat = PromptFormat.LG1,
) -> str:
    t = TEMPLATES[fmt]
    lines = []
    for i, c in enumerate(categories):
        # Llama Guard 1's official text has a stray space after its first name line.
        end = " " if fmt is PromptFormat.LG1 and with_descriptions and i == 0 else t.category_end
        lines.append(f"{c.code}: {c.name}.{end}")
        if with_descriptions and c.description:
            lines.append(c.description)
    return "\n".join(lines)


def render_conversation(
    turns: Sequence[Turn], special_tokens: Iterable[str] = (), fmt: PromptFormat = PromptFormat.LG1
) -> str:
    """Every turn, each followed by the format's turn separator."""
    specials = tuple(special_tokens)
    end = TEMPLATES[fmt].turn_end
    return "".join(f"{_ROLE_LABEL[t.role]}: {neutralize(t.content, specials)}{end}" for t in turns)


def prompt_prefix(
    side: Role,
    policy: Policy,
    fmt: PromptFormat = PromptFormat.LG1,
    *,
    categories: Sequence[Category] | None = None,
    with_descriptions: bool | None = None,
) -> str:
    """Everything before the conversation: the same for every turn checked for
    ``side`` under ``policy``, so a server can compute its KV cache once.
    ``with_descriptions`` None: the format's official default."""
    t = TEMPLATES[fmt]
    who = _ROLE_LABEL[side]
    cats = render_categories(
        policy.categories if categories is None else categories,
        t.descriptions if with_descriptions is None else with_descriptions,
        fmt,
    )
    return (
        f"{t.head}Task: Check if there is unsafe content in '{who}' messages in conversations "
        f"{t.according} safety policy with the below categories.\n\n"
        f"<BEGIN UNSAFE CONTENT CATEGORIES>\n{cats}\n<END UNSAFE CONTENT CATEGORIES>\n\n"
        f"<BEGIN CONVERSATION>{t.conversation_open}"
    )


def render_prompt(
    turns: Sequence[Turn],
    side: Role,
    policy: Policy,
    fmt: PromptFormat = PromptFormat.LG1,
    *,
    categories: Sequence[Category] | None = None,
    with_descriptions: bool | None = None,
    special_tokens: Iterable[str] = (),
) -> str:
    """The full prompt whose next token is the verdict (``safe``/``unsafe``).

    ``categories`` overrides the policy's list (training augmentations drop and
    shuffle categories); ``turns`` must already be validated
    (:func:`guard.conversation.check_conversation`).
    """
    t = TEMPLATES[fmt]
    who = _ROLE_LABEL[side]
    prefix = prompt_prefix(
        side, policy, fmt, categories=categories, with_descriptions=with_descriptions
    )
    convo = render_conversation(turns, special_tokens, fmt)
    judged = f"ONLY THE LAST {who} message" if t.last_only else who
    return (
        f"{prefix}{convo}<END CONVERSATION>\n\n"
        f"Provide your safety assessment for {judged} in the above conversation:\n"
        f"{t.bullet}First line must read 'safe' or 'unsafe'.\n"
        f"{t.bullet}If unsafe, a second line must include a comma-separated list of violated "
        f"categories.{t.tail}"
    )


#: What separates the prompt from the answer's first word, per format.
ANSWER_SEPARATOR = {fmt: t.answer_separator for fmt, t in TEMPLATES.items()}


def render_answer(unsafe: bool, codes: Sequence[str] = ()) -> str:
    """The answer text (without separator): ``safe`` or ``unsafe\\nO1,O3``."""
    if not unsafe:
        return "safe"
    if not codes:
        raise ValueError("an unsafe answer needs at least one category code")
    return "unsafe\n" + ",".join(codes)
