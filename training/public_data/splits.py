"""Splits, deterministic and held out by source: ``train``, ``validation``, ``heldout``.

See :mod:`training.public_data` for the design. ``python -m
training.public_data.splits OUT_DIR`` writes them as JSONL.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from training.public_data.catalogue import (
    BENIGN_FILE,
    BENIGN_HELDOUT_FRACTION,
    CANDIDATE_SOURCES,
    HELDOUT_SOURCES,
    HH_HELDOUT_PAIRS,
    OWN_SPLIT_SEED,
    PAIR_SOURCES,
    SELF_HARM_FILE,
    SOURCES,
    SPLIT_SEED,
    TRAIN_SOURCES,
    VALIDATION_FRACTION,
    Row,
    datasets_root,
    stable_fraction,
)
from training.public_data.loaders import (
    LOADERS,
    OWN_LOADERS,
    load_benign,
    load_hh_rlhf_pairs,
    load_self_harm,
    normalize,
)


def overlap_key(row: Row) -> str:
    """The checked text without case, punctuation or spacing: a training row with the
    key of a held-out row ("Good." and "good", "I'm a bitch" and "i m a bitch") is
    removed from training."""
    return " ".join(re.sub(r"[^\w\s]", " ", row["conversation"][-1]["content"].lower()).split())


def side(row: Row) -> str:
    return str(row["conversation"][-1]["role"])


def build_splits(
    root: Path | None = None,
    benign_file: Path = BENIGN_FILE,
    self_harm_file: Path = SELF_HARM_FILE,
    with_candidates: bool = False,
) -> dict[str, list[Row]]:
    """``{"train", "validation", "heldout"}`` rows, deterministic (see the module docstring).

    ``with_candidates``: the candidate sources (``CANDIDATE_SOURCES``) join the
    training pool (train and validation by the same hash)."""
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
        stable_fraction(r["conversation_id"], OWN_SPLIT_SEED) < BENIGN_HELDOUT_FRACTION
        for r in own_rows
    ]
    heldout = [r for r in rows if r["source"] in HELDOUT_SOURCES]
    heldout += [r for r, held in zip(own_rows, own_held, strict=True) if held]
    trained = TRAIN_SOURCES + (CANDIDATE_SOURCES if with_candidates else ())
    pool = [r for r in rows if r["source"] in trained]
    pool += [r for r, held in zip(own_rows, own_held, strict=True) if not held]
    held_texts = {(side(r), overlap_key(r)) for r in heldout}
    seen: set[tuple[str, str, str]] = set()
    train: list[Row] = []
    validation: list[Row] = []
    for r in pool:
        conv_key = json.dumps([normalize(t["content"]) for t in r["conversation"]])
        k = (side(r), conv_key, r["label"])
        if (side(r), overlap_key(r)) in held_texts or k in seen:
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
    out_dir: Path,
    root: Path | None = None,
    hh_pairs: int = HH_HELDOUT_PAIRS,
    with_candidates: bool = False,
) -> dict[str, Any]:
    """Write ``train.jsonl``, ``validation.jsonl``, ``heldout.jsonl``,
    ``heldout_pairs.jsonl`` and ``manifest.json`` to ``out_dir``; returns the manifest."""
    if not 0 < hh_pairs <= HH_HELDOUT_PAIRS:  # more would reach into the training pairs
        raise ValueError(f"hh_pairs must be in 1..{HH_HELDOUT_PAIRS}, got {hh_pairs}")
    splits = build_splits(root, with_candidates=with_candidates)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        (out_dir / f"{name}.jsonl").write_text("".join(iter_jsonl(rows)), encoding="utf-8")
    pairs = load_hh_rlhf_pairs(datasets_root(root), hh_pairs)
    (out_dir / "heldout_pairs.jsonl").write_text("".join(iter_jsonl(pairs)), encoding="utf-8")
    manifest = {
        "design": {
            "train_sources": list(TRAIN_SOURCES + (CANDIDATE_SOURCES if with_candidates else ())),
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

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--datasets", type=Path, default=None)
    args = parser.parse_args()
    print(json.dumps(write_splits(args.out_dir, args.datasets)["counts"], indent=2))
