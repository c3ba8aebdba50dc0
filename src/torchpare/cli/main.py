"""``torchpare`` command line: argument parsing only; the work happens in :mod:`torchpare.engine`.

Errors exit non-zero with one line on stderr (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]

EXAMPLES = """\
examples:
  torchpare demo                                  # the digits demo (< 3 min on 2 CPU cores)
  torchpare demo --fast --output runs/demo_fast   # a reduced version (seconds)
  torchpare train configs/digits_teacher.yaml
  torchpare distill configs/digits_kd.yaml --set schedule.epochs=5 --set data.label_fraction=0.1
  torchpare prune configs/digits_prune.yaml --set pruner.target_flops_ratio=0.4
  torchpare distill configs/digits_self_distill.yaml      # SelfDistill: no teacher section
  torchpare prune configs/digits_ratio_prune.yaml --set pruner.subnet=0.75   # RatioPruner subnet
  torchpare train configs/digits_teacher.yaml --resume    # continue exactly after a crash
  torchpare train configs/digits_teacher.yaml --overwrite # start again in a used run folder
  torchrun --nproc_per_node=2 -m torchpare train configs/digits_teacher.yaml   # several processes
  torchpare slim configs/slim_digits.yaml         # slimmable supernet, subnets at 75/50/25% FLOPs
  torchpare report runs/demo                      # rebuild report.html + PNGs from saved metrics
  torchpare report runs/                          # one page comparing every run folder under runs/
"""

TASKS = {
    "train": "train a model from scratch (config: model, data, schedule)",
    "distill": "distill a student with any algorithm (config: model, algorithm, and the teacher, teachers or "
               "students section it takes; schedule)",
    "prune": "prune a model to a FLOPs target or deploy a pruner's subnet, optionally recover by distillation "
             "(config: model, pruner)",
    "finetune": "fine-tune saved weights or a pruned model (config: model.checkpoint, schedule)",
    "evaluate": "test accuracy, parameters, FLOPs, latency and size of a model (config: model)",
}


def build_parser() -> argparse.ArgumentParser:
    """The ``torchpare`` argument parser (sub-commands ``train ... demo``)."""
    parser = argparse.ArgumentParser(
        prog="torchpare", description="Knowledge distillation and structured pruning for PyTorch models.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in TASKS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("config", help="YAML config file")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.SUB=VALUE",
                       help="override a config value (repeatable), e.g. --set schedule.lr=0.01")
        p.add_argument("--output", help="run folder (overrides the config's 'output')")
        p.add_argument("--resume", nargs="?", const=True, default=False, metavar="PATH",
                       help="continue the run in --output (newest readable checkpoint), or from checkpoint PATH; "
                            "refused if the config differs except in epochs, max_steps and logging")
        p.add_argument("--overwrite", action="store_true",
                       help="start a new run in a non-empty run folder (its previous run files are deleted)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p = sub.add_parser("slim", help="train a slimmable supernet (AutoSlim), search each FLOPs target, deploy "
                       "and evaluate the subnets (config: model, algorithm AutoSlim, search, schedule)")
    p.add_argument("config", help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.SUB=VALUE",
                   help="override a config value (repeatable), e.g. --set search.targets=[0.5]")
    p.add_argument("--output", help="run folder (overrides the config's 'output')")
    p.add_argument("--resume", action="store_true", help="continue the supernet from <output>/checkpoints/last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p = sub.add_parser("report", help="rebuild report.html and PNGs of a run folder from its saved metrics, or "
                       "compare several runs (table, metric-vs-cost plots, Pareto front)")
    p.add_argument("run_dir", nargs="+", help="a folder written by 'torchpare demo' or another command; several "
                   "folders, or a folder holding run folders, build one page comparing them")
    p.add_argument("--output", default=None, metavar="HTML",
                   help="the comparison page to write (default: report.html in the folder common to the runs)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p = sub.add_parser("demo", help="the end-to-end example on scikit-learn digits (or --task text)")
    p.add_argument("--task", choices=("digits", "text"), default="digits")
    p.add_argument("--fast", action="store_true", help="a reduced version for tests (seconds)")
    p.add_argument("--output", default=None, help="run folder (default runs/demo, runs/demo_text)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in TASKS:
        from pathlib import Path

        from torchpare.engine.config import apply_overrides, load_config
        from torchpare.engine.distributed import shutdown_distributed
        from torchpare.engine.runner import run_task

        cfg = apply_overrides(load_config(args.config), args.overrides)
        if args.output:
            cfg["output"] = args.output
        try:
            entry = run_task(cfg, args.command, resume=args.resume, quiet=args.quiet,
                             source=f"'{Path(args.config)}'", overwrite=args.overwrite)
        finally:
            shutdown_distributed()
        if entry:
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in entry.items()
                           if k not in ("prune_summary", "baseline")))
        return 0
    if args.command == "slim":
        from pathlib import Path

        from torchpare.cli.slim import run_slim
        from torchpare.engine.config import apply_overrides, load_config

        cfg = apply_overrides(load_config(args.config), args.overrides)
        if args.output:
            cfg["output"] = args.output
        scores = run_slim(cfg, resume=args.resume, quiet=args.quiet, source=f"'{Path(args.config)}'")
        print(" ".join(f"{k}={v:.4g}" for k, v in scores.items()))
        return 0
    if args.command == "report":
        from pathlib import Path

        from torchpare.engine.report import build_comparison, build_report

        dirs = args.run_dir
        if len(dirs) == 1 and args.output is None and (Path(dirs[0]) / "results.json").is_file():
            print(build_report(dirs[0]))  # one run folder: its own report (a prune run with its baseline)
        else:
            print(build_comparison(dirs, args.output))
        return 0
    if args.command == "demo":
        if args.task == "text":
            from torchpare.demo import run_text_demo

            run_text_demo(output=args.output or "runs/demo_text", fast=args.fast, quiet=args.quiet)
        else:
            from torchpare.demo import run_demo

            run_demo(output=args.output or "runs/demo", fast=args.fast, quiet=args.quiet)
        return 0
    build_parser().print_help()
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 run failure, 2 bad usage/config)."""
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("torchpare: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        from torchpare.engine.config import ConfigError

        kind = type(exc).__name__
        msg = str(exc) if isinstance(exc, ConfigError) else f"{kind}: {exc}"
        print(f"torchpare: error: {msg}\n(run with --debug for the traceback)", file=sys.stderr)
        return 2 if isinstance(exc, (ConfigError, FileNotFoundError)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
