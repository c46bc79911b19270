"""Training the heads of an ``encoder-head`` guard (see :mod:`guard.encoder`).

The encoder is frozen, so training is: embed every row once (the same view
code as serving), then fit small scikit-learn models on the embeddings and
export their weights as plain arrays (:class:`guard.encoder.Heads`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from guard.conversation import Role, Turn, parse_turns
from guard.encoder import Dense, Heads, SentenceEncoder
from guard.scoring import length_batches
from guard.taxonomy import LLAMA_GUARD_1

Row = dict[str, Any]


def row_turns(row: Row) -> tuple[Turn, ...]:
    return parse_turns(row["conversation"])


def row_side(row: Row) -> Role:
    return row_turns(row)[-1].role


def embed_rows(
    encoder: SentenceEncoder,
    rows: Sequence[Row],
    max_batch: int = 64,
    max_tokens: int = 8192,
    cache_dir: Path | None = None,
) -> np.ndarray:
    """[N, D] embeddings of the rows' checked turns, as the served model computes them.

    With ``cache_dir``, each embedding is kept under a hash of its encoder input
    (token ids), so re-runs and other experiments only embed what is new.
    """
    inputs = [encoder.view_ids(row_turns(r), row_side(r)) for r in rows]
    keys = [hashlib.sha1(np.asarray(x, np.int32).tobytes()).hexdigest() for x in inputs]
    cache: dict[str, np.ndarray] = {}
    cache_file = cache_dir / "embeddings.npz" if cache_dir else None
    if cache_file and cache_file.exists():
        with np.load(cache_file) as data:
            cache = {k: data[k] for k in data.files}
    todo = [i for i, k in enumerate(keys) if k not in cache]
    for chunk in length_batches([len(inputs[i]) for i in todo], max_batch, max_tokens):
        idx = [todo[j] for j in chunk]
        for i, e in zip(idx, encoder.embed([inputs[i] for i in idx]), strict=True):
            cache[keys[i]] = e
    if cache_file and todo:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache_file, **cache)  # type: ignore[arg-type]
    if not rows:
        return np.zeros((0, 0), np.float32)
    return np.stack([cache[k] for k in keys]).astype(np.float32)


def logistic_dense(model: Any) -> Dense:
    """A fitted sklearn ``LogisticRegression`` (or ``MLPClassifier``) as a :class:`Dense`."""
    if hasattr(model, "coefs_"):
        return Dense(
            tuple(np.asarray(w, np.float32) for w in model.coefs_),
            tuple(np.asarray(b, np.float32) for b in model.intercepts_),
        )
    w = np.asarray(model.coef_, np.float32).T  # [D, K]
    b = np.asarray(model.intercept_, np.float32)
    return Dense((w,), (b,))


def fit_binary(
    x: np.ndarray, y: np.ndarray, c: float, weight: np.ndarray | None = None, seed: int = 0
) -> Dense:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=5000, random_state=seed)
    model.fit(x, y, sample_weight=weight)
    return logistic_dense(model)


BIAS_FEATURE = 10.0


def fit_binary_ranked(
    x: np.ndarray,
    y: np.ndarray,
    c: float,
    weight: np.ndarray,
    pairs: np.ndarray,
    pair_weight: float,
) -> Dense:
    """Logistic regression on labelled rows plus a ranking term on unlabelled pairs.

    ``pairs`` is ``[P, 2, D]``: for each pair the embedding of the less harmful
    answer, then of the more harmful one. The ranking term is the logistic loss of
    ``w . (more - less)``, i.e. of the more harmful answer scoring higher; it has
    no bias. All pairs together carry ``pair_weight`` times the rows' total weight.

    One scikit-learn fit: each labelled row gets an extra constant feature that
    stands in for the bias (``fit_intercept=False``); each pair difference enters
    twice, as ``(d, 0) -> 1`` and ``(-d, 0) -> 0``, which is the same loss counted
    twice, so each copy gets half the pair's weight. The constant is large
    (``BIAS_FEATURE``) so that the L2 penalty on its weight barely touches the bias.
    """
    from sklearn.linear_model import LogisticRegression

    if pairs.ndim != 3 or pairs.shape[1] != 2 or pairs.shape[2] != x.shape[1]:
        raise ValueError(f"pairs must be [P, 2, {x.shape[1]}], got {list(pairs.shape)}")
    if len(pairs) == 0:
        raise ValueError("no pairs: use fit_binary")
    d = pairs[:, 1] - pairs[:, 0]
    rows = np.hstack([x, np.full((len(x), 1), BIAS_FEATURE)])
    diffs = np.hstack([np.vstack([d, -d]), np.zeros((2 * len(d), 1))])
    each = pair_weight * float(weight.sum()) / (2 * len(d))
    model = LogisticRegression(C=c, max_iter=5000, fit_intercept=False)
    model.fit(
        np.vstack([rows, diffs]),
        np.concatenate([y, np.ones(len(d), bool), np.zeros(len(d), bool)]),
        sample_weight=np.concatenate([weight, np.full(2 * len(d), each)]),
    )
    coef = model.coef_[0]
    return Dense(
        (coef[:-1, None].astype(np.float32),),
        (np.array([coef[-1] * BIAS_FEATURE], np.float32),),
    )


def fit_categories(
    x: np.ndarray, labels: Sequence[Sequence[str]], c: float, codes: Sequence[str]
) -> Dense:
    """One-vs-rest logistic heads, one per code, fitted on unsafe rows with categories.

    A code without any positive row gets a head that always says "no" (logit -10).
    """
    from sklearn.linear_model import LogisticRegression

    ws, bs = [], []
    for code in codes:
        y = np.array([code in cats for cats in labels])
        if y.all() or not y.any():
            ws.append(np.zeros(x.shape[1], np.float32))
            bs.append(-10.0 if not y.any() else 10.0)
            continue
        m = LogisticRegression(C=c, max_iter=5000, class_weight="balanced")
        m.fit(x, y)
        ws.append(m.coef_[0].astype(np.float32))
        bs.append(float(m.intercept_[0]))
    return Dense((np.stack(ws, axis=1),), (np.array(bs, np.float32),))


def make_heads(prompt: Dense, response: Dense, categories: Dense) -> Heads:
    return Heads(prompt, response, categories, LLAMA_GUARD_1.codes)
