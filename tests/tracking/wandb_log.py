"""Read a W&B transaction log (`run-<id>.wandb`) with W&B's own record definitions.

wandb 0.31 has no Python reader for it any more (wandb-core, in Go, reads it), so the framing is
decoded here: a 7-byte header (":W&B", magic 0xBEE1, version 0), then LevelDB-log chunks in
32 KiB blocks (4-byte checksum, 2-byte little-endian length, 1-byte type: 1 full, 2 first,
3 middle, 4 last), each record one `wandb_internal_pb2.Record` protobuf.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK, HEADER = 32 * 1024, 7


def records(path: Path):
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # the block's tail is padding
            pos += left
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def history(path: Path) -> dict[int, dict[str, float]]:
    """step → {key: value} of every `run.log` in the log."""
    rows: dict[int, dict[str, float]] = {}
    for r in records(path):
        if r.WhichOneof("record_type") == "history":
            items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
            rows.setdefault(int(r.history.step.num), {}).update(
                {k: v for k, v in items.items() if not k.startswith("_")})
    return rows


def alerts(path: Path) -> list[tuple[str, str, str]]:
    """(title, text, level) of every `wandb.alert` in the log."""
    return [(r.alert.title, r.alert.text, r.alert.level) for r in records(path)
            if r.WhichOneof("record_type") == "alert"]
