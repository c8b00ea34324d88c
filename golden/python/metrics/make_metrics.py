"""Metric cases for `mgca parity metrics` and the metrics module, computed by scikit-learn
(AUROC, accuracy), NumPy (bootstrap draws and percentiles) and a direct O(m·n) DeLong.

Run once: `python3 golden/python/metrics/make_metrics.py` (scikit-learn 1.9.1, NumPy 2.4.6).
Writes `golden/python/metrics/case_*.safetensors`; each file holds the inputs under their
`parity metrics` names and scikit-learn's outputs under the output names, so the CLI and the
tests compare against them. `bootstrap_delong.json` holds the statistics cases.
"""
import json
import os

import numpy as np
from safetensors.numpy import save_file
from scipy.stats import norm
from sklearn.metrics import accuracy_score, roc_auc_score

HERE = os.path.dirname(os.path.abspath(__file__))


def auroc_case(rng, n, c, positive_rate, levels):
    """Scores quantised to `levels` values (ties) and labels with a given positive rate."""
    labels = (rng.random((n, c)) < positive_rate).astype(np.float32)
    for k in range(c):  # every class needs both values
        labels[0, k], labels[1, k] = 1.0, 0.0
    signal = labels * rng.uniform(0.2, 1.5, size=(1, c))
    scores = 1 / (1 + np.exp(-(signal + rng.normal(size=(n, c)))))
    if levels:
        scores = np.round(scores * levels) / levels
    scores = scores.astype(np.float32)
    per_class = np.array([roc_auc_score(labels[:, k], scores[:, k]) for k in range(c)], dtype=np.float32)
    return {
        "auroc.scores": scores,
        "auroc.labels": labels,
        "auroc.per_class": per_class,
        "auroc.macro": np.array(roc_auc_score(labels, scores, average="macro") if c > 1 else per_class[0], dtype=np.float32),
    }


def accuracy_case(rng, n, c, levels):
    labels = rng.integers(0, c, size=n).astype(np.int64)
    logits = rng.normal(size=(n, c)) + 0.8 * np.eye(c)[labels]
    if levels:
        logits = np.round(logits * levels) / levels  # ties: the first maximum wins, as argmax
    scores = logits.astype(np.float32)
    pred = scores.argmax(axis=1)
    return {
        "accuracy.scores": scores,
        "accuracy.labels": labels,
        "accuracy": np.array(accuracy_score(labels, pred), dtype=np.float32),
    }


def delong_direct(a, b, y):
    """DeLong's structural components by their definition, pair by pair."""
    def comps(s):
        x, z = s[y == 1].astype(np.float64), s[y == 0].astype(np.float64)
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)
    (aa, a10, a01), (ab, b10, b01) = comps(a), comps(b)
    m, n = len(a10), len(a01)
    s10, s01 = np.cov(np.vstack([a10, b10])), np.cov(np.vstack([a01, b01]))
    c = np.array([1.0, -1.0])
    var = c @ (s10 / m + s01 / n) @ c
    z = (aa - ab) / np.sqrt(var)
    return {"auroc_a": aa, "auroc_b": ab, "variance": var, "z": z, "p": 2 * (1 - norm.cdf(abs(z)))}


def bootstrap(y, s, seed, resamples, level):
    rng = np.random.RandomState(seed)
    values, skipped = [], 0
    for _ in range(resamples):
        idx = rng.randint(0, len(y), size=len(y))
        if y[idx].min() == y[idx].max():
            skipped += 1
            continue
        values.append(roc_auc_score(y[idx], s[idx]))
    tail = (1 - level) / 2 * 100
    return {"seed": seed, "resamples": resamples, "level": level,
            "estimate": roc_auc_score(y, s), "low": np.percentile(values, tail),
            "high": np.percentile(values, 100 - tail), "used": len(values), "skipped": skipped}


def main():
    rng = np.random.default_rng(20221201)
    cases = {
        "case_chexpert_like": {**auroc_case(rng, 300, 5, 0.3, 20), **accuracy_case(rng, 300, 5, 0)},
        "case_rsna_imbalanced": {**auroc_case(rng, 500, 1, 0.05, 0), **accuracy_case(rng, 500, 2, 4)},
        "case_covidx_ties": {**auroc_case(rng, 120, 3, 0.5, 4), **accuracy_case(rng, 120, 3, 2)},
    }
    for name, tensors in cases.items():
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, os.path.join(HERE, f"{name}.safetensors"))

    y = (rng.random(200) < 0.35).astype(np.float32)
    a = np.round(1 / (1 + np.exp(-(1.2 * y + rng.normal(size=200)))) * 30) / 30
    b = np.round(1 / (1 + np.exp(-(0.5 * y + rng.normal(size=200)))) * 30) / 30
    a, b = a.astype(np.float32), b.astype(np.float32)
    stats = {
        "labels": y.tolist(), "scores_a": a.tolist(), "scores_b": b.tolist(),
        "delong": {k: float(v) for k, v in delong_direct(a, b, y).items()},
        "bootstrap": {k: float(v) for k, v in bootstrap(y, a, 7, 300, 0.95).items()},
    }
    with open(os.path.join(HERE, "bootstrap_delong.json"), "w") as f:
        json.dump(stats, f, indent=1)


if __name__ == "__main__":
    main()
