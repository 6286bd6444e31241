"""`tengine export verify BUNDLE`: is this bundle still what `tengine export` checked?

    report = verify(Path("bundles/qs"))     # raises VerifyFailed naming the first problem

1. metadata.json matches the sha256 in metadata.sha256, every file it lists has its recorded
   size and sha256 (one flipped byte anywhere fails here), and no file is there that it does
   not list.
2. The model rebuilt by tengine from the bundle's own config.yaml and model.safetensors gives
   the outputs recorded at export (their sha256, else their mean and max |value| within 1e-5
   relative): a tengine or torch whose model code changed is named as such, not blamed on a
   format.
3. Parity again against that model: every runnable format runs in a fresh `python -I` process
   on the bundle's parity inputs, the weights-only safetensors is hashed there, and every case
   must be within the tolerance the bundle records (each format's max abs error now and as
   recorded are both reported).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tengine.errors import ConfigError, TengineError
from tengine.export import parity
from tengine.export.bundle import INPUTS_FILE, METADATA, METADATA_SHA256, check_one
from tengine.export.formats import Positional
from tengine.files import mismatched_file


class VerifyFailed(TengineError):
    """A bundle whose files or figures are not what its metadata.json records."""


def read_metadata(bundle: Path) -> dict[str, Any]:
    from tengine.files import sha256_file

    file = Path(bundle) / METADATA
    if not file.is_file():
        raise ConfigError(f"export verify: '{bundle}' is not an export bundle (no {METADATA}); "
                          "give the directory `tengine export` wrote")
    recorded = (Path(bundle) / METADATA_SHA256).read_text().split()[0] \
        if (Path(bundle) / METADATA_SHA256).is_file() else None
    if recorded != sha256_file(file):
        raise VerifyFailed(f"{bundle}/{METADATA} " + ("does not match its sha256 in "
                           f"{METADATA_SHA256} (corrupted)" if recorded else
                           f"has no {METADATA_SHA256}") + "; export the bundle again")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise VerifyFailed(f"{bundle}/{METADATA} is not valid JSON ({err}): the bundle was "
                           "changed after export") from None


def verify(bundle: Path, progress=print) -> dict[str, Any]:
    from safetensors.torch import load_file

    from tengine.export.model import rebuild

    bundle = Path(bundle).resolve()
    meta = read_metadata(bundle)
    if (bad := mismatched_file(bundle, meta["files"])) is not None:
        raise VerifyFailed(f"{bundle}: {bad[0]} {bad[1]}; this bundle is not the one that was "
                           "exported: export it again")
    extra = sorted(p.name for p in bundle.iterdir() if p.name not in meta["files"]
                   and p.name not in (METADATA, METADATA_SHA256) and p.name[0] != ".")
    if extra:
        raise VerifyFailed(f"{bundle}: files not in its metadata.json: {', '.join(extra)}")
    progress(f"verify: {len(meta['files'])} files match their sha256")
    names = [i["name"] for i in meta["inputs"]]
    lm = meta["task"] == "language_modeling"
    atol = meta["tolerances"]["max_abs"]
    model = rebuild(bundle, meta)
    cases = parity.load_cases(bundle / INPUTS_FILE)
    ref = parity.reference(Positional(model, names), names, cases)
    now = parity.fingerprint(ref)
    drifted = [c for c, f in meta["reference"].items() if not parity.same_outputs(f, now[c])]
    if drifted:  # the weights hash fine: the code that runs them changed (tengine, torch)
        raise VerifyFailed(f"{bundle}: the model tengine rebuilds from config.yaml and "
                           f"model.safetensors no longer gives the outputs recorded at export on "
                           f"{', '.join(drifted[:3])} (mean |logit| {meta['reference'][drifted[0]]['mean_abs']:.6g}"
                           f" then, {now[drifted[0]]['mean_abs']:.6g} now); versions then: "
                           f"torch {meta['versions']['torch']}, tengine {meta['versions']['tengine']}")
    progress(f"verify: the rebuilt model reproduces the exported outputs on {len(now)} cases")
    results: dict[str, dict] = {}
    for fmt, fm in meta["formats"].items():
        results[fmt] = check_one(bundle, fmt, fm, cases, ref, names, atol, lm, latency_iters=0,
                                 model_of=lambda f: model,
                                 state_of=lambda f: load_file(str(bundle / f)))
        recorded = meta.get("parity", {}).get(fmt, {}).get("worst", {}).get("max_abs")
        now = parity.worst(results[fmt]["cases"])["max_abs"] if results[fmt].get("cases") else None
        results[fmt]["recorded_max_abs"], results[fmt]["max_abs"] = recorded, now
    failed = [f for f, r in results.items() if not r["ok"]]
    if failed:
        raise VerifyFailed("\n".join([f"{bundle}: parity failed for {', '.join(failed)}", "",
                                      *parity.table(results, failures_only=True).splitlines()]))
    progress(parity.table(results))
    return {"bundle": str(bundle.resolve()), "ok": True, "files": len(meta["files"]),
            "formats": {f: {"max_abs": r["max_abs"], "recorded_max_abs": r["recorded_max_abs"]}
                        for f, r in results.items()}}
