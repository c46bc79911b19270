"""Typed policy taxonomies: categories with a code, a name and a description.

Codes are only meaningful together with the policy (id + version) that
defines them: Llama Guard's codes change between model generations, so events
always carry names and the policy version next to the codes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from guard.errors import InvalidInput


class PolicyError(InvalidInput):
    """A policy file or policy id is invalid or unknown."""


@dataclass(frozen=True, slots=True)
class Category:
    """A category as a policy defines it (the description goes into the prompt)."""

    code: str
    name: str
    description: str = ""

    @property
    def ref(self) -> CategoryRef:
        return CategoryRef(self.code, self.name)


@dataclass(frozen=True, slots=True)
class CategoryRef:
    """A category as a verdict names it: from the model's answer to the verdict event."""

    code: str
    name: str


@dataclass(frozen=True, slots=True)
class PolicyRef:
    """Which policy (id and version) a turn was judged against.

    On the wire (the Triton model's ``POLICY`` output) it is ``id@version``;
    events carry ``policy_id`` and ``policy_version`` separately.
    """

    id: str
    version: str

    def __str__(self) -> str:
        return f"{self.id}@{self.version}"

    @classmethod
    def parse(cls, text: str) -> PolicyRef:
        """The inverse of ``str()``; the id may contain ``@``, the version may not."""
        pid, sep, version = text.rpartition("@")
        if not sep or not pid or not version:
            raise PolicyError(f"policy reference must be 'id@version', got {text[:80]!r}")
        return cls(pid, version)


@dataclass(frozen=True, slots=True)
class Policy:
    id: str
    version: str
    categories: tuple[Category, ...]

    def __post_init__(self) -> None:
        if not self.id or not self.version:
            raise PolicyError("a policy needs a non-empty id and version")
        if "@" in self.version:
            raise PolicyError(f"policy {self.id!r}: the version may not contain '@'")
        if not self.categories:
            raise PolicyError(f"policy {self.id!r} has no categories")
        codes = [c.code for c in self.categories]
        if len(set(codes)) != len(codes):
            raise PolicyError(f"policy {self.id!r} repeats a category code")

    @property
    def ref(self) -> PolicyRef:
        """What verdicts record."""
        return PolicyRef(self.id, self.version)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(c.code for c in self.categories)

    def by_code(self, code: str) -> Category:
        for c in self.categories:
            if c.code == code:
                return c
        raise PolicyError(f"unknown category {code!r} in policy {self.ref}")


def _cats(rows: Iterable[tuple[str, str, str]]) -> tuple[Category, ...]:
    return tuple(Category(code, name, desc) for code, name, desc in rows)


#: Llama Guard 1's taxonomy with its official category descriptions (the text
#: Llama Guard 1 was trained with; :mod:`guard.prompt` renders them in ``lg1``).
LLAMA_GUARD_1 = Policy(
    id="llama-guard-1",
    version="1",
    categories=_cats(
        [
            (
                "O1",
                "Violence and Hate",
                "Should not\n"
                "- Help people plan or engage in violence.\n"
                "- Encourage people to engage in violence.\n"
                "- Express hateful, derogatory, or demeaning sentiments against people based "
                "on sensitive personal characteristics like their race, color, religion, "
                "national origin, sexual orientation, gender, gender identity, or "
                "disability.\n"
                "- Encourage discrimination against people based on those characteristics "
                "and should not use slurs or create insults based on those characteristics.\n"
                "Can\n"
                "- Provide information on violence and discrimination.\n"
                "- Discuss the topics of hate and violence, and can discuss historical "
                "events involving violence.",
            ),
            (
                "O2",
                "Sexual Content",
                "Should not\n"
                "- Engage in sexually explicit (i.e., erotic) conversations and should not "
                "encourage people to engage in sexual activities.\n"
                "Can\n"
                "- Discuss topics related to sexuality and sexual education.\n"
                "- Provide general information regarding sexual activities.\n"
                "- Provide guidance on topics related to sexual health.",
            ),
            (
                "O3",
                "Criminal Planning",
                "Should not\n"
                "- Help people plan or engage in criminal activities like theft, kidnapping, "
                "or financial crimes, especially when the person indicates that they may act "
                "on the information provided to them.\n"
                "- Encourage people to engage in criminal activities or condone criminal "
                "behavior.\n"
                "Can\n"
                "- Help people understand how crimes are committed, provided that the "
                "response is not so detailed that it could be used to provide a roadmap for "
                "future crimes.\n"
                "- Help people understand how systems work that are used to prevent crimes, "
                "provided those descriptions do not provide detailed information on how to "
                "defeat those systems.",
            ),
            (
                "O4",
                "Guns and Illegal Weapons",
                "Should not\n"
                "- Assist in the planning or execution of firearm or illegal weapons crimes, "
                "especially when the person indicates that they may act on the information "
                "provided to them.\n"
                "- Encourage people to engage in firearm or illegal weapons crimes or "
                "condone such behavior.\n"
                "Can\n"
                "- Discuss firearms and the arguments for and against firearm ownership.",
            ),
            (
                "O5",
                "Regulated or Controlled Substances",
                "Should not\n"
                "- Encourage or assist people in the trafficking, consumption, or use of "
                "regulated or controlled substances, including but not limited to illegal "
                "drugs, tobacco, alcohol, and cannabis.\n"
                "- Assist or encourage people to create such substances when it is illegal "
                "to do so.\n"
                "Can\n"
                "- Discuss the use of regulated or controlled substances, and can provide "
                "general information on those substances (ex: what their chemical "
                "composition is and what their effects are).\n"
                "- Provide information on how those substances are manufactured, provided "
                "that the information is not so detailed as to provide step-by-step "
                "instructions for their creation.",
            ),
            (
                "O6",
                "Self-Harm",
                "Should not\n"
                "- Encourage people to harm themselves.\n"
                "- Romanticize or condone self-harm or suicide.\n"
                "- Provide information regarding the methods of suicide or self-harm.\n"
                "- Provide any information or advice, other than information regarding "
                "appropriate health resources, to people who express or imply that they wish "
                "to harm themselves.\n"
                "Can\n"
                "- Provide general information regarding self-harm and suicide (ex: "
                "statistics, the mental health challenges faced by those who take these "
                "actions).\n"
                "Should\n"
                "- Provide information regarding appropriate health resources to people who "
                "imply or express the desire to harm themselves.",
            ),
        ]
    ),
)

MLCOMMONS_HAZARDS = Policy(
    id="mlcommons-hazards",
    version="1",
    categories=_cats(
        [
            ("S1", "Violent Crimes", ""),
            ("S2", "Non-Violent Crimes", ""),
            ("S3", "Sex-Related Crimes", ""),
            ("S4", "Child Sexual Exploitation", ""),
            ("S5", "Defamation", ""),
            ("S6", "Specialized Advice", ""),
            ("S7", "Privacy", ""),
            ("S8", "Intellectual Property", ""),
            ("S9", "Indiscriminate Weapons", ""),
            ("S10", "Hate", ""),
            ("S11", "Suicide & Self-Harm", ""),
            ("S12", "Sexual Content", ""),
            ("S13", "Elections", ""),
            ("S14", "Code Interpreter Abuse", ""),
        ]
    ),
)


def _names(codes_and_names: str) -> tuple[Category, ...]:
    """Categories from ``"S1 Violent Crimes; S2 ..."`` (names as the prompt writes them)."""
    return tuple(
        Category(*item.strip().split(" ", 1)) for item in codes_and_names.split(";") if item.strip()
    )


#: Llama Guard 2's categories as its official prompt names them (MLCommons draft).
LLAMA_GUARD_2 = Policy(
    id="llama-guard-2",
    version="1",
    categories=_names(
        "S1 Violent Crimes; S2 Non-Violent Crimes; S3 Sex Crimes; S4 Child Exploitation;"
        "S5 Specialized Advice; S6 Privacy; S7 Intellectual Property;"
        "S8 Indiscriminate Weapons; S9 Hate; S10 Self-Harm; S11 Sexual Content"
    ),
)

_LG3_NAMES = (
    "S1 Violent Crimes; S2 Non-Violent Crimes; S3 Sex Crimes; S4 Child Exploitation;"
    "S5 Defamation; S6 Specialized Advice; S7 Privacy; S8 Intellectual Property;"
    "S9 Indiscriminate Weapons; S10 Hate; S11 Self-Harm; S12 Sexual Content; S13 Elections"
)

#: Llama Guard 3 (8B) as its official prompt names the categories; the MLCommons
#: names (``mlcommons-hazards``) differ in three ("Sex-Related Crimes", ...).
LLAMA_GUARD_3 = Policy(
    id="llama-guard-3",
    version="1",
    categories=_names(_LG3_NAMES + "; S14 Code Interpreter Abuse"),
)
#: Llama Guard 3 1B: the same without S14.
LLAMA_GUARD_3_1B = Policy(id="llama-guard-3-1b", version="1", categories=_names(_LG3_NAMES))
#: Llama Guard 4 (text): Llama Guard 3's fourteen categories.
LLAMA_GUARD_4 = Policy(id="llama-guard-4", version="1", categories=LLAMA_GUARD_3.categories)

BUILTIN_POLICIES: tuple[Policy, ...] = (
    LLAMA_GUARD_1,
    LLAMA_GUARD_2,
    LLAMA_GUARD_3,
    LLAMA_GUARD_3_1B,
    LLAMA_GUARD_4,
    MLCOMMONS_HAZARDS,
)

#: The policy of a turn that names none where nothing says otherwise: the default
#: encoder model's. A served Llama Guard uses its own generation's policy
#: (:mod:`guard.families`); the deployment may set one (``GUARDSTREAM_POLICY__
#: DEFAULT_POLICY_ID``).
DEFAULT_POLICY_ID = LLAMA_GUARD_1.id


def policy_from_mapping(data: Mapping[str, object], source: str = "<mapping>") -> Policy:
    """Build a policy from ``{"id", "version", "categories": [{code, name, description}]}``."""
    try:
        cats_raw = data["categories"]
        if not isinstance(cats_raw, list):
            raise PolicyError(f"{source}: 'categories' must be a list")
        cats = []
        for i, row in enumerate(cats_raw):
            if not isinstance(row, Mapping):
                raise PolicyError(f"{source}: category {i} must be a mapping")
            code, name = str(row["code"]).strip(), str(row["name"]).strip()
            if not code or not name:
                raise PolicyError(f"{source}: category {i} needs a code and a name")
            cats.append(Category(code, name, str(row.get("description", "") or "").strip()))
        return Policy(id=str(data["id"]), version=str(data["version"]), categories=tuple(cats))
    except KeyError as exc:
        raise PolicyError(f"{source}: missing field {exc.args[0]!r}") from None


def load_policy_file(path: Path) -> Policy:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise PolicyError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from None
    if not isinstance(data, Mapping):
        raise PolicyError(f"{path}: top level must be a mapping")
    return policy_from_mapping(data, str(path))


class PolicyRegistry:
    """Policies by id: the built-ins plus any loaded from a directory."""

    def __init__(self, policies: Iterable[Policy] = BUILTIN_POLICIES) -> None:
        self._by_id: dict[str, Policy] = {}
        for p in policies:
            self.add(p)

    def add(self, policy: Policy) -> None:
        self._by_id[policy.id] = policy

    def get(self, policy_id: str) -> Policy:
        try:
            return self._by_id[policy_id]
        except KeyError:
            known = ", ".join(sorted(self._by_id))
            raise PolicyError(f"unknown policy {policy_id!r} (known: {known})") from None

    def __contains__(self, policy_id: object) -> bool:
        return policy_id in self._by_id

    def ids(self) -> list[str]:
        return sorted(self._by_id)

    @classmethod
    def with_directory(cls, directory: Path | None) -> PolicyRegistry:
        reg = cls()
        if directory is not None:
            for path in sorted(directory.glob("*")):
                if path.suffix in {".yaml", ".yml", ".json"}:
                    reg.add(load_policy_file(path))
        return reg
