"""`launch/colab.ipynb`, executed top to bottom with nbclient on this CPU machine.

Its kernel runs in a venv that sees only tengine's core dependencies, pip and ipykernel
(tests/packaging/conftest.py); the notebook installs tengine itself from the wheel built for this
session (`TENGINE_WHEEL`, pip offline), finds it is not on Colab (a local folder, the CPU), trains a
run that stops at step 20, reruns it, and the run resumes there and completes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tengine.config import load_config
from tests.conftest import REPO
from tests.packaging.conftest import clean_env, core_requirements, make_venv

NOTEBOOK = REPO / "launch/colab.ipynb"
KERNEL = "tengine-notebook-test"
PROBE = """import json, sys, tengine
print(json.dumps({"tengine": tengine.__file__, "python": sys.executable,
                  "optional": sorted({"ray", "deepspeed", "accelerate"} & set(sys.modules))}))"""


def test_the_notebook_is_committed_clean_and_valid():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None  # committed without outputs
    # the branches this machine cannot take: Colab keeps the run on Drive, a GPU runs it all
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert 'drive.mount("/content/drive")' in code
    assert 'WORK = Path("/content/drive/MyDrive/tengine")' in code
    assert "HALT, SETS = 500, []" in code


def test_the_notebook_runs_top_to_bottom_and_resumes(wheel, tmp_path, monkeypatch):
    python = make_venv(tmp_path / "venv", [*core_requirements(wheel), "pip", "ipykernel"])
    jupyter = tmp_path / "jupyter"
    env = clean_env(tmp_path, TENGINE_WHEEL=str(wheel), JUPYTER_PATH=str(jupyter / "share/jupyter"),
                    JUPYTER_DATA_DIR=str(tmp_path / "jupyter-data"),
                    JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
                    JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"))
    subprocess.run([str(python), "-m", "ipykernel", "install", "--prefix", str(jupyter),
                    "--name", KERNEL], check=True, env=env, capture_output=True, text=True)
    for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():  # the kernel inherits this process's environment
        monkeypatch.setenv(key, value)

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    work = tmp_path / "work"
    work.mkdir()
    NotebookClient(nb, kernel_name=KERNEL, timeout=300, startup_timeout=120,
                   resources={"metadata": {"path": str(work)}}).execute()

    probe = json.loads(next(o["text"] for o in nb.cells[-1].outputs if o.get("name") == "stdout"))
    assert Path(probe["python"]).is_relative_to(tmp_path / "venv")
    assert Path(probe["tengine"]).is_relative_to(tmp_path / "venv")  # the wheel, not the checkout
    assert probe["optional"] == []
    run_dir = work / "tengine-notebook/runs/quickstart"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["steps"], summary["backend"]) == ("completed", 40, "single")
    assert summary["resumed_from"] == str(run_dir / "checkpoints/step_00000020")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "resume"] == [20]
    assert (run_dir / "plots/loss.png").is_file()
    # without the CPU overrides (a GPU runtime) it is the quickstart, in one process
    written = load_config(work / "tengine-notebook/quickstart.yaml")
    assert written == load_config(REPO / "configs/quickstart.yaml", [
        "distributed.workers=0", "distributed.backend=single", "training.micro_batch_size=32"])
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "not on Colab" in text and "halted: 20 steps" in text and "completed: 40 steps" in text
    assert "status completed, 40 steps, resumed at step 20" in text
