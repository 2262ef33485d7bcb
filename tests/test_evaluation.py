"""Evaluation pieces on known inputs: the linear probe against scikit-learn's logistic
regression, the collapse diagnostics against their definitions, the collapse warning, and
logger failures that must not stop training."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from lightning_fabric.loggers import CSVLogger, TensorBoardLogger

from twinfold.evaluation.health import CollapseWatch, embedding_std, health_metrics, rankme
from twinfold.evaluation.linear import linear_probe
from twinfold.metric_sinks import MetricSinks


def _blobs(n: int, classes: int = 4, dim: int = 8, spread: float = 0.3, noise_seed: int = 0):
    """Gaussian blobs around fixed centres; ``noise_seed`` draws a new sample of them."""
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(0)) * 3
    labels = torch.arange(n) % classes
    noise = torch.randn(n, dim, generator=torch.Generator().manual_seed(100 + noise_seed))
    return centres[labels] + spread * noise, labels


# ---------------------------------------------------------------- linear probe
def test_linear_probe_separable_is_perfect_and_shuffled_is_near_chance() -> None:
    x, y = _blobs(400)
    xt, yt = _blobs(200, noise_seed=1)
    assert linear_probe(x, y, xt, yt).top1 == 1.0
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]
    chance = linear_probe(x[:300], shuffled[:300], x[300:], shuffled[300:]).top1
    assert chance < 0.45  # 4 classes: chance is 0.25


def test_linear_probe_matches_sklearn_logistic_regression() -> None:
    """The same objective (mean CE + wd/2 ||W||^2 on standardised features) solved by
    scikit-learn: C = 1 / (n * wd). Predicted classes and probabilities agree."""
    sklearn_lm = pytest.importorskip("sklearn.linear_model")
    x, y = _blobs(300, classes=3, dim=6, spread=4.0)
    xt, yt = _blobs(300, classes=3, dim=6, spread=4.0, noise_seed=1)
    wd = 0.05
    ours = linear_probe(x, y, xt, yt, weight_decay=wd, max_iter=500)
    mean, std = x.double().mean(0), x.double().std(0)
    ref = sklearn_lm.LogisticRegression(C=1 / (len(x) * wd), tol=1e-10, max_iter=5000)
    ref.fit(((x.double() - mean) / std).numpy(), y.numpy())
    ref_acc = (ref.predict(((xt.double() - mean) / std).numpy()) == yt.numpy()).mean()
    assert ours.top1 == pytest.approx(ref_acc, abs=1e-9)
    ref_proba = torch.from_numpy(ref.predict_proba(((xt.double() - mean) / std).numpy()))
    torch.testing.assert_close(ours.probabilities(xt), ref_proba, atol=1e-4, rtol=0)
    assert 0.5 < ours.top1 < 0.99  # overlapping classes: a non-trivial comparison


def test_linear_probe_needs_two_classes() -> None:
    x, _ = _blobs(10)
    with pytest.raises(ValueError, match="two classes"):
        linear_probe(x, torch.zeros(10, dtype=torch.long), x, torch.zeros(10))


# ---------------------------------------------------------------- health metrics
def test_embedding_std_is_zero_when_collapsed_and_one_over_sqrt_dim_when_spread() -> None:
    dim = 256
    collapsed = torch.ones(512, dim) * torch.randn(1, dim)
    assert embedding_std(collapsed).item() == pytest.approx(0.0, abs=1e-6)
    spread = torch.randn(4096, dim, generator=torch.Generator().manual_seed(0))
    assert embedding_std(spread).item() * math.sqrt(dim) == pytest.approx(1.0, abs=0.02)


def test_rankme_follows_eq_1() -> None:
    assert rankme(torch.eye(16)).item() == pytest.approx(16.0, rel=1e-4)
    rank_one = torch.randn(64, 1) @ torch.randn(1, 32)
    assert rankme(rank_one).item() == pytest.approx(1.0, abs=0.05)
    # direct evaluation of the formula on fixed singular values
    s = torch.tensor([3.0, 2.0, 1.0])
    z = torch.diag(s)
    p = s / s.sum() + 1e-7
    assert rankme(z).item() == pytest.approx(math.exp(-(p * p.log()).sum().item()), rel=1e-5)


def test_health_metrics_names_and_ratio() -> None:
    z = torch.randn(256, 64, generator=torch.Generator().manual_seed(1))
    m = health_metrics(z)
    assert set(m) == {"health/embedding_std", "health/embedding_std_ratio", "health/rankme"}
    assert m["health/embedding_std_ratio"] == pytest.approx(m["health/embedding_std"] * 8)
    assert 40 < m["health/rankme"] <= 64


def test_collapse_watch_warns_once_after_patience() -> None:
    watch = CollapseWatch(patience=3)
    healthy = {"health/embedding_std_ratio": 0.9, "health/rankme": 100.0}
    dead = health_metrics(torch.ones(64, 32))  # a constant output: fully collapsed
    assert dead["health/embedding_std_ratio"] < 1e-3
    assert watch.update(healthy, 1) is None
    assert watch.update(dead, 2) is None and watch.update(dead, 3) is None
    assert watch.update(healthy, 4) is None  # recovery resets the count
    msgs = [watch.update(dead, s) for s in range(5, 9)]
    assert msgs[:2] == [None, None] and "collapse suspected at step 7" in msgs[2]
    assert "optimizer.lr" in msgs[2] and msgs[3] is None  # once only


# ---------------------------------------------------------------- loggers
def test_a_failing_logger_warns_once_and_the_others_keep_logging(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where TensorBoard wants a directory")
    broken = TensorBoardLogger(str(blocker / "tb"), name="", version="")
    csv_logger = CSVLogger(str(tmp_path), name="", version="")
    sinks = MetricSinks([broken, csv_logger])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(1, 4):
            sinks.log({"loss": float(step)}, step=step)
        sinks.finalize()
    failures = [w for w in caught if "TensorBoardLogger failed" in str(w.message)]
    assert len(failures) == 1 and sinks.failed == ["TensorBoardLogger"]
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(lines) == 4  # header + three rows
