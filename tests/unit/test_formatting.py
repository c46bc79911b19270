import random
import re

import pytest

from guard.conversation import Role, Turn
from guard.prompt import PromptFormat
from guard.taxonomy import LLAMA_GUARD_1, Category, Policy
from training.dataset import Example
from training.formatting import NONE, Augmentations, Formatted, format_example

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


# --- No augmentation ever makes a contradictory example ------------------------------

ONE = Policy("one", "1", (Category("C1", "Scams", "Should not help defraud buyers."),))
ALL_SIX = Example("x3", "c3", (Turn(Role.USER, "everything bad"),), True, LLAMA_GUARD_1.codes)
TWO = Example("x4", "c4", (Turn(Role.USER, "hotwire and shoot"),), True, ("O3", "O4"))
SCAM = Example("x5", "c5", (Turn(Role.USER, "help me scam a buyer"),), True, ("C1",))
SAFE_ONE = Example("x6", "c6", (Turn(Role.USER, "is this a fair price?"),), False, ())
EVERY_AUGMENTATION = Augmentations(True, True, True, ALWAYS)


def _listed(prompt: str) -> dict[str, str]:
    """Code -> name of each category the prompt lists."""
    return dict(line.rstrip(".").split(": ", 1) for line in _cats(prompt))


def _consistent(ex: Example, policy: Policy, f: Formatted) -> None:
    listed = _listed(f.prompt)
    names = {c.code: c.name for c in policy.categories}
    violated = {names[c] for c in ex.categories}
    assert listed, "a prompt lists at least one category"
    assert f.unsafe == bool(f.codes)
    assert f.answer.strip() == ("unsafe\n" + ",".join(f.codes) if f.unsafe else "safe")
    if f.unsafe:
        assert ex.unsafe
        # every answered code is listed, names a violated category, and none is left out
        assert {listed[c] for c in f.codes} == violated & set(listed.values())
        assert violated <= set(listed.values())
    elif ex.unsafe:  # relabelled safe: only if none of its categories is in the prompt
        assert not violated & set(listed.values())


@pytest.mark.parametrize(
    ("ex", "policy"),
    [
        (UNSAFE, LLAMA_GUARD_1),
        (SAFE, LLAMA_GUARD_1),
        (ALL_SIX, LLAMA_GUARD_1),
        (TWO, LLAMA_GUARD_1),
        (SCAM, ONE),
        (SAFE_ONE, ONE),
    ],
)
@pytest.mark.parametrize(
    "aug",
    [
        Augmentations(False, True, False, ALWAYS),
        Augmentations(True, False, False, ALWAYS),
        Augmentations(False, False, True, ALWAYS),
        EVERY_AUGMENTATION,
        Augmentations(True, True, True, 0.5),
    ],
)
def test_no_augmentation_ever_contradicts_the_label(
    ex: Example, policy: Policy, aug: Augmentations
) -> None:
    for seed in range(40):
        _consistent(
            ex, policy, format_example(ex, policy, PromptFormat.LG1, aug, random.Random(seed))
        )


def test_drop_violated_skips_a_one_category_policy_it_would_empty() -> None:
    """Dropping C1 would leave nothing to list: the old code listed C1 again and answered
    safe, teaching the model to pass the very category it was shown."""
    for seed in range(10):
        f = format_example(SCAM, ONE, PromptFormat.LG1, EVERY_AUGMENTATION, random.Random(seed))
        assert _listed(f.prompt) == {"C1": "Scams"} and f.answer == " unsafe\nC1"


def test_drop_violated_skips_an_example_that_violates_every_category() -> None:
    aug = Augmentations(False, True, False, ALWAYS)
    f = format_example(ALL_SIX, LLAMA_GUARD_1, PromptFormat.LG1, aug, random.Random(0))
    assert f.unsafe and f.codes == LLAMA_GUARD_1.codes and len(_listed(f.prompt)) == 6


def test_drop_violated_with_two_violated_categories_drops_both() -> None:
    aug = Augmentations(False, True, False, ALWAYS)
    f = format_example(TWO, LLAMA_GUARD_1, PromptFormat.LG1, aug, random.Random(0))
    assert f.answer == " safe"
    assert set(_listed(f.prompt)) == {"O1", "O2", "O5", "O6"}


def test_drop_categories_never_empties_a_safe_examples_prompt() -> None:
    aug = Augmentations(True, False, False, ALWAYS)
    sizes = {
        len(
            _listed(
                format_example(SAFE, LLAMA_GUARD_1, PromptFormat.LG1, aug, random.Random(s)).prompt
            )
        )
        for s in range(60)
    }
    assert min(sizes) == 1 and max(sizes) == 6


@pytest.mark.parametrize(
    "ex",
    [
        Example("u", "c", (Turn(Role.USER, "bad"),), True, ()),  # unsafe, no category
        Example("s", "c", (Turn(Role.USER, "fine"),), False, ("O3",)),  # safe with one
        Example("x", "c", (Turn(Role.USER, "bad"),), True, ("S1",)),  # not in the policy
    ],
)
def test_an_example_whose_label_and_categories_disagree_is_refused(ex: Example) -> None:
    with pytest.raises(ValueError, match="example"):
        format_example(ex, LLAMA_GUARD_1, PromptFormat.LG1, EVERY_AUGMENTATION)
