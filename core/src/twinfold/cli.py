"""The ``twinfold`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from twinfold.errors import ConfigError, TwinfoldError, UnknownComponentError

if TYPE_CHECKING:
    from twinfold.config import RunConfig
    from twinfold.loop import TrainResult

DEFAULT_PRESET = "byol-small"


class _PrintVersions(argparse.Action):
    """``--version``: the core's and every installed plugin distribution's version, read
    from the installed metadata (no plugin is imported), then exit 0."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from twinfold.entry_points import versions_report
        from twinfold.version import __version__

        print(versions_report(__version__))
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="twinfold", description="Non-contrastive self-supervised learning on images."
    )
    p.add_argument(
        "--version", action=_PrintVersions, help="print the core and plugin versions and exit"
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

    def overrides_arg(q: argparse.ArgumentParser, example: str) -> None:
        q.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            dest="overrides",
            help=f"override a config value, e.g. {example} (repeatable)",
        )

    def config_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("config", nargs="?", help="YAML config file")
        q.add_argument("--preset", help=f"preset name (default without CONFIG: {DEFAULT_PRESET})")
        overrides_arg(q, "trainer.epochs=5")

    def eval_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("source", metavar="RUN_OR_CHECKPOINT", help="run dir, .ckpt or export")
        overrides_arg(q, "data.dataset=folder, data.root=DIR")
        q.add_argument("--json", action="store_true", help="machine-readable output")

    t = sub.add_parser("train", help="pretrain, then evaluate (default: the byol-small preset)")
    config_args(t)
    c = sub.add_parser("config", help="show a resolved config or the JSON schema")
    csub = c.add_subparsers(dest="config_command", required=True)
    config_args(csub.add_parser("show", help="print the resolved config with all defaults"))
    csub.add_parser("schema", help="print the JSON schema of the installed components")
    ev = sub.add_parser("eval", help="evaluate a trained backbone (frozen features)")
    esub = ev.add_subparsers(dest="eval_command", required=True)
    for kind, text in (("knn", "weighted kNN top-1"), ("linear", "linear-probe top-1")):
        q = esub.add_parser(kind, help=f"{text} on the run's labelled held-out split")
        eval_args(q)
        if kind == "knn":
            q.add_argument("--k", type=int, help="neighbours (default: the run's knn_k)")
            q.add_argument("--temperature", type=float, help="default: the run's")
        else:
            q.add_argument("--weight-decay", type=float, default=1e-4, help="L2 penalty")
            q.add_argument("--max-iter", type=int, default=200, help="L-BFGS iterations")
    ex = sub.add_parser("export", help="write the backbone as safetensors + a JSON sidecar")
    ex.add_argument("source", metavar="RUN_OR_CHECKPOINT")
    ex.add_argument(
        "out", metavar="OUT", help="output file (.safetensors added if missing) or directory"
    )
    ex.add_argument("--force", action="store_true", help="overwrite an existing export")
    em = sub.add_parser(
        "embed", help="backbone embeddings of an image folder or dataset split (.npy + .csv)"
    )
    em.add_argument("source", metavar="RUN_OR_CHECKPOINT", help="run dir, .ckpt or export")
    em.add_argument(
        "data", metavar="DATA", help="image folder, or DATASET:SPLIT such as digits:test"
    )
    em.add_argument(
        "out",
        metavar="OUT",
        help="output .npy or .safetensors (.npy added if missing) or directory",
    )
    em.add_argument("--batch-size", type=int, default=256, help="images per batch (256)")
    em.add_argument("--workers", type=int, default=0, help="data-loader worker processes (0)")
    em.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda:N")
    em.add_argument(
        "--precision",
        default="32-true",
        help="32-true (as twinfold eval), bf16-mixed or 16-mixed (autocast)",
    )
    em.add_argument(
        "--skip-bad-images", action="store_true", help="leave unreadable images out (listed)"
    )
    em.add_argument("--force", action="store_true", help="overwrite existing outputs")
    em.add_argument("--no-progress", action="store_true", help="no progress bar")
    overrides_arg(em, "data.root=DIR (for DATASET:SPLIT)")
    _data_args(sub)
    rp = sub.add_parser("report", help="summary table and plots of a run directory")
    rp.add_argument("run", metavar="RUN")
    rp.add_argument("--no-plots", action="store_true", help="do not (re)draw the plots")
    pl = sub.add_parser("plugins", help="list installed components and plugins")
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _data_args(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("data", help="prepare data: pack an image folder into shards")
    dsub = d.add_subparsers(dest="data_command", required=True)
    pk = dsub.add_parser("pack", help="image folder -> LitData shards for data.dataset=streaming")
    pk.add_argument("src", metavar="SRC", help="image folder (flat or one sub-folder per class)")
    pk.add_argument("out", metavar="OUT", help="output directory of the shards")
    pk.add_argument("--force", action="store_true", help="replace a non-empty OUT")
    pk.add_argument(
        "--skip-bad-images", action="store_true", help="leave unreadable images out (listed)"
    )
    pk.add_argument(
        "--max-image-pixels", type=int, default=None, help="as data.max_image_pixels (1e8)"
    )
    pk.add_argument(
        "--symlinks", choices=["inside", "follow"], default="inside", help="as data.symlinks"
    )
    pk.add_argument("--shard-mb", type=int, default=64, help="shard size in MiB (64)")
    pk.add_argument("--no-progress", action="store_true", help="no progress bar")


def _load(args: argparse.Namespace):
    from twinfold.config import load_config, read_yaml

    data = read_yaml(args.config) if args.config else {}
    if args.preset:
        data["preset"] = args.preset
    elif not args.config:
        data.setdefault("preset", DEFAULT_PRESET)
    cfg = load_config(data, args.overrides)
    return cfg


def _announce(plan) -> None:
    """The run's first line (a module-level function: spawned ranks get it pickled)."""
    print(plan.describe(), flush=True)


def _cmd_train(args: argparse.Namespace) -> int:
    from twinfold.signals import StopSignals

    with StopSignals():  # first, to the end: a stop signal at any moment is honoured
        from twinfold.loop import train

        cfg = _load(args)
        result = train(cfg, on_start=_announce)
        return _report(cfg, result)


def _report(cfg: RunConfig, result: TrainResult) -> int:
    """What `twinfold train` prints at the end, and its exit status."""
    from twinfold.signals import PREEMPTED_EXIT_CODE

    if result.rank != 0:  # every process returns; global rank 0 reports
        return PREEMPTED_EXIT_CODE if result.stopped_by else 0
    if result.stopped_by and not result.started:
        print(
            f"twinfold: stopped by {result.stopped_by} before training started; nothing "
            "was written. Run the same command again (run.resume=auto starts afresh).",
            file=sys.stderr,
        )
        return PREEMPTED_EXIT_CODE
    m = result.metrics
    print(f"run directory: {result.run_dir}")
    if result.stopped_by:
        print(
            f"twinfold: stopped by {result.stopped_by} at step {result.steps}; the checkpoint "
            f"is in {result.run_dir / 'checkpoints'}. Continue with --set run.resume=true "
            f"--set run.name={result.run_dir.name}",
            file=sys.stderr,
        )
        return PREEMPTED_EXIT_CODE
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
    if m.get("skipped_images"):
        print(
            f"skipped {m['skipped_images']:.0f} unreadable image(s) "
            f"(data.skip_bad_images); listed in {result.run_dir / 'skipped_images.txt'}"
        )
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    if args.config_command == "schema":
        from twinfold.config.schema import json_schema

        print(json.dumps(json_schema(), indent=2))
        return 0
    from twinfold.config import dump_config

    print(dump_config(_load(args)), end="")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from twinfold.artifacts import open_trained_argument
    from twinfold.config import load_config
    from twinfold.evaluation import knn_top1
    from twinfold.evaluation.linear import linear_probe
    from twinfold.evaluation.offline import eval_pipeline, labelled_features
    from twinfold.registry import default_registry

    registry = default_registry()
    trained = open_trained_argument(args.source, registry)
    cfg = load_config(trained.config, args.overrides) if args.overrides else trained.config
    feats = labelled_features(cfg, trained.backbone, pipeline=eval_pipeline(cfg, registry))
    result: dict[str, object] = {
        "source": str(trained.source),
        "step": trained.step,
        "dataset": cfg.data.dataset,
        "train_samples": len(feats.train),
        "test_samples": len(feats.test),
    }
    if args.eval_command == "knn":
        k = args.k if args.k is not None else cfg.evaluation.knn_k
        temperature = args.temperature or cfg.evaluation.knn_temperature
        if k < 1 or k > len(feats.train):
            raise ConfigError(
                [("--k", f"{k} must be between 1 and the {len(feats.train)} training samples")]
            )
        top1 = knn_top1(
            feats.train,
            feats.train_labels,
            feats.test,
            feats.test_labels,
            k=k,
            temperature=temperature,
        )
        result.update(metric="knn_top1", k=k, temperature=temperature, top1=top1)
        label = f"kNN top-1 (k={k}, cosine, T={temperature})"
    else:
        try:
            probe = linear_probe(
                feats.train,
                feats.train_labels,
                feats.test,
                feats.test_labels,
                weight_decay=args.weight_decay,
                max_iter=args.max_iter,
            )
        except ValueError as exc:
            raise ConfigError([("data", str(exc))]) from None
        result.update(
            metric="linear_top1",
            top1=probe.top1,
            train_top1=probe.train_top1,
            weight_decay=args.weight_decay,
            iterations=probe.iterations,
        )
        label = f"linear-probe top-1 (L-BFGS, weight decay {args.weight_decay})"
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{label} on {cfg.data.dataset} ({len(feats.train)} train / {len(feats.test)} "
            f"held-out): {100 * float(result['top1']):.2f}%"  # type: ignore[arg-type]
        )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from twinfold.artifacts import open_trained_argument
    from twinfold.export import export_path, sidecar_path, write_backbone
    from twinfold.registry import default_registry

    out = export_path(args.out, force=args.force)  # checked before the source is read
    trained = open_trained_argument(args.source, default_registry())
    write_backbone(
        trained.backbone,
        trained.config,
        out,
        {"step": trained.step, "source": str(trained.source)},
    )
    print(f"wrote {out} and {sidecar_path(out)}")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from twinfold.embedding import embed

    result = embed(
        args.source,
        args.data,
        args.out,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device,
        precision=args.precision,
        skip_bad_images=args.skip_bad_images,
        force=args.force,
        overrides=args.overrides,
        progress=not args.no_progress,
    )
    if result.resumed_at:
        print(f"continued an interrupted embedding at row {result.resumed_at}")
    for bad in result.skipped:
        item = bad.get("path", bad.get("index"))
        print(f"skipped unreadable image {item}: {bad['error']}")
    print(
        f"wrote {result.matrix} ({result.rows} x {result.dim} float32), {result.table} "
        f"and {result.sidecar}"
    )
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from twinfold.data.folder import MAX_PIXELS
    from twinfold.data.pack import pack_folder

    if args.shard_mb < 1:
        raise ConfigError([("--shard-mb", f"must be at least 1, got {args.shard_mb}")])
    result = pack_folder(
        args.src,
        args.out,
        force=args.force,
        skip_bad=args.skip_bad_images,
        max_pixels=args.max_image_pixels or MAX_PIXELS,
        symlinks=args.symlinks,
        chunk_bytes=args.shard_mb << 20,
        progress=not args.no_progress,
    )
    for name in result.skipped:
        print(f"skipped unreadable image {name}")
    kind = f"{len(result.classes)} classes" if result.classes else "unlabelled"
    print(
        f"packed {result.images} images ({kind}) into {result.shards} shard(s) in "
        f"{result.out}; train on them with data.dataset=streaming data.root={result.out}"
    )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from twinfold.reporting import summary_text, write_plots

    run = Path(args.run)
    if not (run / "config.yaml").is_file():
        raise ConfigError([("RUN", f"{run} is not a twinfold run directory (no config.yaml)")])
    if not args.no_plots:  # (re)draw the curves; the embedding plot is drawn by training
        write_plots(run)
    print(summary_text(run))
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
                "kind": r.kind,
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
            {
                "entry_point": b.entry_point,
                "distribution": b.distribution,
                "error": b.error,
                "fix": b.fix,
            }
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
        table = [
            (r["kind"], r["name"], r["plugin"], f"{r['distribution']} {r['version']}", r["summary"])
            for r in rows
        ]
        header = ("KIND", "NAME", "PLUGIN", "DISTRIBUTION", "SUMMARY")
        widths = [max(len(row[i]) for row in [header, *table]) for i in range(4)]
        for row in [header, *table]:
            print("  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)) + f"  {row[4]}")
    for b in broken:
        print(f"BROKEN  {b['entry_point']} ({b['distribution']}): {b['error']}. {b['fix']}")
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
    handlers = {
        "train": _cmd_train,
        "config": _cmd_config,
        "eval": _cmd_eval,
        "export": _cmd_export,
        "embed": _cmd_embed,
        "data": _cmd_data,
        "report": _cmd_report,
        "plugins": _cmd_plugins,
    }
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
    except Exception as exc:  # a failed ddp_spawn worker: report its twinfold error
        from twinfold.stopping import worker_failure

        message = worker_failure(exc)
        if message is None:
            raise
        print(f"twinfold: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
