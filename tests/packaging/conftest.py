"""The wheel, built once per session, and venvs that see only what installing it would bring.

A venv here is `python -m venv --without-pip` plus a `.pth` line pointing at a *view*: a folder of
symlinks to the project venv's installed distributions that a given set of requirements pulls in
(transitively, markers evaluated, as pip resolves them): the wheel's own core requirements, plus
pip, plus ipykernel for the notebook's kernel. Nothing else is importable there — not Ray,
DeepSpeed, Accelerate, transformers, W&B, Optuna or ONNX, and not the repository's editable
tengine — so a run in it is what `pip install tengine` gives, built in seconds and offline.
"""

from __future__ import annotations

import email.parser
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import REPO

OPTIONAL = ("ray", "deepspeed", "accelerate", "transformers", "tokenizers", "datasets", "wandb",
            "optuna", "onnx", "onnxruntime", "onnxscript", "croniter")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(z.read(name).decode())


def core_requirements(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist lines without an extra: what `pip install tengine` installs."""
    reqs = [Requirement(r) for r in wheel_metadata(wheel).get_all("Requires-Dist")]
    return [str(r) for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def closure(roots: list[str]) -> dict[str, md.Distribution]:
    """The distributions of this interpreter that `roots` need, transitively."""
    found: dict[str, md.Distribution] = {}
    extras_seen: dict[str, set[str]] = {}
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        name = norm(req.name)
        if name in extras_seen and set(req.extras) <= extras_seen[name]:
            continue
        extras_seen[name] = extras_seen.get(name, set()) | set(req.extras)
        found[name] = dist = md.distribution(req.name)  # missing here: the project venv is broken
        for line in dist.requires or []:
            sub = Requirement(line)
            wanted = ("", *extras_seen[name])
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in wanted):
                todo.append(sub)
    return found


def make_view(dists: dict[str, md.Distribution], view: Path) -> None:
    """Symlink every top-level file or folder each distribution installed into `view`."""
    view.mkdir(parents=True)
    for dist in dists.values():
        tops = {Path(f).parts[0] for f in dist.files or []}
        for top in tops - {"..", "__pycache__"}:
            target = Path(dist.locate_file(top))
            if target.exists() and not (view / top).exists():
                (view / top).symlink_to(target)


def make_venv(path: Path, roots: list[str]) -> Path:
    """A venv at `path` that sees exactly the distributions `roots` need; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    make_view(closure(roots), path / "view")
    python = path / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "_deps_view.pth").write_text(f"{path / 'view'}\n")
    return python


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment for a child process: nothing that points at the project venv or repo,
    IPython's profile under `tmp`, pip offline (an unmet requirement fails, never downloads)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env.update(CI="true", PYTHONNOUSERSITE="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               IPYTHONDIR=str(tmp / "ipython"), **extra)
    return env


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel` of a copy of the package source (the checkout itself stays untouched)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "tengine", src / "tengine",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--wheel-dir", str(out), str(src)],
                   check=True, capture_output=True, text=True)
    (built,) = out.glob("tengine-*.whl")
    return built


@pytest.fixture(scope="session")
def core_python(wheel, tmp_path_factory) -> Path:
    """A venv with tengine installed from the wheel and only its core dependencies importable."""
    root = tmp_path_factory.mktemp("core-venv")
    python = make_venv(root, [*core_requirements(wheel), "pip"])
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
                   check=True, env=clean_env(root), capture_output=True, text=True)
    return python
