"""The `tengine` command: parses arguments, builds the config, calls the engine.

    tengine train configs/quickstart.yaml [--set optim.lr=3e-4 ...] [--run-dir DIR] [--resume auto|never|PATH]
    tengine train CONFIG --workers 2 --set distributed.backend=ddp   # Ray Train workers
    tengine evaluate RUN/config.yaml --checkpoint RUN/checkpoints/step_00000100 [--json]
    tengine config show CONFIG [--set ...]        # the resolved config as YAML
    tengine config validate CONFIG [--set ...]    # exit 0 if it can run, 2 with one line per problem
    tengine sweep SWEEP.yaml [--dry-run] [--register NAME]   # Ray Tune sweep (cli_sweep.py)
    tengine data prepare 'corpus/*.txt' --out DIR [--tokenizer byte|bpe|hf]   # token shards (cli_data.py)
    tengine export RUN|CHECKPOINT|--model NAME:REF [--formats ...] [--out DIR]   # bundle (cli_export.py)
    tengine env diff RUN_A RUN_B [--json]         # what differs between two runs' environments (cli_env.py)
    tengine drift --reference RUN|BUNDLE|MODEL:ALIAS --current CONFIG [--json]   # data/output drift (cli_drift.py)

User errors print one line per problem (no traceback) and exit 2; a run that fails during work
exits 1 with its message.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from tengine.errors import PREEMPTED_EXIT_CODE, TengineError


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. --set optim.lr=3e-4 (repeatable)")


def _load(args: argparse.Namespace):
    from tengine.config import load_config

    overrides = list(args.overrides)
    if getattr(args, "resume", None):
        overrides.append(f"checkpoint.resume={args.resume}")
    return load_config(args.config, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    if args.workers is not None:
        args.overrides.append(f"distributed.workers={args.workers}")
    if args.gpus_per_worker is not None:
        args.overrides.append(f"distributed.gpus_per_worker={args.gpus_per_worker}")
    cfg = _load(args)
    under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ  # torchrun started us: no Ray
    if cfg.distributed.workers > 0 and not under_torchrun:
        from tengine.extras import check

        check("ray", "ray", f"distributed.workers {cfg.distributed.workers} (Ray Train workers)",
              otherwise="train in this process: --workers 0 --set distributed.backend=single")
        from tengine.cluster.train import fit

        summary = fit(cfg, run_dir=args.run_dir, address=args.address)
    else:
        from tengine.engine import run

        summary = run(cfg, run_dir=args.run_dir)
    floor = summary.get("loss_floor")
    lines = [f"{summary['status']}: {summary['steps']} steps in {summary['wall_s']:.1f} s, "
             f"{summary['tokens_per_s']:.0f} tokens/s"]
    if summary.get("val_loss") is not None:
        extra = f" (loss floor {floor:.4f}, ratio {summary['val_loss'] / floor:.4f})" if floor else ""
        lines.append(f"val_loss {summary['val_loss']:.4f}{extra}")
    lines.append(f"run dir: {summary['run_dir']}")
    code = 0
    if summary["status"] == "preempted":  # not done: a scheduler should run it again
        code = PREEMPTED_EXIT_CODE
        lines.append("preempted: run the same command again to resume from its checkpoint")
    if not _is_main():  # one report per run, not one per rank
        return code
    print("\n".join(lines))
    return code


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from tengine.engine import evaluate

    result = evaluate(_load(args), args.checkpoint)
    if args.out:
        from tengine.engine.reporter import write_json

        write_json(Path(args.out), result)
    if args.json:
        print(json.dumps(result))
    elif _is_main():
        shown = {k: v for k, v in result.items() if k.startswith("val_") and v is not None}
        print(f"{args.checkpoint} (step {result['step']}): "
              + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
    return 0


def _is_main() -> bool:
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0


def cmd_config_show(args: argparse.Namespace) -> int:
    from tengine.config import to_yaml

    sys.stdout.write(to_yaml(_load(args)))
    return 0


def cmd_config_validate(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from tengine.engine import preflight

    preflight(cfg)
    print(f"ok: {args.config} is valid")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tengine", description="tengine: train PyTorch models "
                                     "from one YAML config.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model from a config")
    _config_args(train)
    train.add_argument("--run-dir", help="run directory (default: <logging.root>/<name>)")
    train.add_argument("--resume", metavar="auto|never|PATH",
                       help="auto = newest valid checkpoint of the run dir (default), never, or a "
                       "checkpoint directory")
    train.add_argument("--workers", type=int, metavar="N",
                       help="Ray Train workers (sets distributed.workers); 0 = this process")
    train.add_argument("--gpus-per-worker", type=float, metavar="G",
                       help="GPUs per Ray worker (sets distributed.gpus_per_worker)")
    train.add_argument("--address", metavar="auto|ADDR",
                       help="Ray cluster to join (default: RAY_ADDRESS, else start Ray here)")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="evaluate a checkpoint on the config's validation split")
    _config_args(ev)
    ev.add_argument("--checkpoint", required=True, metavar="PATH",
                    help="a step_XXXXXXXX checkpoint dir (verified against its manifest first)")
    ev.add_argument("--out", metavar="FILE", help="also write the metrics to FILE as JSON")
    ev.add_argument("--json", action="store_true", help="print the metrics as one JSON line")
    ev.set_defaults(func=cmd_evaluate)

    config = sub.add_parser("config", help="show or validate a config")
    config_sub = config.add_subparsers(dest="action", required=True)
    for name, func, text in (("show", cmd_config_show, "print the resolved config"),
                             ("validate", cmd_config_validate, "check a config without running")):
        p = config_sub.add_parser(name, help=text)
        _config_args(p)
        p.set_defaults(func=func)

    from tengine.cli_control import add_commands
    from tengine.cli_data import add_commands as add_data_commands
    from tengine.cli_drift import add_commands as add_drift_commands
    from tengine.cli_env import add_commands as add_env_commands
    from tengine.cli_export import add_commands as add_export_commands
    from tengine.cli_runs import add_commands as add_runs_commands
    from tengine.cli_sweep import add_commands as add_sweep_commands
    from tengine.cli_triggers import add_commands as add_trigger_commands

    add_sweep_commands(sub)
    add_data_commands(sub)
    add_export_commands(sub)
    add_env_commands(sub)
    add_runs_commands(sub)
    add_drift_commands(sub)
    add_trigger_commands(sub)
    add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="tengine: %(levelname)s: %(message)s",
                        stream=sys.stderr)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        code = func(args)
    except TengineError as err:
        for line in str(err).splitlines():
            print(f"tengine: error: {line}", file=sys.stderr)
        code = err.exit_code
    except KeyboardInterrupt:
        print("tengine: interrupted", file=sys.stderr)
        code = 130
    # a torchrun worker that finished or was preempted (its checkpoint written): leave cleanly.
    # Only under torchrun: main() called in a process of its own (a test, a notebook) returns.
    if ("TORCHELASTIC_RUN_ID" in os.environ and "torch.distributed" in sys.modules
            and code in (0, PREEMPTED_EXIT_CODE)):
        from tengine.backends.process_group import exit_cleanly

        exit_cleanly(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
