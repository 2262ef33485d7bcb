"""A few steps of the small preset through ``twinfold.train``: files and finite loss."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import twinfold


def test_small_preset_trains_end_to_end(tmp_path: Path) -> None:
    cfg = twinfold.load_config(
        {"preset": "barlow-twins-small"},
        overrides=[
            "data.image_size=16",
            "data.batch_size=64",
            "method.encoder.widths=[8,16]",
            "method.projector.hidden_dims=[32,32]",
            "method.projector.out_dim=32",
            "trainer.max_steps=3",
            "trainer.epochs=1",
            "trainer.log_every=1",
            "trainer.progress_bar=false",
            f"run.output_dir={tmp_path}",
            "run.name=bt",
            "evaluation.compare_random_init=false",
        ],
    )
    result = twinfold.train(cfg)
    run = result.run_dir
    assert result.steps == 3
    for name in ("config.yaml", "metrics.csv", "backbone.safetensors", "summary.json"):
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "last.ckpt").is_file()
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    losses = [float(r["loss"]) for r in rows if r.get("loss")]
    assert len(losses) == 3 and all(math.isfinite(x) and x > 0 for x in losses)
    for term in ("loss/on_diag", "loss/off_diag"):
        assert all(math.isfinite(float(r[term])) for r in rows if r.get(term))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3 and 0.0 <= summary["knn_top1"] <= 1.0
    assert "barlow-twins" in (run / "config.yaml").read_text()
