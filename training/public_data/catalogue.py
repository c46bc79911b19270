"""The catalogue of public datasets: what each source is, its license, its role.

One :class:`SourceInfo` per source; the roles decide the splits
(:mod:`training.public_data.splits`) and the table in ``SOURCES.md`` is
generated from it (``python -m training.public_data.catalogue``; a test keeps
it current). Also here: where the raw copies live and the split constants.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: shared/ lies beside the repository (developers' checkouts and CI's clone alike).
DEFAULT_ROOT = Path(__file__).resolve().parents[3] / "shared" / "datasets"
DATASETS_ENV = "GUARDSTREAM_DATASETS"
WORKPLACE_ROOT = Path("/work/shared/datasets")
REPO_ROOT = Path(__file__).resolve().parents[2]
BENIGN_FILE = REPO_ROOT / "data" / "benign_hard_negatives.jsonl"
SELF_HARM_FILE = REPO_ROOT / "data" / "self_harm_intent.jsonl"
TEMPLATES_FILE = REPO_ROOT / "data" / "benign_templates.json"

VALIDATION_FRACTION = 0.15
BENIGN_HELDOUT_FRACTION = 0.5
SPLIT_SEED = "guardstream-public-v1"
HH_HELDOUT_PAIRS = 500
OWN_SPLIT_SEED = SPLIT_SEED + ":benign-heldout"

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class SourceInfo:
    name: str
    license: str
    origin: str
    # "train" | "heldout" | "eval-only" | "split" (hash-split between train and heldout)
    # | "candidate" (loaded and mapped, trained on only with ``with_candidates``)
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
        "wiki_talk",
        "Apache-2.0 (text CC-BY-SA)",
        "ipavlopoulos/context_toxicity data/CAT_LARGE/gn.csv",
        "heldout",
        "10,000 real Wikipedia talk comments at their natural base rate (0.6% toxic; "
        "toxic -> O1), rated out of context",
    ),
    SourceInfo(
        "convabuse",
        "CC-BY-4.0",
        "amandacurry/convabuse 2_splits/ConvAbuseEMNLPtest.csv",
        "heldout",
        "real users' messages to two chatbots with the two turns before; annotator "
        "majority abusive -> O1 (sexual harassment -> O2), ties dropped",
    ),
    SourceInfo(
        "coconot_contrast",
        "MIT",
        "allenai/noncompliance@25bf77c data/coconot_contrast_eval.jsonl",
        "heldout",
        "379 benign look-alike requests (GPT-4-written, human-verified), all safe",
    ),
    SourceInfo(
        "davidson",
        "MIT",
        "t-davidson/hate-speech-and-offensive-language@cb50f7e labeled_data.csv",
        "candidate",
        "8,000 of 24,783 tweets (hash sample): hate or offensive (unsafe O1) vs neither; "
        "AAE dialect over-labelled offensive (known bias)",
    ),
    SourceInfo(
        "stormfront",
        "CC-BY-SA-3.0-ES",
        "Vicomtech/hate-speech-dataset@b802137 (sentences joined with their labels)",
        "candidate",
        "white-supremacist forum sentences: hate (unsafe O1) vs noHate; relation/skip dropped",
    ),
    SourceInfo(
        "surge_toxicity",
        "MIT",
        "surge-ai/toxicity@ea80324 toxicity_en.csv",
        "candidate",
        "1,000 real comments, toxic (unsafe O1) vs not",
    ),
    SourceInfo(
        "hatemoji_build",
        "CC-BY-4.0",
        "HannahKirk/Hatemoji@a626f63 HatemojiBuild (train, validation, test)",
        "candidate",
        "adversarial emoji hate (unsafe O1) and its minimally changed non-hateful twins",
    ),
    SourceInfo(
        "toxic_spans_civil",
        "CC0-1.0",
        "ipavlopoulos/toxic_spans@beaf170 data/",
        "candidate",
        "6,000 Civil Comments posts (hash sample) that a rater majority found toxic "
        '(unsafe O1); the "not toxic" ticks are not safe labels (form design): no safe rows',
    ),
    SourceInfo(
        "reddit_cssrs",
        "CC-BY (Zenodo record)",
        "Zenodo 10.5281/zenodo.2667859 (Gaur et al.) via jahnavithutta129/Moodify@6abf56a",
        "candidate",
        "a user's posts joined (first 1,500 chars): ideation, behaviour or attempt (unsafe "
        "O6) vs supportive; indicator dropped",
    ),
    SourceInfo(
        "coconot_requests",
        "MIT",
        "allenai/noncompliance@25bf77c data/coconot_eval.jsonl",
        "candidate",
        "requests with safety concerns (dangerous topics, offensive triggers, WildChat) "
        "unsafe; misinformation, privacy, copyright dropped; non-safety noncompliance safe",
    ),
    SourceInfo(
        "jailbreak_inthewild",
        "MIT",
        "verazuo/jailbreak_llms (2023-05-07 prompts, forbidden questions) "
        "via kaif0102/Sentinel-AI-Defense-System-@d80c990",
        "candidate",
        "648 in-the-wild jailbreak prompts (unsafe); forbidden questions by policy: harmful "
        "ones unsafe (incl. 'Gov Decision' crimes, O3); privacy, lobbying, advice dropped",
    ),
    SourceInfo(
        "gptfuzz_responses",
        "MIT",
        "sherdencooper/GPTFuzz@1eddeb5 datasets/responses_labeled/train.csv",
        "candidate",
        "chatbot answers to jailbreak-wrapped harmful questions: harmful (unsafe) vs refusal, "
        "as agent turns after the question (evaluate.csv is left to bench/)",
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
#: Held-out sources of real user text at natural base rates (issue 15); reported on
#: their own, apart from the requests-versus-instructions prompt AUPRC.
REAL_TRAFFIC_SOURCES = ("wiki_talk", "convabuse", "coconot_contrast")
#: Candidate sources whose safe rows were selected or written to sit next to unsafe ones
#: (HatemojiBuild's minimally changed twins, tweets selected by a slur lexicon). They
#: train the boundary; they do not set the
#: operating point, which a 5% false-positive rate on such rows would push to where
#: most real abuse is missed (training.default_model.recipe).
NEAR_MISS_SOURCES = ("davidson", "hatemoji_build")
TRAIN_SOURCES = tuple(s.name for s in SOURCES if s.role == "train")
SPLIT_SOURCES = tuple(s.name for s in SOURCES if s.role == "split")
#: Real-world sources that joined in session 7: the shipped recipe does not train on them
#: (they did not improve the model on real traffic; model card, design table), and
#: ``build_splits(with_candidates=True)`` / ``--with-candidates`` adds them to training.
CANDIDATE_SOURCES = tuple(s.name for s in SOURCES if s.role == "candidate")
HELDOUT_SOURCES = tuple(s.name for s in SOURCES if s.role in ("heldout", "eval-only"))
#: Unlabelled preference pairs: held out by row (``heldout_pairs``), the rest trained on.
PAIR_SOURCES = tuple(s.name for s in SOURCES if s.role == "pairs")


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


#: SOURCES.md's table lies between these two lines.
TABLE_BEGIN = "<!-- sources table: generated by python -m training.public_data.catalogue -->"
TABLE_END = "<!-- end of sources table -->"
ROLE_USE = {
    "train": "training",
    "heldout": "held-out evaluation",
    "eval-only": "evaluation only, never trained on",
    "split": "half training, half held-out evaluation (hash split)",
    "candidate": "candidate training data: not in the shipped model (`--with-candidates`)",
    "pairs": f"preference pairs: {HH_HELDOUT_PAIRS} held out, the rest train a ranking term",
}


def sources_markdown() -> str:
    """The table of :data:`SOURCES` as ``SOURCES.md`` shows it."""
    lines = [
        TABLE_BEGIN,
        "| source | origin | license | use | rows |",
        "|---|---|---|---|---|",
    ]
    for s in SOURCES:
        lines.append(f"| `{s.name}` | {s.origin} | {s.license} | {ROLE_USE[s.role]} | {s.what} |")
    return "\n".join([*lines, TABLE_END])


if __name__ == "__main__":
    print(sources_markdown())
