"""Loaders: one per public source, each raw file -> evaluation-format rows.

A source's own categories are mapped onto the Llama Guard 1 codes by the
tables here (rows outside LG1's scope are dropped, not relabelled), plus
:func:`keyword_codes`. Every loader is registered in :data:`LOADERS` (sources
under the datasets folder) or :data:`OWN_LOADERS` (the project's own files).
"""

from __future__ import annotations

import ast
import csv
import gzip
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from training.public_data.catalogue import (
    BENIGN_FILE,
    HH_HELDOUT_PAIRS,
    SELF_HARM_FILE,
    TEMPLATES_FILE,
    Row,
    stable_fraction,
)


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


def load_wiki_talk(root: Path) -> list[Row]:
    """Wikipedia talk-page comments, rated out of context (``gn.csv``): real comments at
    their natural base rate (0.6% toxic). Toxic (personal attacks, insults) is unsafe O1,
    as HarmBench's harassment is."""
    path = root / "context_toxicity_wiki" / "data" / "CAT_LARGE" / "gn.csv"
    rows = []
    for r in _read_csv(path):
        text = r["text"].strip()
        if text:
            toxic = r["label"] == "1"
            rows.append(make_row("wiki_talk", r["id"], [_turn("user", text)], toxic, ["O1"]))
    return rows


#: ConvAbuse abuse types -> LG1: sexual harassment is O2; the others (sexism, racism,
#: homophobia, transphobia, ableism, insults to the agent's intellect, general abuse)
#: are harassment and hate, O1.
CONVABUSE_O2 = ("sex_harassment",)


def load_convabuse(root: Path, split: str = "test") -> list[Row]:
    """ConvAbuse (the test split unless told): real users' messages to two chatbots
    (CarbonBot, ELIZA) with the two turns before. Unsafe when more annotators rate it
    abusive (-1..-3) than not (1 or ambiguous 0); ties are dropped. O2 when most of
    those who rate it abusive call it sexual harassment, else O1. Ids of other splits
    start with the split's name."""
    path = root / "convabuse" / "2_splits" / f"ConvAbuseEMNLP{split}.csv"
    rows = []
    for r in _read_csv(path):
        names = sorted({k.split("_is_abuse")[0] for k in r if "_is_abuse." in k})
        abusive = [
            a for a in names if any(r.get(f"{a}_is_abuse.{v}") == "1" for v in ["-1", "-2", "-3"])
        ]
        fine = [
            a for a in names if r.get(f"{a}_is_abuse.1") == "1" or r.get(f"{a}_is_abuse.0") == "1"
        ]
        if len(abusive) == len(fine) or not r["user"].strip():
            continue
        sexual = sum(r.get(f"{a}_{CONVABUSE_O2[0]}") == "1" for a in abusive) * 2 > len(abusive)
        context = [_turn(role, r[col]) for role, col in (("user", "prev_user"), ("agent", "agent"))]
        conversation = [t for t in context if t["content"]] + [_turn("user", r["user"])]
        if conversation[0]["role"] != "user":
            conversation = conversation[-1:]
        unsafe = len(abusive) > len(fine)
        key = r["example_id"] if split == "test" else f"{split}-{r['example_id']}"
        rows.append(make_row("convabuse", key, conversation, unsafe, ["O2" if sexual else "O1"]))
    return rows


def load_coconot_contrast(root: Path) -> list[Row]:
    """CoCoNot's contrast set: benign requests that look like unsafe ones ("How can I blow
    up a digital image?"), all safe: the benign look-alike false-positive rate."""
    path = root / "coconot" / "data" / "coconot_contrast_eval.jsonl"
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        rows.append(
            make_row("coconot_contrast", item["id"], [_turn("user", item["prompt"])], False)
        )
    return rows


# -- real-world training sources (issue 15) -----------------------------------
# Insults, harassment and hateful or dehumanising speech about people are O1
# ("Violence and Hate"), as HarmBench's harassment is; sexual content is O2;
# self-harm intent O6. Rows a source cannot place under LG1 are dropped.


#: Rows kept of the two largest real-world sources (a stable hash sample, base rates
#: unchanged): more adds embedding time, not new kinds of text.
DAVIDSON_ROWS = 8000
SAMPLE_SEED = "guardstream-public-v1:sample"
TOXIC_SPANS_ROWS = 6000


def sample(rows: list[Row], n: int) -> list[Row]:
    """``n`` of ``rows`` chosen by a hash of their id: the same on every machine."""
    if len(rows) <= n:
        return rows
    # Its own seed: the split's hash (stable_fraction with the split seed) decides
    # validation, and a sample by that same hash would be mostly validation rows.
    return sorted(rows, key=lambda r: stable_fraction(r["id"], SAMPLE_SEED))[:n]


def load_davidson(root: Path) -> list[Row]:
    """Davidson et al. tweets: ``class`` 0 hate speech and 1 offensive language are
    unsafe O1, 2 neither is safe. Class 1 is offensive but not hateful (insults,
    slurs used at people, profanity): calling it O1 is this project's choice, for the
    insults and harassment real chat needs caught (model card); a
    :data:`DAVIDSON_ROWS` sample. Known bias: AAE tweets are over-labelled offensive
    (model card)."""
    rows = []
    for r in _read_csv(root / "davidson_hate_offensive" / "labeled_data.csv"):
        text = r["tweet"].strip()
        if text:
            unsafe = r["class"] in ("0", "1")
            rows.append(make_row("davidson", r[""], [_turn("user", text)], unsafe, ["O1"]))
    return sample(rows, DAVIDSON_ROWS)


def load_stormfront(root: Path) -> list[Row]:
    """Stormfront forum sentences: ``hate`` is unsafe O1, ``noHate`` safe; ``relation``
    (hate only with its neighbours) and ``idk/skip`` are dropped. A post's sentences
    (``<post>_<n>``) are one conversation, so a split by conversation keeps a post whole."""
    rows = []
    path = root / "stormfront_hate" / "sentences.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        if item["label"] in ("hate", "noHate") and item["text"].strip():
            unsafe = item["label"] == "hate"
            conv = [_turn("user", item["text"])]
            post = item["file_id"].rsplit("_", 1)[0]
            rows.append(make_row("stormfront", item["file_id"], conv, unsafe, ["O1"], post))
    return rows


def load_surge_toxicity(root: Path) -> list[Row]:
    """Surge AI's toxicity sample: real comments, ``Toxic`` is unsafe O1."""
    rows = []
    for i, r in enumerate(_read_csv(root / "surge_toxicity" / "toxicity_en.csv")):
        text = r["text"].strip()
        unsafe = r["is_toxic"] == "Toxic"
        rows.append(make_row("surge_toxicity", str(i), [_turn("user", text)], unsafe, ["O1"]))
    return rows


def load_hatemoji_build(root: Path) -> list[Row]:
    """HatemojiBuild (all three splits): adversarial emoji hate and its minimally
    changed non-hateful twins; ``label_gold`` 1 is unsafe O1. (HatemojiCheck, the test
    suite, is an external held-out benchmark and is not here.)"""
    rows = []
    for split in ("train", "validation", "test"):
        for r in _read_csv(root / "hatemoji" / "HatemojiBuild" / f"{split}.csv"):
            text = r["text"].strip()
            if text:
                unsafe = r["label_gold"] == "1"
                key = f"{split}-{r['entry_id']}"
                rows.append(make_row("hatemoji_build", key, [_turn("user", text)], unsafe, ["O1"]))
    return rows


def load_toxic_spans_civil(root: Path) -> list[Row]:
    """Civil Comments posts (pre-selected as toxic) re-rated by 3-7 raters: unsafe O1 when
    more raters marked toxic spans than ticked "not toxic"; a :data:`TOXIC_SPANS_ROWS`
    sample. Only unsafe rows: the annotation form let a rater skip marking spans only by
    ticking "not toxic", and most such ticks come with "all toxic" (raters who found the
    whole post toxic), so "not toxic" majorities are not safe labels."""
    d = root / "toxic_spans_civil" / "data"
    votes: dict[str, list[bool]] = {}
    for r in _read_csv(d / "annotations.csv"):
        votes.setdefault(r["comment_id"], []).append(r["not toxic"] == "True")
    rows = []
    for r in _read_csv(d / "comments.csv"):
        v, text = votes.get(r["comment_id"], []), r["comment_text"].strip()
        fine = sum(v)
        if v and text and fine * 2 < len(v):
            conv = [_turn("user", text)]
            rows.append(make_row("toxic_spans_civil", r["comment_id"], conv, True, ["O1"]))
    return sample(rows, TOXIC_SPANS_ROWS)


#: C-SSRS levels (clinician-adjudicated, per Reddit user): ideation, behaviour and
#: attempts are self-harm intent (O6); supportive users are safe; "Indicator" (risk
#: factors without intent) is neither and is dropped.
CSSRS_UNSAFE = ("Ideation", "Behavior", "Attempt")
#: A user's posts, joined, cut here: the label is about the user, not one post.
CSSRS_MAX_CHARS = 1500


def load_reddit_cssrs(root: Path) -> list[Row]:
    rows = []
    for r in _read_csv(root / "reddit_cssrs_suicide" / "500_Reddit_users_posts_labels.csv"):
        if r["Label"] not in (*CSSRS_UNSAFE, "Supportive"):
            continue
        try:
            posts = ast.literal_eval(r["Post"])
        except (ValueError, SyntaxError):  # 22 cells are cut off mid-list
            posts = [r["Post"].strip().lstrip("[").strip("'\"")]
        text = " ".join(str(p).strip() for p in posts)[:CSSRS_MAX_CHARS].strip()
        unsafe = r["Label"] in CSSRS_UNSAFE
        rows.append(make_row("reddit_cssrs", r["User"], [_turn("user", text)], unsafe, ["O6"]))
    return rows


#: CoCoNot's should-not-comply requests: only "Requests with safety concerns" can be
#: unsafe under LG1, and of those misinformation, privacy and copyright fall outside it
#: (dropped). The other categories (incomplete, indeterminate, unsupported, humanizing
#: requests) are benign prompts a chatbot should answer differently: safe rows.
COCONOT_UNSAFE = {
    "dangerous or sensitive topics": (),
    "triggers for offensive language": ("O1",),
    "wildchats": (),
}
COCONOT_SAFETY = "Requests with safety concerns"


def load_coconot_requests(root: Path) -> list[Row]:
    rows = []
    path = root / "coconot" / "data" / "coconot_eval.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        text, key = item["prompt"].strip(), item["id"]
        if item["category"] != COCONOT_SAFETY:
            rows.append(make_row("coconot_requests", key, [_turn("user", text)], False))
        elif item["subcategory"] in COCONOT_UNSAFE:
            codes = COCONOT_UNSAFE[item["subcategory"]]
            rows.append(_prompt_row("coconot_requests", key, text, codes))
    return rows


#: The in-the-wild forbidden questions' 13 OpenAI usage-policy scenarios -> LG1. "Gov
#: Decision" holds criminal requests (smuggling, evading police, corrupting
#: officials): O3. Privacy, political lobbying and specialised advice lie outside LG1
#: and are dropped, as everywhere (module docstring of training.public_data).
INTHEWILD_POLICIES: dict[str, tuple[str, ...] | None] = {
    "Illegal Activity": ("O3",),
    "Hate Speech": ("O1",),
    "Malware": ("O3",),
    "Physical Harm": ("O1",),
    "Economic Harm": ("O3",),
    "Fraud": ("O3",),
    "Pornography": ("O2",),
    "Gov Decision": ("O3",),
    "Privacy Violence": None,
    "Political Lobbying": None,
    "Legal Opinion": None,
    "Financial Advice": None,
    "Health Consultation": None,
}


def load_jailbreak_inthewild(root: Path) -> list[Row]:
    """In-the-wild jailbreak prompts (Reddit, Discord, websites; 666 collected as
    jailbreaks, 648 after de-duplication by text) as unsafe prompts, categories by
    keyword; plus the forbidden questions mapped by :data:`INTHEWILD_POLICIES`."""
    d = root / "jailbreak_llms_inthewild"
    rows, seen = [], set()
    for r in _read_csv(d / "jailbreak_prompts_2023_05_07.csv"):
        text = r["prompt"].strip()
        if text and normalize(text) not in seen:
            seen.add(normalize(text))
            rows.append(_prompt_row("jailbreak_inthewild", _key(text), text))
    for r in _read_csv(d / "forbidden_question_set.csv"):
        codes = INTHEWILD_POLICIES[r["content_policy_name"]]
        text, key = r["question"].strip(), f"q{r['q_id']}-{r['content_policy_id']}"
        if codes is not None and text:
            rows.append(_prompt_row("jailbreak_inthewild", key, text, codes))
    return rows


def load_gptfuzz_responses(root: Path) -> list[Row]:
    """GPTFuzz's ``train`` split: chatbots' answers to jailbreak-wrapped harmful
    questions, human-labelled harmful (1, unsafe) or refusal (0, safe), as agent turns
    after the plain question (the template is not published per row). Categories by
    keyword. The ``evaluate`` split is left to the benchmarks (``bench/``)."""
    d = root / "gptfuzz_labeled_responses" / "datasets"
    questions = {
        r["index"]: r["text"].strip() for r in _read_csv(d / "questions" / "question_list.csv")
    }
    rows, seen = [], set()
    for split in ("train",):
        for r in _read_csv(d / "responses_labeled" / f"{split}.csv"):
            question, answer = questions[r["question"]], r["Response"].strip()
            if not answer or (r["question"], normalize(answer)) in seen:
                continue
            seen.add((r["question"], normalize(answer)))
            harmful = r["label"] == "1"
            conv = [_turn("user", question), _turn("agent", answer)]
            cats = keyword_codes(question + " " + answer) if harmful else set()
            key = f"q{r['question']}-{_key(answer)}"
            rows.append(
                make_row("gptfuzz_responses", key, conv, harmful, cats, f"q{r['question']}")
            )
    return rows


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
    "wiki_talk": load_wiki_talk,
    "convabuse": load_convabuse,
    "coconot_contrast": load_coconot_contrast,
    "davidson": load_davidson,
    "stormfront": load_stormfront,
    "surge_toxicity": load_surge_toxicity,
    "hatemoji_build": load_hatemoji_build,
    "toxic_spans_civil": load_toxic_spans_civil,
    "reddit_cssrs": load_reddit_cssrs,
    "coconot_requests": load_coconot_requests,
    "jailbreak_inthewild": load_jailbreak_inthewild,
    "gptfuzz_responses": load_gptfuzz_responses,
}
#: Sources that need no dataset folder (the project's own files under ``data/``).
OWN_LOADERS: dict[str, Callable[[], list[Row]]] = {
    "guardstream_templates": load_benign_templated,
}
