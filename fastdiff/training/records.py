"""The record of a run besides its checkpoint: ``run.json`` (the settings that determine the result)
and ``log.jsonl`` (one JSON record per line: losses, evaluations, the start and end of each piece)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

from fastdiff.training.config import RUNTIME_FIELDS, TrainConfig

RUN_CONFIG = "run.json"
LOG = "log.jsonl"


def check_run(run_dir: Path, config: TrainConfig) -> None:
    """Record the run's identity on its first piece; later pieces must match it."""
    path = run_dir / RUN_CONFIG
    identity = config.identity()
    if path.exists():
        try:
            recorded = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{str(path)!r} is not JSON ({error}): the run's record is corrupted") from None
        recorded = {k: v for k, v in recorded.items() if k not in RUNTIME_FIELDS}  # older runs recorded output_dir
        differing = sorted(k for k in set(recorded) | set(identity) if recorded.get(k) != identity.get(k))
        if differing:
            raise ValueError(f"output_dir {str(run_dir)!r} holds a run with other settings ({', '.join(differing)}); "
                             "use a new output_dir or the same settings to resume")
    else:
        path.write_text(json.dumps(identity, indent=1) + "\n")


def append_log(run_dir: Path, record: dict) -> None:
    """Add one record to ``log.jsonl``."""
    with open(run_dir / LOG, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_log(run_dir: Path) -> List[dict]:
    """The records of ``log.jsonl``, after cutting off a last line that a crash left unfinished."""
    path = run_dir / LOG
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines) - 1 and any(rest.strip() for rest in lines[number + 1:]):
                raise ValueError(f"{str(path)!r} line {number + 1} is not JSON: the log is corrupted") from None
            path.write_text("".join(kept + "\n" for kept in lines[:number] if kept.strip()))  # torn last line
    return records
