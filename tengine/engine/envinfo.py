"""`env.json`: versions (every installed distribution), devices, the git commit with a dirty
flag and the environment variables a run used (for reproducing it later; `tengine env diff`). Secrets stay out: the command line and the variables are written with
secret-looking values as `***` (`tengine.redact`), since run dirs get copied and shared."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path

import torch

from tengine.redact import redact_argv, redact_env

PACKAGES = ("torch", "accelerate", "deepspeed", "ray", "numpy", "pydantic", "safetensors", "tengine")
# Variables that change what a run computes or how it is placed: threads, devices, collectives,
# seeds, the launcher's ranks, library modes (HF offline, W&B mode); not the whole environment.
ENV_PREFIXES = ("TENGINE_", "RAY_", "CUDA_", "NCCL_", "GLOO_", "TORCH_", "PYTORCH_", "TORCHELASTIC_",
                "CUBLAS_", "CUDNN_", "OMP_", "MKL_", "KMP_", "HF_", "TRANSFORMERS_", "TOKENIZERS_",
                "WANDB_", "ACCELERATE_", "DEEPSPEED_", "DS_")
ENV_NAMES = ("PYTHONHASHSEED", "PYTHONPATH", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK",
             "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK")


def package_version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def distributions() -> dict[str, str]:
    """Every installed distribution and its version, by normalised name."""
    out: dict[str, str] = {}
    for d in importlib.metadata.distributions():  # in sys.path order: the first one is used
        try:
            name = (d.metadata["Name"] or "").lower().replace("_", "-")
            if name:
                out.setdefault(name, d.version)
        except Exception:  # noqa: BLE001 — a broken dist-info dir must not fail a run
            continue
    return dict(sorted(out.items()))


LAUNCH_ENV = "TENGINE_LAUNCH"  # JSON {argv, cwd, git} of the command that launched the workers


def launch_context() -> dict:
    """The command as the user ran it, where, and the git state there. In a Ray Train worker
    it is the driver's (passed in TENGINE_LAUNCH: a worker's own argv and cwd are Ray's); under
    torchrun, this worker's command with the torchrun line it was started by."""
    if os.environ.get(LAUNCH_ENV):
        import json

        return json.loads(os.environ[LAUNCH_ENV])
    from tengine.gitinfo import git_info

    argv = list(sys.argv)
    if "TORCHELASTIC_RUN_ID" in os.environ:
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        nodes = max(1, int(os.environ.get("WORLD_SIZE", per_node)) // per_node)
        script = ["-m", "tengine"] if argv and argv[0].endswith(("tengine/__main__.py", "tengine")) \
            else argv[:1]
        argv = ["torchrun", f"--nnodes={nodes}", f"--nproc_per_node={per_node}", *script, *argv[1:]]
    return {"argv": redact_argv(argv), "cwd": str(Path.cwd()), "git": git_info(Path.cwd())}


def environment() -> dict:
    """What reproducing the run needs to know, read without starting a process or touching the
    network: versions, devices, the git commit (and whether tracked files differ from it)."""
    cuda = torch.cuda.is_available()
    launch = launch_context()
    git = launch["git"]
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": platform.node(),
        "packages": {p: package_version(p) for p in PACKAGES},
        "cuda": torch.version.cuda if cuda else None,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else ["cpu"],
        "cpu_count": torch.get_num_threads(),
        "git_commit": git["commit"] if git else None,
        "git": git,
        "cwd": launch["cwd"],
        "argv": launch["argv"],
        "environment": relevant_environment(),
        "distributions": distributions(),
    }


def relevant_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """The variables of ENV_PREFIXES/ENV_NAMES, sorted, secret-looking values as `***`."""
    env = os.environ if env is None else env
    kept = {k: v for k, v in env.items()  # (the launch is recorded as argv, cwd and git)
            if (k.startswith(ENV_PREFIXES) or k in ENV_NAMES) and k != LAUNCH_ENV}
    return dict(sorted(redact_env(kept).items()))


def reproduce_md(cfg, env: dict) -> str:
    """REPRODUCE.md: the command as it was run, the exact one that retrains from the resolved
    config beside it, and the code and environment it ran with."""
    import shlex

    from tengine.files import config_hash

    git = env.get("git") or {}
    changed = [w for w, flag in (("modified", git.get("dirty")), ("staged", git.get("staged")))
               if flag]
    unknown = [w for w in ("dirty", "staged") if git and git.get(w) is None]
    code = "not in a git work tree" if not git else (
        f"git commit `{git['commit']}`" + (f" (branch `{git['branch']}`)" if git.get("branch") else "")
        + (f". **The tree differed from that commit** ({' and '.join(changed)} changes to tracked "
           "files): the diff is not recorded, so check out that commit and re-apply them."
           if changed else ", no tracked file changed." if not unknown else
           f"; whether tracked files changed is unknown ({', '.join(unknown)})."))
    devices = ", ".join(env.get("devices") or [])
    return "\n".join([
        f"# Reproduce `{cfg.name}`", "",
        f"Started in `{env.get('cwd')}` on {env.get('hostname')} with:", "",
        "```bash", " ".join(shlex.quote(a) for a in env.get("argv") or []), "```", "",
        f"The resolved config is `config.yaml` beside this file (sha256 of its JSON form "
        f"`{config_hash(cfg.model_dump(mode='json'))[:16]}…`). To train it again:", "",
        "```bash", "tengine train config.yaml --run-dir NEW_RUN_DIR --resume never", "```", "",
        f"Code: {code}", "",
        f"Environment: python {env.get('python')}, torch {env.get('packages', {}).get('torch')}"
        + (f", CUDA {env['cuda']}" if env.get("cuda") else "") + f", devices: {devices}. Every "
        "installed distribution and the relevant environment variables (secrets masked) are in "
        "`env.json`; `tengine env diff THIS_RUN OTHER_RUN` shows what differs.", ""])
