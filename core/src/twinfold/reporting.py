"""What a finished run shows: PNG plots in its directory (loss and health curves, kNN
accuracy per epoch, a 2-D PCA embedding of the held-out set) and a text summary.

Plots need matplotlib (``pip install twinfold[plots]``); without it they are skipped with
one warning and everything else works."""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import torch
from torch import Tensor

from twinfold.rundir import METRICS_FILE, SUMMARY_FILE

PLOTS = {
    "loss": "plot_loss.png",
    "health": "plot_health.png",
    "knn": "plot_knn.png",
    "embedding": "plot_embedding.png",
}


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """Rows of ``metrics.csv`` with the empty cells dropped and the values as floats."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            parsed = {}
            for key, value in row.items():
                try:
                    parsed[key] = float(value)
                except (TypeError, ValueError):
                    continue
            rows.append(parsed)
    return rows


def series(rows: list[dict[str, float]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the rows that logged ``key``."""
    pts = [(r.get("step", math.nan), r[key]) for r in rows if key in r and math.isfinite(r[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def pca_2d(features: Tensor) -> Tensor:
    """Projection of ``features`` [N, D] on its first two principal components."""
    x = features.double() - features.double().mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    return (x @ v[:2].T).float()


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn(
            "matplotlib is not installed: no plots (pip install 'twinfold[plots]')", stacklevel=3
        )
        return None
    return plt


def write_plots(run_dir: Path, embedding: tuple[Tensor, Tensor] | None = None) -> list[Path]:
    """Write the plots the run's metrics allow; returns their paths."""
    plt = _pyplot()
    if plt is None:
        return []
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    written: list[Path] = []

    def save(fig, key: str) -> None:
        path = run_dir / PLOTS[key]
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    terms = sorted({k for r in rows for k in r if k.startswith("loss/")})
    if series(rows, "loss")[0]:
        fig, axes = plt.subplots(1, 1 + bool(terms), figsize=(5 + 5 * bool(terms), 3.6))
        axes = list(axes) if terms else [axes]
        axes[0].plot(*series(rows, "loss"))
        axes[0].set(title="training loss", xlabel="step")
        for key in terms:
            axes[-1].plot(*series(rows, key), label=key.removeprefix("loss/"))
        if terms:
            axes[-1].set(title="loss terms", xlabel="step")
            axes[-1].legend(fontsize=8)
        save(fig, "loss")

    health = [
        k
        for k in ("health/embedding_std_ratio", "health/rankme", "target/tau")
        if series(rows, k)[0]
    ]
    lrs = sorted({k for r in rows for k in r if k.startswith("lr/")})
    if health or lrs:
        panels = health + (["lr"] if lrs else [])
        fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), squeeze=False)
        for ax, key in zip(axes[0], panels):
            if key == "lr":
                for lr in lrs:
                    ax.plot(*series(rows, lr), label=lr.removeprefix("lr/"))
                ax.legend(fontsize=7)
                ax.set(title="learning rates", xlabel="step")
            else:
                ax.plot(*series(rows, key))
                ax.set(title=key.split("/", 1)[1], xlabel="step")
                if key == "health/embedding_std_ratio":
                    ax.axhline(1.0, ls="--", c="grey", lw=0.8)
                    ax.set_ylim(bottom=0)
        save(fig, "health")

    epochs = [(r["epoch"], r["knn_top1"]) for r in rows if "knn_top1" in r and "epoch" in r]
    if epochs:
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax.plot([e for e, _ in epochs], [100 * a for _, a in epochs], marker="o")
        ax.set(title="held-out kNN top-1 (%)", xlabel="epoch (from 0, as in metrics.csv)")
        save(fig, "knn")

    if embedding is not None and embedding[0].shape[0] > 2:
        xy, labels = pca_2d(embedding[0]), embedding[1]
        fig, ax = plt.subplots(figsize=(5, 4.4))
        points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=8)
        if labels.unique().numel() <= 20:
            fig.colorbar(points, ax=ax, label="label")
        ax.set(title="held-out backbone features (PCA)", xticks=[], yticks=[])
        save(fig, "embedding")
    return written


def summary_text(run_dir: Path) -> str:
    """A table of the run's final numbers, last logged health values and plots."""
    run_dir = Path(run_dir)
    lines = [f"run: {run_dir}"]
    summary_path = run_dir / SUMMARY_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if not summary:
        lines.append("  (no summary.json: the run has not finished)")
    rows = read_metrics(run_dir)
    last: dict[str, float] = {}
    for r in rows:
        last.update({k: v for k, v in r.items() if not k.startswith("final/")})
    table: list[tuple[str, str]] = []
    for key in ("steps", "seconds", "loss", "knn_top1", "knn_top1_random_init"):
        if key in summary:
            value = summary[key]
            text = f"{100 * value:.2f} %" if key.startswith("knn") else f"{value:.4g}"
            table.append((key, text))
    for key in sorted(last):
        if key.startswith(("health/", "loss/", "target/")) or key in {"images_per_s", "epoch"}:
            table.append((f"last {key}", f"{last[key]:.4g}"))
    knn_epochs = [(int(r["epoch"]), r["knn_top1"]) for r in rows if "knn_top1" in r]
    if knn_epochs:  # epochs counted from 0, as metrics.csv and checkpoints count them
        shown = ", ".join(f"{e}: {100 * a:.1f}" for e, a in knn_epochs[-10:])
        table.append(("kNN % by epoch (from 0)", shown))
    width = max((len(k) for k, _ in table), default=0)
    lines += [f"  {k:<{width}}  {v}" for k, v in table]
    plots = [run_dir / p for p in PLOTS.values() if (run_dir / p).is_file()]
    lines.append("plots:" if plots else "plots: none")
    lines += [f"  {p}" for p in plots]
    return "\n".join(lines)
