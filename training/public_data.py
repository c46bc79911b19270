"""Public safety datasets -> evaluation-format rows, with splits held out by source.

Reads the raw copies under ``/work/shared/datasets`` (or ``$GUARDSTREAM_DATASETS``)
and turns them into rows of the project's evaluation format (one JSON object
per line, the side checked is the role of the last turn)::

    {"id": "harmbench:...", "conversation_id": "...", "source": "harmbench",
     "conversation": [{"role": "user", "content": "..."}],
     "label": "unsafe", "categories": ["O3"]}

Labels are for the Llama Guard 1 policy (O1 Violence and Hate, O2 Sexual
Content, O3 Criminal Planning, O4 Guns and Illegal Weapons, O5 Regulated or
Controlled Substances, O6 Self-Harm). A source's own category is mapped onto
those codes where it allows it (tables below); rows whose source category lies
outside LG1 (copyright, misinformation, defamation, privacy, specialised
advice, ...) are dropped rather than relabelled, since LG1 would call many of
them safe. Every unsafe row also gets the codes of :func:`keyword_codes`
(drugs -> O5, weapons -> O4, self-harm -> O6), which is how O5 gets labels at all.

Split design (:func:`build_splits`), deterministic:

* ``train`` / ``validation``: the TRAIN sources (including the project's benign
  templates, ``data/benign_templates.json``), split 85/15 by a SHA-256 hash of
  the conversation id (a prompt and its responses never straddle the split);
* ``heldout``: whole sources never used for training or for picking the
  threshold (``HELDOUT_SOURCES``), plus the held-out half of the project's own
  files (``SPLIT_SOURCES``: the benign hard negatives and the self-harm
  disclosures, split by hash);
* ``heldout_pairs``: 500 Anthropic hh-rlhf harmless-base preference pairs
  (unlabelled; a response scorer should rank ``rejected`` above ``chosen``). The
  other pairs of that file train the response head's ranking term
  (:func:`hh_rlhf_train_pairs`), so these 500 are held out by row, not by source.

Any training row whose checked text also occurs in a held-out row is removed
from training. ``alpaca_harmless`` (CC-BY-NC-4.0) is evaluation only and is
never written to a training split.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: shared/ lies beside the repository (developers' checkouts and CI's clone alike).
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DATASETS_ENV = "GUARDSTREAM_DATASETS"
WORKPLACE_ROOT = Path("/work/shared/datasets")
REPO_ROOT = Path(__file__).resolve().parents[1]
BENIGN_FILE = REPO_ROOT / "data" / "benign_hard_negatives.jsonl"
SELF_HARM_FILE = REPO_ROOT / "data" / "self_harm_intent.jsonl"
TEMPLATES_FILE = REPO_ROOT / "data" / "benign_templates.json"

LG1_CODES = ("O1", "O2", "O3", "O4", "O5", "O6")
VALIDATION_FRACTION = 0.15
BENIGN_HELDOUT_FRACTION = 0.5
SPLIT_SEED = "guardstream-public-v1"
HH_HELDOUT_PAIRS = 500
_BENIGN_SEED = SPLIT_SEED + ":benign-heldout"

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class SourceInfo:
    name: str
    license: str
    origin: str
    # "train" | "heldout" | "eval-only" | "split" (hash-split between train and heldout)
    # | "pairs" (preference pairs: some held out, the rest train a ranking term)
    role: str
    what: str


SOURCES: tuple[SourceInfo, ...] = (
    SourceInfo(
        "harmbench",
        "MIT",
        "centerforaisafety/HarmBench via busycalibrating/AdversariaLLM@f970939",
        "train",
        "unsafe prompts (standard + contextual; copyright and misinformation dropped)",
    ),
    SourceInfo(
        "advbench",
        "MIT",
        "llm-attacks/AdvBench via YancyKahn/PocoGCG@131c890",
        "train",
        "unsafe prompts; the goal + affirmative target as an unsafe response; harmful strings",
    ),
    SourceInfo(
        "strongreject",
        "MIT",
        "alexandrasouly/strongreject via AdversariaLLM@f970939",
        "train",
        "unsafe prompts (disinformation dropped)",
    ),
    SourceInfo(
        "malicious_instruct",
        "MIT",
        "Princeton-SysML/Jailbreak_LLM (MaliciousInstruct) via AdversariaLLM@f970939",
        "train",
        "unsafe prompts",
    ),
    SourceInfo(
        "toxigen",
        "MIT",
        "microsoft/TOXIGEN@01517e8 prompts/",
        "train",
        "hate (unsafe O1) / neutral (safe) statements about 16 groups, as prompts and as "
        "agent answers to a fixed question",
    ),
    SourceInfo(
        "do_not_answer",
        "Apache-2.0",
        "Libr-AI/do-not-answer data_en.csv",
        "train",
        "6 model responses per risky prompt with human harmful 0/1 labels; prompts of "
        "clear-cut types as prompt rows",
    ),
    SourceInfo(
        "guardstream_benign",
        "Apache-2.0 (written for this project)",
        "data/benign_hard_negatives.jsonl",
        "split",
        "benign hard negatives (fiction, history, safety/medical advice, security "
        "education, dark humour, everyday tasks); half train, half held out by hash",
    ),
    SourceInfo(
        "guardstream_selfharm",
        "Apache-2.0 (written for this project)",
        "data/self_harm_intent.jsonl",
        "split",
        "first-person disclosures of self-harm or suicidal intent, plans or acts (unsafe "
        "O6: a moderation service routes them to care); half train, half held out by hash",
    ),
    SourceInfo(
        "guardstream_templates",
        "Apache-2.0 (written for this project)",
        "data/benign_templates.json",
        "train",
        "benign everyday requests: each template combined with each of its fillers",
    ),
    SourceInfo(
        "ailuminate",
        "CC-BY-4.0",
        "mlcommons/ailuminate@769cc2b demo en_US",
        "heldout",
        "unsafe prompts, LG1-scope hazards only",
    ),
    SourceInfo(
        "simplesafetytests",
        "CC-BY-4.0",
        "bertiev/SimpleSafetyTests@d7aee9a",
        "heldout",
        "unsafe prompts",
    ),
    SourceInfo(
        "dices_990",
        "CC-BY-4.0",
        "google-research-datasets/dices-dataset via dmg-illc/JUDGE-BENCH",
        "heldout",
        "multi-turn conversations, crowd majority safety rating of the last agent turn",
    ),
    SourceInfo(
        "dices_350",
        "CC-BY-4.0",
        "google-research-datasets/dices-dataset via dmg-illc/JUDGE-BENCH",
        "heldout",
        "multi-turn adversarial conversations, expert safety rating of the last agent turn",
    ),
    SourceInfo(
        "alpaca_harmless",
        "CC-BY-NC-4.0 (evaluation only, never trained on)",
        "refusal_direction harmless_test (alpaca) via AdversariaLLM@f970939",
        "eval-only",
        "1,000 benign everyday instructions (sampled by hash)",
    ),
    SourceInfo(
        "hh_rlhf",
        "MIT",
        "anthropics/hh-rlhf@354e5c3 harmless-base/test.jsonl.gz",
        "pairs",
        "preference pairs (chosen vs rejected last assistant turn), no labels; "
        "500 held out by hash, the rest train the response head's ranking term",
    ),
)
SOURCE_INFO = {s.name: s for s in SOURCES}
TRAIN_SOURCES = tuple(s.name for s in SOURCES if s.role == "train")
SPLIT_SOURCES = tuple(s.name for s in SOURCES if s.role == "split")
HELDOUT_SOURCES = tuple(s.name for s in SOURCES if s.role in ("heldout", "eval-only"))
#: Unlabelled preference pairs: held out by row (``heldout_pairs``), the rest trained on.
PAIR_SOURCES = tuple(s.name for s in SOURCES if s.role == "pairs")


# -- helpers ------------------------------------------------------------------


def datasets_root(root: Path | None = None) -> Path:
    """The raw dataset folder; a missing one is an error, never an empty dataset.

    ``root``, else ``$GUARDSTREAM_DATASETS``, else shared/datasets beside the
    repository, else the workplace's ``/work/shared/datasets``.
    """
    given = root or os.environ.get(DATASETS_ENV)
    candidates = [Path(given)] if given else [DEFAULT_ROOT, WORKPLACE_ROOT]
    for path in candidates:
        if path.is_dir():
            return path
    raise FileNotFoundError(
        f"public datasets folder missing (looked in {', '.join(map(str, candidates))}; "
        f"set ${DATASETS_ENV})"
    )


def stable_fraction(key: str, seed: str = SPLIT_SEED) -> float:
    """A number in [0, 1) fixed by ``key`` (SHA-256), the same on every machine and run."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def normalize(text: str) -> str:
    """Lower-cased, whitespace-collapsed text: the key for de-duplication."""
    return " ".join(text.lower().split())


def _turn(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content.strip()}


def make_row(
    source: str,
    key: str,
    conversation: Sequence[dict[str, str]],
    unsafe: bool,
    categories: Iterable[str] = (),
    group: str | None = None,
) -> Row:
    cats = sorted(set(categories)) if unsafe else []
    return {
        "id": f"{source}:{key}",
        "conversation_id": f"{source}:{group or key}",
        "source": source,
        "conversation": [dict(t) for t in conversation],
        "label": "unsafe" if unsafe else "safe",
        "categories": cats,
    }


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


_KEYWORDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "O5",
        re.compile(
            r"\b(drugs?|cocaine|heroin|meth(amphetamine)?|fentanyl|mdma|ecstasy|lsd|ketamine|"
            r"opioids?|opiates?|oxycodone|oxycontin|narcotics?|cannabis|marijuana|weed|crack|"
            r"amphetamines?|psilocybin|ghb|xanax|steroids?|cigarettes?|tobacco|vap(e|ing)|"
            r"alcohol|moonshine)\b",
            re.I,
        ),
    ),
    (
        "O4",
        re.compile(
            r"\b(guns?|firearms?|rifles?|pistols?|handguns?|shotguns?|ar-?15|ak-?47|weapons?|"
            r"bombs?|explosives?|grenades?|ammunition|ammo|silencers?|suppressors?|ghost guns?|"
            r"pipe bombs?|molotov|nerve agents?|sarin|vx|anthrax|bioweapons?|napalm|tnt|"
            r"detonators?|landmines?)\b",
            re.I,
        ),
    ),
    (
        "O6",
        re.compile(
            r"\b(suicide|suicidal|kill (myself|yourself|themselves)|end (my|your) life|"
            r"self[- ]harm|cut(ting)? myself|hurt myself|overdose|anorexi[ac]|bulimi[ac]|"
            r"starve myself|eating disorder)\b",
            re.I,
        ),
    ),
)


def keyword_codes(text: str) -> set[str]:
    """LG1 codes suggested by unambiguous topic words (only ever added to UNSAFE rows)."""
    return {code for code, pattern in _KEYWORDS if pattern.search(text)}


def _prompt_row(source: str, key: str, text: str, codes: Iterable[str] = ()) -> Row:
    return make_row(
        source, key, [_turn("user", text)], True, set(codes) | keyword_codes(text), group=key
    )


# -- loaders: one per source ----------------------------------------------------

HARMBENCH_CODES: dict[str, tuple[str, ...] | None] = {
    "chemical_biological": ("O4",),
    "cybercrime_intrusion": ("O3",),
    "illegal": ("O3",),
    "harassment_bullying": ("O1",),
    "harmful": (),
    "misinformation_disinformation": None,  # outside LG1: dropped
    "copyright": None,
}


def load_harmbench(root: Path) -> list[Row]:
    rows = []
    for r in _read_csv(root / "harmbench_adversariallm" / "harmbench_behaviors_text_all.csv"):
        codes = HARMBENCH_CODES.get(r["SemanticCategory"])
        if codes is None:
            continue
        text = r["Behavior"].strip()
        if r["ContextString"].strip():
            text = f"{r['ContextString'].strip()}\n\n{text}"
        rows.append(_prompt_row("harmbench", r["BehaviorID"], text, codes))
    return rows


def load_advbench(root: Path) -> list[Row]:
    """Goals as unsafe prompts, goal + affirmative target as an unsafe response, and strings."""
    rows = []
    for r in _read_csv(root / "advbench_pocogcg" / "harmful_behaviors.csv"):
        goal, target = r["goal"].strip(), r["target"].strip()
        key = _key(goal)
        rows.append(_prompt_row("advbench", key, goal))
        conv = [_turn("user", goal), _turn("agent", target)]
        rows.append(make_row("advbench", key + "-r", conv, True, keyword_codes(goal), group=key))
    for r in _read_csv(root / "advbench_pocogcg" / "harmful_strings.csv"):
        text = r["target"].strip()
        rows.append(_prompt_row("advbench", "s-" + _key(text), text))
    return rows


STRONGREJECT_CODES: dict[str, tuple[str, ...] | None] = {
    "Violence": ("O1",),
    "Hate, harassment and discrimination": ("O1",),
    "Sexual content": ("O2",),
    "Non-violent crimes": ("O3",),
    "Illegal goods and services": (),
    "Disinformation and deception": None,
}


def load_strongreject(root: Path) -> list[Row]:
    rows = []
    for r in _read_csv(root / "harmbench_adversariallm" / "strongreject_dataset.csv"):
        codes = STRONGREJECT_CODES.get(r["category"])
        if codes is None:
            continue
        text = r["forbidden_prompt"].strip()
        rows.append(_prompt_row("strongreject", _key(text), text, codes))
    return rows


def load_malicious_instruct(root: Path) -> list[Row]:
    path = root / "harmbench_adversariallm" / "malicious_instruct.txt"
    lines = [s.strip() for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]
    return [_prompt_row("malicious_instruct", _key(s), s) for s in lines]


SST_CODES: dict[str, tuple[str, ...]] = {
    "Suicide, Self-Harm, and Eating Disorders": ("O6",),
    "Physical harm and Violence": ("O1",),
    "Illegal and Highly Regulated items": (),
    "Scams and fraud": ("O3",),
    "Child safety": (),
}


def load_simplesafetytests(root: Path) -> list[Row]:
    path = root / "simplesafetytests" / "SimpleSafetyTests - test cases.csv"
    return [
        _prompt_row("simplesafetytests", r["id"], r["prompts_final"], SST_CODES[r["harm_area"]])
        for r in _read_csv(path)
    ]


AILUMINATE_CODES: dict[str, tuple[str, ...]] = {
    "vcr": ("O1",),  # violent crimes
    "hte": ("O1",),  # hate
    "ncr": ("O3",),  # non-violent crimes
    "src": ("O2", "O3"),  # sex-related crimes
    "cse": ("O2", "O3"),  # child sexual exploitation
    "sxc_prn": ("O2",),  # sexual content
    "iwp": ("O4",),  # indiscriminate weapons (CBRNE)
    "ssh": ("O6",),  # suicide and self-harm
    # dfm (defamation), prv (privacy), ipv (intellectual property) and spc_* (specialised
    # advice) are outside LG1: dropped.
}


def load_ailuminate(root: Path) -> list[Row]:
    path = root / "ailuminate" / "airr_official_1.0_demo_en_us_prompt_set_release.csv"
    return [
        _prompt_row("ailuminate", r["release_prompt_id"], r["prompt_text"], codes)
        for r in _read_csv(path)
        if (codes := AILUMINATE_CODES.get(r["hazard"])) is not None
    ]


TOXIGEN_GROUPS: dict[str, str] = {
    "asian": "Asian people",
    "bisexual": "bisexual people",
    "black": "Black people",
    "chinese": "Chinese people",
    "immigrant": "immigrants",
    "jewish": "Jewish people",
    "latino": "Latino people",
    "lgbtq": "LGBTQ people",
    "mental_disability": "people with mental disabilities",
    "mexican": "Mexican people",
    "middle_east": "people from the Middle East",
    "muslim": "Muslims",
    "native_american": "Native Americans",
    "physical_disability": "people with physical disabilities",
    "trans": "trans people",
    "women": "women",
}


def toxigen_statements(root: Path) -> list[tuple[str, str, bool]]:
    """Unique ``(group, statement, hateful)`` seed statements of the TOXIGEN prompt files.

    Each line of a file is a machine prompt made of the same few human-written
    seed statements joined by a literal ``\\n-``; statements found in both a
    hate and a neutral file are dropped.
    """
    seen: dict[str, tuple[str, str, bool]] = {}
    conflicts: set[str] = set()
    for path in sorted((root / "toxigen_prompts").glob("*_1k.txt")):
        kind, group = path.stem.removesuffix("_1k").split("_", 1)
        for line in path.read_text(encoding="utf-8").splitlines():
            for part in line.split("\\n"):
                text = part.strip().removeprefix("-").strip()
                if not text:
                    continue
                k = normalize(text)
                prev = seen.get(k)
                if prev is not None and prev[2] != (kind == "hate"):
                    conflicts.add(k)
                seen.setdefault(k, (group, text, kind == "hate"))
    return [v for k, v in sorted(seen.items()) if k not in conflicts]


def load_toxigen(root: Path) -> list[Row]:
    rows = []
    for group, text, hateful in toxigen_statements(root):
        key = _key(normalize(text))
        codes = ("O1",) if hateful else ()
        rows.append(make_row("toxigen", key, [_turn("user", text)], hateful, codes, group=key))
        question = f"What do you think about {TOXIGEN_GROUPS[group]}?"
        conv = [_turn("user", question), _turn("agent", text)]
        rows.append(make_row("toxigen", key + "-r", conv, hateful, codes, group=key))
    return rows


#: types_of_harm -> (prompt label under LG1 or None = not a prompt row,
#:                   what becomes of the responses, codes of a harmful response).
#: Responses: "human" keeps the human harmful label; "safe" keeps them as safe rows,
#: because the type's harms (leaks, misinformation, over-reliance) are outside LG1,
#: which makes them the training set's only ordinary, non-refusal answers; None drops
#: them.
DNA_TYPES: dict[str, tuple[bool | None, str | None, tuple[str, ...]]] = {
    "Assisting illegal activities": (True, "human", ("O3",)),
    "Toxic language (hate speech)": (True, "human", ("O1",)),
    "Adult Content": (None, "human", ("O2",)),
    "Social stereotypes and unfair discrimination": (None, "human", ("O1",)),
    "Mental Health or Overreliance Crisis": (None, "human", ()),
    "Nudging or advising users to perform unethical or unsafe actions": (None, "human", ()),
    "Treat Chatbot as a Human": (False, "safe", ()),
    "Risks from leaking or inferring sensitive information (organization/gov)": (
        False,
        "safe",
        (),
    ),
    "Causing material harm by disseminating misinformation e.g. in medicine or law": (
        False,
        "safe",
        (),
    ),
    "Compromise privacy by leaking or inferring private information (person/individual)": (
        None,
        "safe",
        (),
    ),
    "Disseminating false or misleading information": (None, "safe", ()),
    # Propaganda written on request can carry hate (O1) that the human label does not
    # separate from other harms: dropped.
    "Reducing the cost of disinformation campaigns": (None, None, ()),
}
#: The "Self-Harm" subtype of "Mental Health or Overreliance Crisis" asks for methods
#: ("How deep should I cut myself?"): unsafe O6 prompts under LG1, unlike the rest of
#: that type (diagnosis and therapy requests).
DNA_SELF_HARM = "Self-Harm:"
DNA_MODELS = ("GPT4", "ChatGPT", "Claude", "ChatGLM2", "llama2-7b-chat", "vicuna-7b")


def load_do_not_answer(root: Path) -> list[Row]:
    rows = []
    for r in _read_csv(root / "do_not_answer" / "data_en.csv"):
        prompt_label, responses, codes = DNA_TYPES[r["types_of_harm"]]
        question, key = r["question"].strip(), r["id"]
        if r["specific_harms"].startswith(DNA_SELF_HARM):
            prompt_label, codes = True, ("O6",)  # requests for self-harm methods
        if prompt_label is not None:
            cats = set(codes) | keyword_codes(question) if prompt_label else set()
            rows.append(
                make_row("do_not_answer", key, [_turn("user", question)], prompt_label, cats)
            )
        if responses is None:
            continue
        for model in DNA_MODELS:
            answer = r[f"{model}_response"].strip()
            if not answer:
                continue
            harmful = responses == "human" and r[f"{model}_harmful"].strip() == "1"
            cats = set(codes) | keyword_codes(answer) if harmful else set()
            conv = [_turn("user", question), _turn("agent", answer)]
            rows.append(make_row("do_not_answer", f"{key}-{model}", conv, harmful, cats, key))
    return rows


def _dices_turns(text: str, user_tag: str, agent_tag: str, sep: str) -> list[dict[str, str]]:
    turns: list[dict[str, str]] = []
    for line in text.split(sep):
        if not line.strip():
            continue
        if line.startswith(user_tag) or line.startswith(agent_tag):
            role = "user" if line.startswith(user_tag) else "agent"
            content = line.split(":", 1)[1].strip()
            if turns and turns[-1]["role"] == role:
                turns[-1]["content"] += "\n" + content
            else:
                turns.append({"role": role, "content": content})
        elif turns:
            turns[-1]["content"] += "\n" + line.strip()
    return [t for t in turns if t["content"].strip()]


def _load_dices(path: Path, source: str, user_tag: str, agent_tag: str, sep: str) -> list[Row]:
    """DICES: the rating answers "is the conversation unsafe?" (``Yes`` = unsafe).

    JUDGE-BENCH's prompt words the question the other way round, but its labels are
    DICES's own ``Q_overall`` answers (e.g. "Don't worry u just die" is rated ``Yes``).
    ``Unsure`` majorities are dropped.
    """
    rows = []
    for inst in json.loads(path.read_text(encoding="utf-8"))["instances"]:
        verdict = inst["annotations"]["safety"]["majority_human"]
        if verdict not in ("Yes", "No"):
            continue
        turns = _dices_turns(inst["instance"]["user_prompt"], user_tag, agent_tag, sep)
        response = inst["instance"]["response"].strip()
        if not turns or turns[-1]["role"] != "user" or not response:
            continue
        conv = [*turns, _turn("agent", response)]
        rows.append(make_row(source, str(inst["id"]), conv, verdict == "Yes"))
    return rows


def load_dices(root: Path) -> list[Row]:
    d = root / "dices_judgebench"
    return _load_dices(d / "dices_990.json", "dices_990", "A:", "B:", "\\n") + _load_dices(
        d / "dices_350_expert.json", "dices_350", "USER:", "LAMDA:", "\n"
    )


def load_alpaca_harmless(root: Path, n: int = 1000) -> list[Row]:
    """Benign instructions for EVALUATION ONLY (CC-BY-NC-4.0): never train on these."""
    path = root / "refusal_direction_adversariallm" / "harmless_test.json"
    items = sorted(
        {
            normalize(x["instruction"]): x["instruction"].strip()
            for x in json.loads(path.read_text())
        }.values(),
        key=lambda s: stable_fraction("alpaca:" + s),
    )[:n]
    return [make_row("alpaca_harmless", _key(s), [_turn("user", s)], False) for s in items]


def load_own(path: Path, source: str) -> list[Row]:
    """Rows written for this project: ``{"id", "theme", "conversation"}`` lines, with
    optional ``"label"`` (default ``"safe"``) and ``"categories"``."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        conv = [_turn(t["role"], t["content"]) for t in item["conversation"]]
        unsafe = item.get("label", "safe") == "unsafe"
        row = make_row(source, item["id"], conv, unsafe, item.get("categories", ()))
        row["theme"] = item["theme"]
        rows.append(row)
    return rows


def load_benign(path: Path = BENIGN_FILE) -> list[Row]:
    """The project's own benign hard negatives (all safe)."""
    return load_own(path, "guardstream_benign")


def load_self_harm(path: Path = SELF_HARM_FILE) -> list[Row]:
    """The project's own self-harm intent disclosures (all unsafe, O6)."""
    return load_own(path, "guardstream_selfharm")


def load_benign_templated(path: Path = TEMPLATES_FILE) -> list[Row]:
    """Benign everyday requests, every template of ``path`` with each of its fillers."""
    data = json.loads(path.read_text(encoding="utf-8"))
    rows = []
    for t in data["templates"]:
        for filler in t["fill"]:
            text = t["template"].format(x=filler)
            rows.append(make_row("guardstream_templates", _key(text), [_turn("user", text)], False))
    return rows


def _hh_turns(transcript: str) -> list[dict[str, str]]:
    turns = []
    for part in re.split(r"\n\n(?=Human: |Assistant: )", transcript.strip()):
        role = "user" if part.startswith("Human: ") else "agent"
        turns.append(_turn(role, part.split(": ", 1)[1] if ": " in part else part))
    return turns


def load_hh_rlhf_pairs(root: Path, n: int = HH_HELDOUT_PAIRS) -> list[dict[str, Any]]:
    """``{"id", "source", "chosen", "rejected"}``: same context, two last agent turns.

    harmless-base's ``rejected`` answer is the one crowdworkers found MORE harmful.
    Pairs come in a fixed hash order; the first ``n`` are the held-out ones
    (``n=0``: all, in that order; :func:`hh_rlhf_train_pairs` gives the rest).
    """
    pairs: list[dict[str, Any]] = []
    with gzip.open(root / "hh_rlhf_harmless_base" / "test.jsonl.gz", "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            item = json.loads(line)
            chosen, rejected = _hh_turns(item["chosen"]), _hh_turns(item["rejected"])
            if (
                len(chosen) < 2
                or chosen[-1]["role"] != "agent"
                or rejected[-1]["role"] != "agent"
                or chosen[:-1] != rejected[:-1]
                or not chosen[-1]["content"]
                or not rejected[-1]["content"]
                or chosen[-1]["content"] == rejected[-1]["content"]
            ):
                continue
            pairs.append(
                {"id": f"hh_rlhf:{i}", "source": "hh_rlhf", "chosen": chosen, "rejected": rejected}
            )
    pairs.sort(key=lambda p: stable_fraction(p["id"]))
    return pairs[:n] if n else pairs


def hh_rlhf_train_pairs(
    pairs: Sequence[dict[str, Any]], heldout: int = HH_HELDOUT_PAIRS
) -> list[dict[str, Any]]:
    """Of all hh-rlhf ``pairs`` (``load_hh_rlhf_pairs(root, 0)``), those that are not
    among the first ``heldout``, the evaluation pairs.

    They train the response head's ranking term (``training.default_model``): the
    only source of everyday, conversational answers that are more or less harmful.
    A pair is dropped when one of its answers or its last user turn (what the
    response view sees) occurs anywhere in a held-out pair.
    """
    held = pairs[:heldout]
    held_texts = {
        normalize(t["content"]) for p in held for k in ("chosen", "rejected") for t in p[k]
    }
    return [
        p
        for p in pairs[heldout:]
        if not any(normalize(p[k][-1]["content"]) in held_texts for k in ("chosen", "rejected"))
        and normalize(p["chosen"][-2]["content"]) not in held_texts
    ]


LOADERS: dict[str, Callable[[Path], list[Row]]] = {
    "harmbench": load_harmbench,
    "advbench": load_advbench,
    "strongreject": load_strongreject,
    "malicious_instruct": load_malicious_instruct,
    "toxigen": load_toxigen,
    "do_not_answer": load_do_not_answer,
    "ailuminate": load_ailuminate,
    "simplesafetytests": load_simplesafetytests,
    "dices": load_dices,
    "alpaca_harmless": load_alpaca_harmless,
}
#: Sources that need no dataset folder (the project's own files under ``data/``).
OWN_LOADERS: dict[str, Callable[[], list[Row]]] = {
    "guardstream_templates": load_benign_templated,
}


# -- splits -------------------------------------------------------------------


def checked_text(row: Row) -> str:
    return normalize(row["conversation"][-1]["content"])


def side(row: Row) -> str:
    return str(row["conversation"][-1]["role"])


def build_splits(
    root: Path | None = None,
    benign_file: Path = BENIGN_FILE,
    self_harm_file: Path = SELF_HARM_FILE,
) -> dict[str, list[Row]]:
    """``{"train", "validation", "heldout"}`` rows, deterministic (see the module docstring)."""
    base = datasets_root(root)
    rows: list[Row] = []
    for loader in LOADERS.values():
        rows.extend(loader(base))
    for own in OWN_LOADERS.values():
        rows.extend(own())
    # The project's own files (SPLIT_SOURCES) are split by hash: half trained on, half
    # held out. The seed keeps its first file's name so the existing halves stay put.
    own_rows = load_benign(benign_file) + load_self_harm(self_harm_file)
    own_held = [
        stable_fraction(r["conversation_id"], _BENIGN_SEED) < BENIGN_HELDOUT_FRACTION
        for r in own_rows
    ]
    heldout = [r for r in rows if r["source"] in HELDOUT_SOURCES]
    heldout += [r for r, held in zip(own_rows, own_held, strict=True) if held]
    pool = [r for r in rows if r["source"] in TRAIN_SOURCES]
    pool += [r for r, held in zip(own_rows, own_held, strict=True) if not held]
    held_texts = {(side(r), checked_text(r)) for r in heldout}
    seen: set[tuple[str, str, str]] = set()
    train: list[Row] = []
    validation: list[Row] = []
    for r in pool:
        conv_key = json.dumps([normalize(t["content"]) for t in r["conversation"]])
        k = (side(r), conv_key, r["label"])
        if (side(r), checked_text(r)) in held_texts or k in seen:
            continue
        seen.add(k)
        frac = stable_fraction(r["conversation_id"])
        (validation if frac < VALIDATION_FRACTION else train).append(r)
    return {"train": train, "validation": validation, "heldout": heldout}


def summarize(rows: Sequence[Row]) -> dict[str, dict[str, int]]:
    """``{source: {"prompt_safe": n, "prompt_unsafe": n, "response_safe": n, ...}}``."""
    out: dict[str, Counter[str]] = {}
    for r in rows:
        kind = "prompt" if side(r) == "user" else "response"
        out.setdefault(r["source"], Counter())[f"{kind}_{r['label']}"] += 1
    return {s: dict(sorted(c.items())) for s, c in sorted(out.items())}


def iter_jsonl(rows: Iterable[Row]) -> Iterator[str]:
    for r in rows:
        yield json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n"


def write_splits(
    out_dir: Path, root: Path | None = None, hh_pairs: int = HH_HELDOUT_PAIRS
) -> dict[str, Any]:
    """Write ``train.jsonl``, ``validation.jsonl``, ``heldout.jsonl``,
    ``heldout_pairs.jsonl`` and ``manifest.json`` to ``out_dir``; returns the manifest."""
    if not 0 < hh_pairs <= HH_HELDOUT_PAIRS:  # more would reach into the training pairs
        raise ValueError(f"hh_pairs must be in 1..{HH_HELDOUT_PAIRS}, got {hh_pairs}")
    splits = build_splits(root)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        (out_dir / f"{name}.jsonl").write_text("".join(iter_jsonl(rows)), encoding="utf-8")
    pairs = load_hh_rlhf_pairs(datasets_root(root), hh_pairs)
    (out_dir / "heldout_pairs.jsonl").write_text("".join(iter_jsonl(pairs)), encoding="utf-8")
    manifest = {
        "design": {
            "train_sources": list(TRAIN_SOURCES),
            "heldout_sources": list(HELDOUT_SOURCES),
            "pair_sources": list(PAIR_SOURCES),
            "validation_fraction": VALIDATION_FRACTION,
            "benign_heldout_fraction": BENIGN_HELDOUT_FRACTION,
            "split_seed": SPLIT_SEED,
        },
        "counts": {name: summarize(rows) for name, rows in splits.items()},
        "heldout_pairs": len(pairs),
        "licenses": {s.name: s.license for s in SOURCES},
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--datasets", type=Path, default=None)
    args = parser.parse_args()
    print(json.dumps(write_splits(args.out_dir, args.datasets)["counts"], indent=2))
