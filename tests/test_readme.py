"""The README's Python example runs as written, and the package keeps its layering."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO


def test_readme_python_example_runs(tmp_path):
    readme = (REPO / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert len(code.strip().splitlines()) <= 10
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    val, floor = map(float, re.search(r"val_loss ([\d.]+), floor ([\d.]+)", proc.stdout).groups())
    assert val < 2.5 and floor < val  # learned past the unigram plateau (~2.7), above the floor
    assert (tmp_path / "runs" / "api" / "summary.json").is_file()


def test_layers_below_the_cluster_never_import_ray():
    code = ("import sys, tengine, tengine.cli, tengine.engine, tengine.backends, tengine.data, "
            "tengine.models, tengine.config, tengine.sweep, tengine.sweep.report, "
            "tengine.export.bundle, tengine.export.verify, tengine.monitoring.check, "
            "tengine.monitoring.callbacks, tengine.cli_drift, tengine.cli_triggers; "
            "bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')); "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_config_layer_needs_no_torch():
    code = ("import sys, tengine.config; from tengine.config import load_config; "
            f"load_config({str(REPO / 'configs/quickstart.yaml')!r}); "
            "assert 'torch' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_sweep_files_and_reports_need_neither_torch_nor_ray():
    code = ("import sys; from tengine.sweep import load_sweep; import tengine.sweep.report; "
            f"plan = load_sweep({str(REPO / 'configs/sweeps/quickstart_lr.yaml')!r}); "
            "assert plan.num_trials() == 8; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray')); "
            "assert not bad, bad[:5]")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_drift_comparison_alerts_and_sinks_need_neither_torch_nor_ray():
    """What judges a report and sends its alert runs where torch is not installed."""
    code = ("import sys, tengine.monitoring, tengine.monitoring.drift, tengine.monitoring.alerts, "
            "tengine.monitoring.sinks, tengine.control.triggers, tengine.control.promotion; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray')); "
            "assert not bad, bad[:5]")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
