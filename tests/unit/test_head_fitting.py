"""Pure logic of the default model's head fitting: the threshold rule and the
response head's ranking term (no encoder, synthetic embeddings)."""

from __future__ import annotations

import numpy as np
import pytest

from guard.encoder import sigmoid
from training.default_model.thresholds import pick_threshold, source_thresholds
from training.encoder_head import fit_binary, fit_binary_ranked


def test_threshold_is_the_lowest_with_pooled_fpr_at_most_the_target() -> None:
    labels = np.array([False] * 100 + [True] * 10)
    safe = np.linspace(0.0, 0.99, 100)  # FPR at t is about 1 - t
    scores = np.concatenate([safe, np.full(10, 0.99)])
    t = pick_threshold(labels, scores, 0.05)
    assert (safe >= t).mean() <= 0.05
    assert (safe >= t - 0.01).mean() > 0.05


def test_each_safe_source_must_meet_the_fpr_not_only_the_pool() -> None:
    # 300 easy safe rows near 0, 30 hard ones spread over [0, 0.9]: pooled, the hard
    # rows are diluted (9% of the pool), so a low threshold passes the 5% check.
    easy, hard = np.full(300, 0.02), np.linspace(0.0, 0.9, 30)
    scores = np.concatenate([easy, hard, np.full(20, 0.95)])
    labels = np.array([False] * 330 + [True] * 20)
    sources = np.array(["easy"] * 300 + ["hard"] * 30 + ["unsafe"] * 20)
    pooled = pick_threshold(labels, scores, 0.05)
    per_source = pick_threshold(labels, scores, 0.05, sources)
    assert per_source > pooled
    assert (hard >= per_source).mean() <= 0.05
    assert (hard >= pooled).mean() > 0.05
    # 1,000 more easy rows lower the pooled threshold but not the per-source one.
    more = np.concatenate([np.full(1000, 0.02), scores])
    more_labels = np.concatenate([np.zeros(1000, bool), labels])
    more_sources = np.concatenate([np.array(["easy"] * 1000), sources])
    assert pick_threshold(more_labels, more, 0.05, more_sources) == per_source
    assert pick_threshold(more_labels, more, 0.05) < pooled
    assert source_thresholds(labels, scores, 0.05, sources) == {"easy": 0.05, "hard": per_source}


def test_sources_with_few_safe_rows_do_not_set_the_threshold() -> None:
    scores = np.concatenate([np.full(100, 0.02), [0.9, 0.9], np.full(10, 0.95)])
    labels = np.array([False] * 102 + [True] * 10)
    sources = np.array(["big"] * 100 + ["tiny"] * 2 + ["u"] * 10)
    assert pick_threshold(labels, scores, 0.05, sources, min_rows=20) == 0.05
    assert pick_threshold(labels, scores, 0.05, sources, min_rows=2) > 0.9


def _rows(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Labelled rows separated on feature 0 only, off-centre so the bias is far from 0;
    feature 1 is noise."""
    y = rng.random(n) < 0.5
    x = rng.normal(0, 0.3, (n, 2))
    x[:, 0] += np.where(y, 3.0, 1.0)
    return x, y


def _pairs(rng: np.random.Generator, n: int) -> np.ndarray:
    """[n, 2, 2]: the more harmful answer is higher on feature 1, by varying amounts."""
    less = rng.normal(0, 0.3, (n, 2))
    more = less + np.stack([rng.normal(0, 0.1, n), rng.uniform(0.1, 1.0, n)], axis=1)
    return np.stack([less, more], axis=1)


def _stated_objective_minimum(
    x: np.ndarray, y: np.ndarray, c: float, w: np.ndarray, pairs: np.ndarray, pw: float
) -> np.ndarray:
    """``[w..., b]`` minimising the objective the docstring states, directly:
    C * (sum_i w_i * logloss_i + pw * sum(w) / P * sum_p softplus(-coef . d_p))
    + |coef|^2 / 2 + (b / bias_feature)^2 / 2."""
    from scipy.optimize import minimize

    from training.encoder_head import BIAS_FEATURE

    d = pairs[:, 1] - pairs[:, 0]
    sign = np.where(y, 1.0, -1.0)

    def f(theta: np.ndarray) -> float:
        coef, b = theta[:-1], theta[-1]
        rows = np.logaddexp(0.0, -sign * (x @ coef + b)) @ w
        ranks = np.logaddexp(0.0, -(d @ coef)).sum() * pw * w.sum() / len(d)
        return float(c * (rows + ranks) + coef @ coef / 2 + (b / BIAS_FEATURE) ** 2 / 2)

    return minimize(f, np.zeros(x.shape[1] + 1), method="BFGS", options={"gtol": 1e-8}).x


def test_ranked_fit_minimises_the_stated_objective() -> None:
    rng = np.random.default_rng(0)
    x, y = _rows(rng, 300)
    w = rng.uniform(0.5, 2.0, len(x))
    pairs = _pairs(rng, 120)
    ranked = fit_binary_ranked(x, y, 1.0, w, pairs, pair_weight=0.5)
    got = np.concatenate([ranked.weights[0][:, 0], ranked.biases[0]])
    want = _stated_objective_minimum(x, y, 1.0, w, pairs, 0.5)
    assert abs(want[-1]) > 1.0  # the bias matters in this problem
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)
    # The pairs' weight is a total: the same pairs twice over give the same fit.
    twice = fit_binary_ranked(x, y, 1.0, w, np.concatenate([pairs, pairs]), pair_weight=0.5)
    np.testing.assert_allclose(twice(x.astype(np.float32)), ranked(x.astype(np.float32)), atol=1e-3)


def test_ranking_pairs_teach_what_labelled_rows_do_not() -> None:
    rng = np.random.default_rng(0)
    x, y = _rows(rng, 400)
    w = np.ones(len(x))
    pairs = _pairs(rng, 200)  # the labels never show feature 1
    plain = fit_binary(x, y, 1.0, w)
    ranked = fit_binary_ranked(x, y, 1.0, w, pairs, pair_weight=0.5)
    assert abs(float(plain.weights[0][1, 0])) < 0.5
    assert float(ranked.weights[0][1, 0]) > 1.0
    # The pairs reorder without breaking the labelled task: the rows stay separated
    # and the bias still puts the boundary between the classes.
    p = sigmoid(ranked(x.astype(np.float32))[:, 0])
    assert ((p >= 0.5) == y).mean() > 0.95


def test_ranking_without_pair_weight_is_plain_logistic_regression() -> None:
    rng = np.random.default_rng(1)
    x, y = _rows(rng, 300)
    w = np.ones(len(x))
    pairs = np.stack([x[:5], x[5:10]], axis=1)
    plain = fit_binary(x, y, 1.0, w)
    ranked = fit_binary_ranked(x, y, 1.0, w, pairs, pair_weight=0.0)
    xs = x.astype(np.float32)
    # Equal up to the small L2 penalty on the bias (sklearn leaves its intercept free).
    np.testing.assert_allclose(ranked(xs), plain(xs), rtol=0.02, atol=0.02)


def test_ranking_pairs_must_be_p_by_2_by_d_and_not_empty() -> None:
    x, y = _rows(np.random.default_rng(2), 50)
    with pytest.raises(ValueError, match="pairs must be"):
        fit_binary_ranked(x, y, 1.0, np.ones(50), np.zeros((5, 2)), 0.5)
    with pytest.raises(ValueError, match="no pairs"):
        fit_binary_ranked(x, y, 1.0, np.ones(50), np.zeros((0, 2, 2)), 0.5)


def test_near_miss_sources_do_not_set_the_threshold() -> None:
    """A source whose safe rows were chosen to look unsafe (minimal-pair twins) would set
    a high threshold; excluded, the other sources set it."""
    labels = np.array([False] * 40 + [True] * 10)
    scores = np.concatenate([np.full(20, 0.30), np.full(20, 0.90), np.full(10, 0.95)])
    sources = np.array(["chat"] * 20 + ["twins"] * 20 + ["chat"] * 10)
    assert pick_threshold(labels, scores, 0.05, sources) == 0.91
    assert pick_threshold(labels, scores, 0.05, sources, exclude=("twins",)) == 0.31
    assert source_thresholds(labels, scores, 0.05, sources, exclude=("twins",)) == {"chat": 0.31}
    with pytest.raises(ValueError):
        pick_threshold(labels, scores, 0.05, sources, exclude=("chat", "twins"))


def test_threshold_edge_cases() -> None:
    labels = np.array([False] * 30 + [True])
    high = np.concatenate([np.full(30, 0.995), [1.0]])
    assert pick_threshold(labels, high, 0.05) == 0.99  # nothing meets it: the top of the grid
    with pytest.raises(ValueError, match="no safe rows"):
        pick_threshold(np.ones(5, bool), np.ones(5), 0.05)
    # A plain list of source names works, and a too-small source leaves the pool.
    names = ["a"] * 30 + ["b"]
    assert source_thresholds(labels, np.zeros(31), 0.05, names) == {"a": 0.05}


def test_adapter_rows_cap_each_source_label_and_side_by_hash() -> None:
    from training.default_model.recipe import adapter_rows

    def row(i: int, source: str, label: str, role: str = "user") -> dict[str, object]:
        conv = [{"role": "user", "content": "q"}, {"role": "agent", "content": "a"}]
        return {
            "id": f"{source}:{label}:{role}{i}",
            "source": source,
            "label": label,
            "conversation": conv if role == "agent" else conv[:1],
        }

    rows = [row(i, "big", "safe") for i in range(50)] + [row(i, "big", "unsafe") for i in range(3)]
    rows += [row(i, "big", "safe", "agent") for i in range(7)]
    kept = adapter_rows(rows, cap=5)
    groups = [(r["source"], r["label"], r["conversation"][-1]["role"]) for r in kept]
    assert sorted(set(groups)) == [
        ("big", "safe", "agent"),
        ("big", "safe", "user"),
        ("big", "unsafe", "user"),
    ]
    assert (
        groups.count(("big", "safe", "user")) == 5 and groups.count(("big", "unsafe", "user")) == 3
    )
    assert adapter_rows(list(reversed(rows)), cap=5) == kept  # by hash, not by input order


def test_prompt_auprc_keeps_its_definition_and_real_traffic_is_reported_apart() -> None:
    """Adding the real-traffic held-out sources must not change what ``prompt_auprc``
    measures (written requests against everyday instructions): a rebuild's number then
    compares with the model card's."""
    from guard.scoring import GuardResult
    from training.default_model.evaluation import evaluate

    def row(i: int, source: str, unsafe: bool, score: float) -> dict[str, object]:
        text = f"{source} {i} {score}"
        return {
            "id": f"{source}:{i}",
            "source": source,
            "conversation": [{"role": "user", "content": text}],
            "label": "unsafe" if unsafe else "safe",
            "categories": [],
        }

    rows = [row(i, "ailuminate", True, 0.9) for i in range(5)]
    rows += [row(i, "alpaca_harmless", False, 0.1) for i in range(5)]
    # real traffic: toxic comments ranked below benign ones
    rows += [row(i, "wiki_talk", True, 0.2) for i in range(2)]
    rows += [row(i, "wiki_talk", False, 0.8) for i in range(8)]

    class Scores:
        def score(self, requests: list[object]) -> list[GuardResult]:
            out = []
            for r in requests:
                p = float(r.turns[-1].content.rsplit(" ", 1)[1])  # type: ignore[attr-defined]
                out.append(GuardResult(p, p >= 0.5, ()))
            return out

    report = evaluate(Scores(), rows, [], 0.5)  # type: ignore[arg-type]
    assert report["prompt_auprc"] == 1.0  # requests vs instructions: perfectly ranked
    assert report["real_traffic_prompt_auprc"] < 0.3  # toxic comments ranked last
    assert (
        report["prompt_auprc"] > report["all_prompts_auprc"] > report["real_traffic_prompt_auprc"]
    )
    assert report["by_source"]["wiki_talk"]["prompt_fpr"] == 1.0
