"""The renderer writes each Llama Guard generation's prompt byte for byte as its
official chat template does (fixtures transcribed with their sources in
tests/fixtures/llama_guard/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from guard.conversation import Role, Turn
from guard.prompt import PromptFormat, render_prompt
from guard.taxonomy import (
    LLAMA_GUARD_1,
    LLAMA_GUARD_2,
    LLAMA_GUARD_3,
    LLAMA_GUARD_3_1B,
    LLAMA_GUARD_4,
    Policy,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "llama_guard"
CONVERSATION = (
    Turn(Role.USER, "How do I bake bread?"),
    Turn(Role.AGENT, "Mix flour, water, yeast and salt, then knead and bake."),
)

#: family fixture, format, policy, text the official render has before ours (BOS),
#: text ours has after the official render (the blank line after the assistant header).
CASES = [
    ("lg1", PromptFormat.LG1, LLAMA_GUARD_1, "", ""),
    ("lg2", PromptFormat.LG2, LLAMA_GUARD_2, "", ""),
    ("lg3_8b", PromptFormat.LG3, LLAMA_GUARD_3, " <|begin_of_text|>", "\n\n"),
    ("lg3_1b", PromptFormat.LG3_1B, LLAMA_GUARD_3_1B, "<|begin_of_text|>", "\n\n"),
    ("lg4", PromptFormat.LG4, LLAMA_GUARD_4, "<|begin_of_text|>", "\n\n"),
]


@pytest.mark.parametrize(("family", "fmt", "policy", "bos", "blank"), CASES)
@pytest.mark.parametrize("side", [Role.USER, Role.AGENT])
def test_the_prompt_is_the_official_one(
    family: str, fmt: PromptFormat, policy: Policy, bos: str, blank: str, side: Role
) -> None:
    official = (FIXTURES / f"{family}_example_{side.value}.txt").read_text(encoding="utf-8")
    turns = CONVERSATION[:1] if side is Role.USER else CONVERSATION
    ours = render_prompt(turns, side, policy, fmt)
    assert official.startswith(bos)
    assert bos + ours == official + blank


def test_every_format_has_a_fixture() -> None:
    assert {fmt for _, fmt, *_ in CASES} == set(PromptFormat)


def test_llama_guard_3_names_its_categories_as_its_template_does() -> None:
    """Not the MLCommons names ("Sex-Related Crimes", "Child Sexual Exploitation",
    "Suicide & Self-Harm"), which the model was not prompted with."""
    names = {c.code: c.name for c in LLAMA_GUARD_3.categories}
    assert (names["S3"], names["S4"], names["S11"]) == (
        "Sex Crimes",
        "Child Exploitation",
        "Self-Harm",
    )
    assert LLAMA_GUARD_3_1B.codes == LLAMA_GUARD_3.codes[:13]
