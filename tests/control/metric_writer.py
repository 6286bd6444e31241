"""One writer of the experiment-DB load test: `python -m tests.control.metric_writer URI RUN
STEPS KEYS` logs STEPS steps × KEYS metrics into RUN, one `log_metrics` call per step."""

from __future__ import annotations

import sys

from tengine.control import open_store
from tengine.control.experiments import ExperimentDB


def main(uri: str, run: str, steps: int, keys: int) -> None:
    store = open_store(uri)
    db = ExperimentDB(store)
    for step in range(1, steps + 1):
        db.log_metrics(run, {f"m{k}": step + k / 100 for k in range(keys)}, step)
    store.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
