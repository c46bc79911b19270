"""Training examples in the Llama Guard format, with the paper's augmentations.

The prompt comes from ``guard.prompt.render_prompt``, the code the server uses,
so training and serving see identical prompts. Augmentations (Inan et al.,
2023, section 3), each switchable:

* ``drop_categories``: drop a random subset of the categories the example does
  NOT violate (label unchanged);
* ``drop_violated``: drop every category the example violates and relabel it
  ``safe`` (the model must follow the policy it is given);
* ``shuffle_codes``: shuffle the category order and renumber the codes
  (``O1``..``On``), mapping the answer's codes, so that no code is memorised.

No example is ever contradictory: an ``unsafe`` answer names only categories listed in
the prompt, a ``safe`` answer to an unsafe turn comes only with a prompt that lists none
of the categories it violates, and a prompt lists at least one category. So
``drop_violated`` skips an example that violates every category of its policy (nothing
would be left to list), and an unsafe example must name its categories (else it is
refused: relabelling it safe would teach the model to pass it).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from guard.prompt import ANSWER_SEPARATOR, PromptFormat, render_answer, render_prompt
from guard.taxonomy import Category, Policy
from training.dataset import Example


@dataclass(frozen=True, slots=True)
class Augmentations:
    drop_categories: bool = True
    drop_violated: bool = True
    shuffle_codes: bool = True
    probability: float = 0.3


NONE = Augmentations(False, False, False, 0.0)


@dataclass(frozen=True, slots=True)
class Formatted:
    prompt: str
    answer: str  # with the format's separator, e.g. " unsafe\nO3"
    unsafe: bool
    codes: tuple[str, ...]


def _code_prefix(policy: Policy) -> str:
    m = re.match(r"[A-Za-z]*", policy.categories[0].code)
    return m.group(0) if m else ""


def format_example(
    ex: Example,
    policy: Policy,
    fmt: PromptFormat = PromptFormat.LG1,
    aug: Augmentations = NONE,
    rng: random.Random | None = None,
    special_tokens: tuple[str, ...] = (),
) -> Formatted:
    """The prompt and target answer of ``ex`` under ``policy``, augmented per ``aug``.

    Raises ``ValueError`` for an example whose label and categories disagree (unsafe with
    none, safe with some) or that names a category ``policy`` does not have.
    """
    rng = rng or random.Random(0)
    named = set(ex.categories)
    if ex.unsafe != bool(named):
        raise ValueError(
            f"example {ex.id}: an unsafe label needs its violated categories and a safe "
            f"label names none (got {'unsafe' if ex.unsafe else 'safe'} {sorted(named)})"
        )
    if not named <= set(policy.codes):
        raise ValueError(
            f"example {ex.id}: {sorted(named - set(policy.codes))} not in {policy.ref}"
        )
    cats: list[Category] = list(policy.categories)
    violated = [c for c in cats if c.code in named]
    others = [c for c in cats if c.code not in named]
    unsafe = ex.unsafe

    if aug.drop_violated and unsafe and others and rng.random() < aug.probability:
        # Under the policy it is given (without the categories it violates) the turn is safe.
        cats, violated, unsafe = others, [], False
    elif aug.drop_categories and rng.random() < aug.probability:
        least = 0 if violated else 1  # a prompt lists at least one category
        keep = set(rng.sample([c.code for c in others], rng.randint(least, len(others))))
        cats = [c for c in cats if c in violated or c.code in keep]

    mapping = {c.code: c.code for c in cats}
    if aug.shuffle_codes and rng.random() < aug.probability:
        rng.shuffle(cats)
        prefix = _code_prefix(policy)
        mapping = {c.code: f"{prefix}{i}" for i, c in enumerate(cats, 1)}
        cats = [Category(mapping[c.code], c.name, c.description) for c in cats]
    # Answer codes follow the order of the prompt's category list.
    order = {c.code: i for i, c in enumerate(cats)}
    codes = tuple(sorted((mapping[c.code] for c in violated), key=order.__getitem__))
    prompt = render_prompt(
        ex.turns, ex.side, policy, fmt, categories=cats, special_tokens=special_tokens
    )
    answer = ANSWER_SEPARATOR[fmt] + render_answer(unsafe, codes)
    return Formatted(prompt, answer, unsafe, codes)
