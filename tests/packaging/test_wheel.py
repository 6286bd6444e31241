"""The wheel: presets and py.typed inside, the core dependencies and the extras declared, and every
"missing package" error in the code naming an extra that really provides the package.

    .venv/bin/python -m pytest tests/packaging -q
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

from tengine.config import PRESETS
from tengine.config.loader import PRESETS_DIR
from tengine.extras import BACKEND_PACKAGES
from tests.conftest import REPO
from tests.packaging.conftest import norm, wheel_metadata

CORE = {"torch", "pydantic", "pyyaml", "tqdm", "safetensors", "matplotlib", "numpy", "sqlalchemy",
        "scipy"}
EXTRAS = {
    "ray": {"ray", "accelerate", "croniter", "pyarrow"},  # pyarrow.fs: storage, artifact roots
    "deepspeed": {"deepspeed", "accelerate"},
    "hf": {"transformers", "tokenizers", "datasets"},
    "export": {"onnx", "onnxruntime", "onnxscript"},
    "tracking": {"wandb", "tensorboard"},
    "sweep": {"optuna"},
    "postgres": {"psycopg"},
    "dev": {"pytest", "pytest-timeout", "ruff", "nbclient", "nbformat", "ipykernel", "moto"},
}


def _declared(wheel: Path) -> tuple[set[str], dict[str, list[Requirement]]]:
    """(core requirement names, {extra: its requirements}) from the wheel's METADATA."""
    meta = wheel_metadata(wheel)
    provided = meta.get_all("Provides-Extra")
    core: set[str] = set()
    extras: dict[str, list[Requirement]] = {e: [] for e in provided}
    for req in map(Requirement, meta.get_all("Requires-Dist")):
        owners = [e for e in provided if req.marker and req.marker.evaluate({"extra": e})]
        if req.marker is None:
            core.add(norm(req.name))
        for e in owners:
            extras[e].append(req)
    return core, extras


def test_the_wheel_ships_the_presets_and_py_typed(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if n.startswith("tengine/config/presets/")}
    assert shipped == {p.name for p in PRESETS_DIR.glob("*.yaml")} == {f"{p}.yaml" for p in PRESETS}
    assert "tengine/py.typed" in names
    assert all(n.startswith("tengine/") or ".dist-info/" in n for n in names)  # no tests, configs


def test_the_wheel_declares_the_core_dependencies_and_the_extras(wheel):
    core, extras = _declared(wheel)
    assert core == CORE  # the single-process engine; tests/packaging/test_core_install runs it
    assert set(extras) == {*EXTRAS, "all"}
    for name, packages in EXTRAS.items():
        assert {norm(r.name) for r in extras[name]} == packages, name
    (ray,) = [r for r in extras["ray"] if r.name == "ray"]
    assert ray.extras == {"default", "train", "tune"}  # dashboard/job submission, Train, Tune
    (everything,) = extras["all"]  # tengine[...] of every extra but dev
    assert everything.name == "tengine" and everything.extras == set(EXTRAS) - {"dev"}


def test_make_install_installs_all_the_extras():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^EXTRAS \?= all,dev$", makefile, re.M)
    torch_first = makefile.index('pip install --quiet "$(TORCH)"')
    assert torch_first < makefile.index('pip install --quiet -e ".[$(EXTRAS)]"')


def test_every_missing_package_error_names_an_extra_that_provides_it(wheel):
    """`require(module, extra, ...)`/`check(...)` calls and BACKEND_PACKAGES, against METADATA."""
    _, extras = _declared(wheel)
    provides = {e: {norm(r.name) for r in reqs} for e, reqs in extras.items()}
    calls = {pair for pairs in BACKEND_PACKAGES.values() for pair in pairs}
    for path in (REPO / "tengine").rglob("*.py"):
        text = path.read_text()
        calls |= set(re.findall(r'\b(?:require|check)\(\s*"([\w.]+)",\s*"(\w+)"', text))
        for extra in re.findall(r"tengine\[(\w+)\]", text):
            assert extra in provides, f"{path.relative_to(REPO)}: no extra '{extra}'"
    modules = {m.split(".")[0] for m, _ in calls}
    assert {"accelerate", "deepspeed", "ray", "croniter", "transformers", "tokenizers"} <= modules
    for module, extra in calls:
        assert norm(module.split(".")[0]) in provides[extra], (module, extra)
