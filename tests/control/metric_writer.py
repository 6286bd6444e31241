"""One writer of the experiment-DB load test: `python -m tests.control.metric_writer URI RUN
STEPS KEYS` logs STEPS steps × KEYS metrics into RUN, 5 steps per transaction (what the db
tracker's flushes look like, at a far higher rate)."""

from __future__ import annotations

import sys

from tengine.control import open_store
from tengine.control.experiments import ExperimentDB


def main(uri: str, run: str, steps: int, keys: int) -> None:
    store = open_store(uri)
    db = ExperimentDB(store)
    for first in range(1, steps + 1, 5):
        db.log_metric_rows(run, [(step, f"m{k}", step + k / 100) for step in
                                 range(first, min(first + 5, steps + 1)) for k in range(keys)])
    store.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
