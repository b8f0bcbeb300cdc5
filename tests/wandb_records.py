"""Read an offline wandb run file (``run-*.wandb``) without a server, for assertions in tests.

The file is a LevelDB-style log: a 7-byte header, then 32 KiB blocks of framed chunks
(crc32 u32, length u16, type u8) that reassemble into protobuf ``Record`` messages.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
FRAME = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    ident, _magic, _version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B", f"{path} is not a wandb run file"
    pos, pending = 7, b""
    while pos + FRAME.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < FRAME.size:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = FRAME.unpack_from(data, pos)
        if kind == 0:  # zero-filled tail of a block
            pos += left
            continue
        pos += FRAME.size
        pending += data[pos : pos + length]
        pos += length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def summary(path: Path) -> dict:
    """The run's final summary: later updates win, as in wandb's UI."""
    out: dict = {}
    for record in records(path):
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                out[_key(item)] = json.loads(item.value_json)
    return out


def history(path: Path) -> list[dict]:
    return [{_key(i): json.loads(i.value_json) for i in r.history.item} for r in records(path) if r.WhichOneof("record_type") == "history"]


def exit_code(path: Path) -> int | None:
    codes = [r.exit.exit_code for r in records(path) if r.WhichOneof("record_type") == "exit"]
    return codes[-1] if codes else None


def run_info(path: Path) -> dict:
    """The run's group and job type, as wandb.init recorded them."""
    for record in records(path):
        if record.WhichOneof("record_type") == "run":
            return {"group": record.run.run_group, "job_type": record.run.job_type}
    return {}
