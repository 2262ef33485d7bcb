"""``twinfold plugins``: every installed component with its kind, name, summary, plugin,
distribution and version, as a table and as JSON (read from the real entry points)."""

from __future__ import annotations

import json

import pytest

from twinfold.cli import main
from twinfold.registry import Registry

KEYS = ("kind", "name", "summary", "plugin", "distribution", "version")


def expected_rows() -> list[dict[str, str]]:
    return [
        {
            "kind": r.kind,
            "name": r.name,
            "summary": r.summary,
            "plugin": r.plugin,
            "distribution": r.distribution,
            "version": r.version,
        }
        for r in Registry().records()
    ]


def test_json_lists_every_component_with_its_provider(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = data["components"]
    assert rows == expected_rows()
    assert all(set(KEYS) <= set(r) and all(r[k] for k in KEYS) for r in rows)
    kinds = {r["kind"] for r in rows}
    assert kinds == {"augmentation", "encoder", "head", "loss", "target", "preset"}
    by_name = {(r["kind"], r["name"]): r for r in rows}
    # the example third-party plugin, installed with pip like any other
    assert by_name[("head", "directpred")]["plugin"] == "directpred"
    assert by_name[("head", "directpred")]["distribution"] == "twinfold-directpred"
    assert by_name[("encoder", "small-cnn")]["plugin"] == "twinfold"
    assert data["broken"] == [] and data["conflicts"] == []


def test_table_has_one_line_per_component_with_every_column(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plugins"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["KIND", "NAME", "PLUGIN", "DISTRIBUTION", "SUMMARY"]
    rows = expected_rows()
    assert len(lines) == 1 + len(rows)
    for line, r in zip(lines[1:], rows):
        kind, name, plugin, dist, version, *summary = line.split()
        assert (kind, name, plugin, dist, version) == (
            r["kind"],
            r["name"],
            r["plugin"],
            r["distribution"],
            r["version"],
        )
        assert " ".join(summary) == " ".join(r["summary"].split())
