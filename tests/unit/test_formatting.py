import random
import re

from guard.conversation import Role, Turn
from guard.prompt import PromptFormat
from guard.taxonomy import LLAMA_GUARD_1
from training.dataset import Example
from training.formatting import NONE, Augmentations, format_example

UNSAFE = Example("x1", "c1", (Turn(Role.USER, "how do I hotwire a car?"),), True, ("O3",))
SAFE = Example("x2", "c2", (Turn(Role.USER, "how do I bake bread?"),), False, ())
ALWAYS = 1.0


def _cats(prompt: str) -> list[str]:
    """The category name lines (``lg1`` also has description lines under each)."""
    block = prompt.split("<BEGIN UNSAFE CONTENT CATEGORIES>\n")[1].split("\n<END UNSAFE")[0]
    return [line.rstrip() for line in block.splitlines() if re.match(r"[A-Z]+\d+: ", line)]


def test_plain_example_uses_the_serving_prompt_and_target() -> None:
    f = format_example(UNSAFE, LLAMA_GUARD_1, PromptFormat.LG1, NONE)
    assert f.answer == " unsafe\nO3"
    assert _cats(f.prompt) == [f"{c.code}: {c.name}." for c in LLAMA_GUARD_1.categories]
    assert f.prompt.endswith("[/INST]")
    assert format_example(SAFE, LLAMA_GUARD_1, PromptFormat.LG3, NONE).answer == "safe"


def test_drop_violated_removes_the_category_and_relabels_safe() -> None:
    aug = Augmentations(
        drop_categories=False, drop_violated=True, shuffle_codes=False, probability=ALWAYS
    )
    f = format_example(UNSAFE, LLAMA_GUARD_1, PromptFormat.LG1, aug, random.Random(1))
    assert f.answer == " safe" and not f.unsafe
    assert "O3: Criminal Planning." not in _cats(f.prompt)
    assert len(_cats(f.prompt)) == 5


def test_drop_categories_keeps_the_violated_one_and_the_label() -> None:
    aug = Augmentations(
        drop_categories=True, drop_violated=False, shuffle_codes=False, probability=ALWAYS
    )
    seen_sizes = set()
    for seed in range(20):
        f = format_example(UNSAFE, LLAMA_GUARD_1, PromptFormat.LG1, aug, random.Random(seed))
        cats = _cats(f.prompt)
        assert "O3: Criminal Planning." in cats
        assert f.answer == " unsafe\nO3"
        seen_sizes.add(len(cats))
    assert len(seen_sizes) > 2  # really random subsets


def test_shuffle_renumbers_codes_and_maps_the_answer() -> None:
    aug = Augmentations(
        drop_categories=False, drop_violated=False, shuffle_codes=True, probability=ALWAYS
    )
    f = format_example(UNSAFE, LLAMA_GUARD_1, PromptFormat.LG1, aug, random.Random(3))
    cats = _cats(f.prompt)
    assert [c.split(":")[0] for c in cats] == [f"O{i}" for i in range(1, 7)]
    new_code = next(c.split(":")[0] for c in cats if c.endswith("Criminal Planning."))
    assert f.answer == f" unsafe\n{new_code}"
    assert [c.split(": ")[1] for c in cats] != [f"{c.name}." for c in LLAMA_GUARD_1.categories]


def test_augmentations_off_never_change_anything() -> None:
    for seed in range(10):
        f = format_example(
            UNSAFE,
            LLAMA_GUARD_1,
            PromptFormat.LG1,
            Augmentations(False, False, False, ALWAYS),
            random.Random(seed),
        )
        assert f.answer == " unsafe\nO3" and len(_cats(f.prompt)) == 6
