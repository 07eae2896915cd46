"""``spikeforge`` command line: each subcommand builds its inputs and calls one public function.

spikeforge data fetch NAME [--root DIR] [--from DIR]
spikeforge data check NAME [--root DIR]
spikeforge train CONFIG.toml [--set key=value ...] [--out DIR] [--resume] [--address ADDR]
spikeforge eval DIR [--steps T]
spikeforge plot DIR
spikeforge compare OUT.png DIR [DIR ...] [--title TEXT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["main"]


def _data(args: argparse.Namespace) -> int:
    from spikeforge.data import DataError, check, default_root, fetch

    if args.action == "fetch":
        started = time.perf_counter()
        report = fetch(args.name, root=args.root, source_dir=args.source_dir)
        print(
            f"{args.name}: ready in {report.directory} (source: {report.source}, "
            f"{time.perf_counter() - started:.1f} s)"
        )
        return 0
    problems = check(args.name, root=args.root)
    cache = default_root(args.root) / args.name
    if problems and not cache.is_dir():
        raise DataError(
            f"{args.name} is not in the cache {cache}; run `spikeforge data fetch {args.name}`"
        )
    if problems:
        for problem in problems:
            print(problem)
        return 1
    print(f"{args.name}: all files present and checksums match")
    return 0


def _remove_if_empty(out: Path, created: bool) -> None:
    """Remove the run directory a failed ``train`` made when nothing was written into it (a data
    or config check failed first), so no empty run is left behind; a directory that holds
    anything is kept."""
    if created and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def _train(args: argparse.Namespace) -> int:
    from spikeforge.run import load_config, train

    overrides = list(args.set)
    if args.address:  # shorthand for the ensemble's Ray cluster
        overrides.append(f"ensemble.address={json.dumps(args.address)}")
    config = load_config(args.config, overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    created = not out.exists()
    try:
        summary = train(config, out, resume=args.resume)
    except BaseException:
        _remove_if_empty(out, created)
        raise
    steps = f" (T = {summary['test_steps']})" if "test_steps" in summary else ""
    if "test_accuracy" in summary:
        result = f"test accuracy {summary['test_accuracy']:.4f}{steps}"
    else:  # unsupervised layer alone (conv-stdp)
        result = f"test reconstruction MSE {summary['test_reconstruction_mse']:.5f}"
    print(
        f"{result} | "
        f"train {summary['train_seconds']:.1f} s, {summary['train_samples']} samples, "
        f"{summary['samples_per_second']:.0f} samples/s | run directory {out}"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from spikeforge.run.evaluation import evaluate_run

    result = evaluate_run(Path(args.run_dir), steps=args.steps)
    print(json.dumps(result))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from spikeforge.run.evaluation import plot_run

    for path in plot_run(Path(args.run_dir), max_steps=args.max_steps):
        print(path)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from spikeforge import viz
    from spikeforge.run import ConfigError
    from spikeforge.run.bptt import read_metrics

    runs = {}
    for run_dir in map(Path, args.run_dirs):
        if not (run_dir / "metrics.jsonl").is_file():
            raise ConfigError(
                f"no metrics.jsonl in {run_dir}; give run directories of spikeforge train"
            )
        records = read_metrics(run_dir)
        if not records or "test_accuracy" not in records[0]:
            raise ConfigError(f"{run_dir / 'metrics.jsonl'} holds no epochs with a test accuracy")
        runs[run_dir.name] = records
    print(viz.plot_run_comparison(runs, Path(args.out), args.title))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikeforge", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="fetch or verify a dataset")
    data.add_argument("action", choices=["fetch", "check"])
    data.add_argument("name", help="mnist, fashion-mnist, nmnist or shd")
    data.add_argument("--root", default=None, help="cache directory (default ~/.cache/spikeforge)")
    data.add_argument(
        "--from", dest="source_dir", default=None, help="a directory holding the files"
    )
    data.set_defaults(func=_data)

    train = sub.add_parser("train", help="train what a config describes")
    train.add_argument("config", help="a TOML file, e.g. configs/bondarev-mnist.toml")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=1",
    )
    train.add_argument("--out", default=None, help="run directory (default runs/<config name>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument(
        "--address",
        default=None,
        help="method ensemble: the Ray cluster to run sub-models on (default: a local Ray)",
    )
    train.set_defaults(func=_train)

    evaluate = sub.add_parser("eval", help="re-evaluate a saved run on the test set")
    evaluate.add_argument("run_dir")
    evaluate.add_argument(
        "--steps", type=int, default=None, help="time steps T (default: the config's)"
    )
    evaluate.set_defaults(func=_eval)

    plot = sub.add_parser("plot", help="draw a run's figures as PNG files")
    plot.add_argument("run_dir")
    plot.add_argument(
        "--max-steps", type=int, default=20, help="largest T in the accuracy-vs-T plot"
    )
    plot.set_defaults(func=_plot)

    compare = sub.add_parser("compare", help="test accuracy per epoch of several runs, one PNG")
    compare.add_argument("out", help="the PNG to write")
    compare.add_argument("run_dirs", nargs="+", help="run directories (their names label lines)")
    compare.add_argument("--title", default="")
    compare.set_defaults(func=_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; known errors become one line on stderr and exit status 2."""
    from spikeforge.data import DataError
    from spikeforge.ensemble import EnsembleError
    from spikeforge.run import CheckpointError, ConfigError, TrainingInterrupted

    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except TrainingInterrupted as err:
        print(str(err), file=sys.stderr)
        return 130
    except (
        DataError,
        ConfigError,
        CheckpointError,
        EnsembleError,
        FloatingPointError,
        ValueError,
    ) as err:
        print(f"spikeforge: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spikeforge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
