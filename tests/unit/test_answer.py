import pytest

from guard.answer import AnswerParseError, parse_answer

CODES = {"O1", "O2", "O3"}


@pytest.mark.parametrize(
    ("text", "unsafe", "codes"),
    [
        ("safe", False, ()),
        ("  safe \n\n", False, ()),
        ("unsafe\nO3", True, ("O3",)),
        (" unsafe \n O1 , O3 \n", True, ("O1", "O3")),
        ("\n\nunsafe\r\nO2", True, ("O2",)),
    ],
)
def test_valid_answers(text: str, unsafe: bool, codes: tuple[str, ...]) -> None:
    got = parse_answer(text, CODES)
    assert (got.unsafe, got.codes) == (unsafe, codes)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "Safe",
        "SAFE",
        "safe.",
        "yes",
        "unsafe",
        "unsafe\n",
        "unsafe\nO9",
        "unsafe\nO1,,O2",
        "unsafe\nO1,O1",
        "safe\nO1",
        "unsafe\nO1\nextra",
        "unsafeunsafe",
        "I cannot help with that",
        "unsafe\nviolence",
    ],
)
def test_garbage_is_a_parse_error_never_safe(text: str) -> None:
    with pytest.raises(AnswerParseError):
        parse_answer(text, CODES)
