"""`tengine export`: a model bundle for serving, every format proven against PyTorch.

    tengine export runs/quickstart                          # the run's best (else last) checkpoint
    tengine export RUN/checkpoints/step_00001000 --formats safetensors,pt2,onnx --out bundles/qs
    tengine export --model mymodel:production               # a registry version (sha256 checked first)
    tengine export runs/quickstart --register mymodel       # register the checkpoint, attach the bundle
    tengine export verify bundles/qs                        # recompute every hash and parity figure

Exit 0 with the parity and latency tables; 1 when a format failed (a table of what failed and
why; no bundle is left and nothing is attached); 2 for bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from tengine.errors import ConfigError


def _split(value: str, what: str) -> tuple[str, str | None]:
    name, _, ref = value.partition(":")
    if not name or (":" in value and not ref):
        raise ConfigError(f"{what} '{value}': give NAME or NAME:REF (a version number or alias)")
    return name, ref or None


def _client(args: argparse.Namespace):
    from tengine.cli_control import _client as control_client

    return control_client(args)


def cmd_export(args: argparse.Namespace) -> int:
    from tengine.export.bundle import build_bundle
    from tengine.export.source import resolve

    if args.source and args.source[0] == "verify":
        return cmd_verify(args)
    if len(args.source) > 1:
        raise ConfigError(f"export: one source, got {' '.join(args.source)}; "
                          "`tengine export verify BUNDLE` checks a bundle")
    if bool(args.source) == bool(args.model):
        raise ConfigError("export: give a run dir, a checkpoint or an artifact, or --model NAME:REF")
    register = _split(args.register, "--register") if args.register else None
    version = None
    if args.model:
        name, ref = _split(args.model, "--model")
        version = _client(args).registry.get(name, ref or "latest")
    formats = [f.strip() for f in args.formats.split(",") if f.strip()] if args.formats else None
    say = (lambda *a: None) if args.json else print
    with _stop_cleanly_on_sigterm(), resolve(args.source[0] if args.source else None,
                                             version) as src:
        target = _register_target(args, register, src, version) if register else None
        out = Path(args.out or Path("bundles") / f"{src.name}-step_{src.step}")
        result = build_bundle(src, out, formats, atol=args.atol, opset=args.opset,
                              latency_iters=args.latency_iters, force=args.force, progress=say)
        if register:
            result["registered"] = _attach(target, register[0], src, Path(result["bundle"]))
    summary = {"bundle": result["bundle"], "formats": list(result["formats"]),
               "parity": {f: p["worst"] for f, p in result["parity"].items()},
               "latency": result["latency"], **({"registered": result["registered"]}
                                                 if "registered" in result else {})}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"bundle: {result['bundle']}")
        if "registered" in summary:
            r = summary["registered"]
            print(f"attached to {r['name']} v{r['version']}")
    return 0


@contextlib.contextmanager
def _stop_cleanly_on_sigterm():
    """While exporting, SIGTERM (a cancelled export job, `kill`) unwinds like Ctrl-C: the
    temporary bundle and the packed source are removed on the way out."""
    import signal
    import sys

    before = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        if before is not None:  # None: a handler not set from Python, left as it is
            signal.signal(signal.SIGTERM, before)


def _register_target(args: argparse.Namespace, register: tuple[str, str | None], src,
                     version) -> tuple[Any, Any]:
    """--register NAME[:VERSION], checked before any work: (the registry, the version to attach
    to, or None: the exported checkpoint is registered as a new version after the export).
    NAME alone means the --model version when NAME is its model."""
    from tengine.errors import Conflict
    from tengine.files import sha256_file

    name, ref = register
    registry = _client(args).registry
    if ref is None and version is not None and version.name == name:
        ref = version.version
    if ref is None:
        if src.origin.get("kind") != "checkpoint":
            raise ConfigError(f"--register {name}: give the version to attach to (NAME:VERSION); "
                              "only a checkpoint or run is registered as a new version")
        return registry, None
    target = registry.get(name, int(ref) if str(ref).isdigit() else ref)
    exported = sha256_file(src.artifact / "manifest.json")
    if exported != target.sha256:
        raise Conflict(f"--register {name}:{ref}: this export is of artifact {exported[:12]}…, not "
                       f"of {name} v{target.version} ({target.sha256[:12]}…); export that version "
                       f"(--model {name}:{target.version}) or register this one (--register {name})")
    return registry, target


def _attach(target: tuple[Any, Any], name: str, src, bundle: Path) -> dict[str, Any]:
    from tengine.control.artifacts import attach_bundle, register_checkpoint

    registry, version = target
    if version is None:  # the exported checkpoint, as a new version of `name`
        from tengine.engine.artifact import pack

        version = register_checkpoint(registry, name, Path(src.origin["path"]), pack=pack,
                                      run_dir=Path(src.origin["run_dir"]),
                                      source_run=src.origin["run_dir"])
    return attach_bundle(registry, version, bundle)


def cmd_verify(args: argparse.Namespace) -> int:
    from tengine.export.verify import verify

    if len(args.source) != 2:
        raise ConfigError("export verify: give one bundle directory: tengine export verify BUNDLE")
    report = verify(Path(args.source[1]), progress=(lambda *a: None) if args.json else print)
    print(json.dumps(report) if args.json else f"ok: {report['bundle']} verified")
    return 0


def add_commands(sub) -> None:
    from tengine.cli_control import _common

    p = sub.add_parser("export", help="export a model bundle (safetensors, pt2, onnx) with "
                       "parity checks; `export verify BUNDLE` re-checks one",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", nargs="*", metavar="SOURCE",
                   help="a run dir, a checkpoint (RUN/checkpoints/step_X), a registry artifact; "
                   "or `verify BUNDLE`")
    p.add_argument("--model", metavar="NAME:REF", help="a registered version (number, alias or "
                   "latest); its artifact's sha256 is checked first")
    p.add_argument("--formats", metavar="A,B", help="comma-separated (default: the run's "
                   "export.formats: safetensors,pt2,onnx; torchscript is legacy, opt-in)")
    p.add_argument("--out", metavar="DIR", help="bundle directory (default: "
                   "bundles/<name>-step_<step>)")
    p.add_argument("--atol", type=float, help="max abs error allowed (default export.parity_atol)")
    p.add_argument("--opset", type=int, help="ONNX opset (default export.onnx_opset)")
    p.add_argument("--latency-iters", type=int, metavar="N",
                   help="timed calls per format and batch (default export.latency_iters)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists (only "
                   "once the new bundle passed)")
    p.add_argument("--register", metavar="NAME[:VERSION]", help="attach the bundle to a "
                   "registry version (NAME alone: register the checkpoint as a new version)")
    _common(p)
    p.set_defaults(func=cmd_export)
