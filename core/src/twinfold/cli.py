"""The ``twinfold`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from twinfold.errors import ConfigError, TwinfoldError, UnknownComponentError

DEFAULT_PRESET = "byol-small"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="twinfold", description="Non-contrastive self-supervised learning on images."
    )
    p.add_argument("--no-plugins", action="store_true", help="load no entry-point plugins")
    p.add_argument(
        "--block",
        action="append",
        default=[],
        metavar="PLUGIN",
        help="never import this plugin (entry-point or distribution name)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    def config_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("config", nargs="?", help="YAML config file")
        q.add_argument("--preset", help=f"preset name (default without CONFIG: {DEFAULT_PRESET})")
        q.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            dest="overrides",
            help="override a config value, e.g. trainer.epochs=5",
        )

    t = sub.add_parser("train", help="pretrain, then evaluate (default: the byol-small preset)")
    config_args(t)
    c = sub.add_parser("config", help="show a resolved config or the JSON schema")
    csub = c.add_subparsers(dest="config_command", required=True)
    config_args(csub.add_parser("show", help="print the resolved config with all defaults"))
    csub.add_parser("schema", help="print the JSON schema of the installed components")
    pl = sub.add_parser("plugins", help="list installed components and plugins")
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _load(args: argparse.Namespace):
    from twinfold.config import load_config, read_yaml

    data = read_yaml(args.config) if args.config else {}
    if args.preset:
        data["preset"] = args.preset
    elif not args.config:
        data.setdefault("preset", DEFAULT_PRESET)
    cfg = load_config(data, args.overrides)
    return cfg


def _cmd_train(args: argparse.Namespace) -> int:
    from twinfold.loop import train

    cfg = _load(args)
    result = train(cfg)
    m = result.metrics
    print(f"run directory: {result.run_dir}")
    loss = m.get("loss", float("nan"))
    print(f"steps: {result.steps}  time: {result.seconds:.0f} s  final loss: {loss:.4f}")
    if "knn_top1" in m:
        line = (
            f"kNN top-1 on the held-out split (k={cfg.evaluation.knn_k}, cosine, "
            f"T={cfg.evaluation.knn_temperature}): trained {100 * m['knn_top1']:.1f}%"
        )
        if "knn_top1_random_init" in m:
            line += f"  |  same encoder at random init {100 * m['knn_top1_random_init']:.1f}%"
        print(line)
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    if args.config_command == "schema":
        from twinfold.config.schema import json_schema

        print(json.dumps(json_schema(), indent=2))
        return 0
    from twinfold.config import dump_config

    print(dump_config(_load(args)), end="")
    return 0


def _cmd_plugins(args: argparse.Namespace) -> int:
    import warnings

    from twinfold.registry import ENV_BLOCK, ENV_NO_PLUGINS, Registry, _env_settings

    off, blocked = _env_settings()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            reg = Registry(entry_points=not off, blocked=blocked)
            conflicts: list[str] = []
        except TwinfoldError as exc:  # conflicts: still list what we can
            conflicts = str(exc).splitlines()
            reg = None
    rows = (
        []
        if reg is None
        else [
            {
                "kind": r.kind.value,
                "name": r.name,
                "summary": r.summary,
                "plugin": r.plugin,
                "distribution": r.distribution,
                "version": r.version,
            }
            for r in reg.records()
        ]
    )
    broken = (
        []
        if reg is None
        else [
            {"entry_point": b.entry_point, "distribution": b.distribution, "error": b.error}
            for b in reg.broken
        ]
    )
    skipped = [] if reg is None else reg.skipped
    if args.json:
        print(
            json.dumps(
                {"components": rows, "broken": broken, "blocked": skipped, "conflicts": conflicts},
                indent=2,
            )
        )
        return 1 if conflicts else 0
    if rows:
        widths = [max(len(r[k]) for r in rows) for k in ("kind", "name", "distribution")]
        for r in rows:
            print(
                f"{r['kind']:<{widths[0]}}  {r['name']:<{widths[1]}}  "
                f"{r['distribution'] + ' ' + r['version']:<{widths[2] + 8}}  {r['summary']}"
            )
    for b in broken:
        print(f"BROKEN  {b['entry_point']} ({b['distribution']}): {b['error']}")
    for s in skipped:
        print(f"blocked  {s}")
    for line in conflicts:
        print(f"CONFLICT  {line}")
    if off:
        print(f"(entry-point plugins disabled by {ENV_NO_PLUGINS})")
    if blocked and not skipped:
        print(f"({ENV_BLOCK} blocks: {', '.join(sorted(blocked))})")
    return 1 if conflicts else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # environment variables carry the plugin settings into DDP child processes
    if args.no_plugins:
        os.environ["TWINFOLD_NO_PLUGINS"] = "1"
    if args.block:
        old = os.environ.get("TWINFOLD_BLOCK_PLUGINS", "")
        os.environ["TWINFOLD_BLOCK_PLUGINS"] = ",".join([b for b in [old, *args.block] if b])
    handlers = {"train": _cmd_train, "config": _cmd_config, "plugins": _cmd_plugins}
    try:
        return handlers[args.command](args)
    except (ConfigError, UnknownComponentError) as exc:
        print(f"twinfold: error: {exc}", file=sys.stderr)
        return 2
    except TwinfoldError as exc:
        print(f"twinfold: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("twinfold: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
