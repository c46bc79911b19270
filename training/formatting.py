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
    rng = rng or random.Random(0)
    cats: list[Category] = list(policy.categories)
    violated = set(ex.categories)
    unsafe = ex.unsafe

    if aug.drop_violated and unsafe and rng.random() < aug.probability:
        cats = [c for c in cats if c.code not in violated]
        unsafe, violated = False, set()
    elif aug.drop_categories and rng.random() < aug.probability:
        others = [c for c in cats if c.code not in violated]
        keep = set(rng.sample([c.code for c in others], rng.randint(0, len(others))))
        cats = [c for c in cats if c.code in violated or c.code in keep]
    if not cats:  # a prompt needs at least one category
        cats = [c for c in policy.categories if c.code not in violated][:1] or cats

    mapping = {c.code: c.code for c in cats}
    if aug.shuffle_codes and rng.random() < aug.probability:
        rng.shuffle(cats)
        prefix = _code_prefix(policy)
        mapping = {c.code: f"{prefix}{i}" for i, c in enumerate(cats, 1)}
        cats = [Category(mapping[c.code], c.name, c.description) for c in cats]
    codes = tuple(mapping[c] for c in ex.categories if c in violated and c in mapping)
    # Answer codes follow the order of the prompt's category list.
    order = {c.code: i for i, c in enumerate(cats)}
    codes = tuple(sorted(codes, key=order.__getitem__))
    prompt = render_prompt(
        ex.turns, ex.side, policy, fmt, categories=cats, special_tokens=special_tokens
    )
    answer = ANSWER_SEPARATOR[fmt] + render_answer(unsafe, codes)
    return Formatted(prompt, answer, unsafe, codes)
