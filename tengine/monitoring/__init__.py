"""Monitoring: data and model-output profiles, drift statistics, alert rules and sinks.

    from tengine.monitoring import data_profile, compare
    report = compare(load_profile("runs/v1"), data_profile(new_data, like=reference))

See docs/monitoring.md. Nothing here imports Ray; the comparison (drift.py, stats.py) needs no
torch either, so the control plane can judge reports it is sent.
"""

from tengine.monitoring.drift import DriftSettings, compare
from tengine.monitoring.profiles import data_profile, load_profile, output_profile

__all__ = ["DriftSettings", "compare", "data_profile", "load_profile", "output_profile"]
