"""A topic's schema contract, kept beside its Parquet files, and how a job's schema meets it.

The contract is the schema every file of a topic has (lineage columns
included), versioned: version 1 is the declared schema (``schema_def``) with
the first committed job's other columns, or that job's schema when nothing is
declared. It lives in ``DIR/_<topic>.contract.json`` (a leading ``_`` that
pyarrow.dataset, DuckDB's ``*.parquet`` globs and polars skip), is read when
a job opens its sink and re-read, under the directory lock, when it promotes.

``reconcile`` decides (pure) what a promotion does:
- no contract yet: the job's schema becomes version 1;
- equal schemas: nothing;
- the job's type is a lossless widening of the contract's (null → string,
  int32 → int64), or the job has a column the contract lacks and the topic
  allows ``evolve: add_columns``: a new version; the topic's existing files are
  rewritten to it (values are only cast or null-filled, so nothing is lost and
  one glob keeps reading every file);
- otherwise the job's staged output is conformed to the contract by the drift
  rules (values that do not convert are quarantined) before it is promoted;
- a new column without ``evolve: add_columns``, or a forbidden drift, fails
  the job naming the column.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import attrs
import pyarrow as pa

from casparian_trio.errors import SinkError
from casparian_trio.sinks._drift import widens
from casparian_trio.sinks._schema import LINEAGE
from casparian_trio.sinks._uri import safe_name

EVOLVE_MODES = ("none", "add_columns")
# History entries kept in the file (the store keeps all of them).
HISTORY_MAX = 100


@attrs.frozen
class Contract:
    """Version ``version`` of a topic's schema (``schema`` includes lineage columns)."""

    topic: str
    version: int
    schema: pa.Schema
    history: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "version": self.version,
            "columns": [{"name": f.name, "type": str(f.type)} for f in self.schema],
            "arrow_schema": base64.b64encode(self.schema.serialize().to_pybytes()).decode(),
            "history": list(self.history[-HISTORY_MAX:]),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Contract:
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(obj["arrow_schema"])))
        return cls(str(obj["topic"]), int(obj["version"]), schema, tuple(obj.get("history", ())))

    def next(self, schema: pa.Schema, job_id: int, why: str) -> Contract:
        entry = {"version": self.version + 1, "job_id": job_id, "at": time.time(), "change": why}
        return Contract(self.topic, self.version + 1, schema, (*self.history, entry))


def contract_path(directory: Path, topic: str) -> Path:
    return directory / f"_{safe_name(topic)}.contract.json"


def read_contract(directory: Path, topic: str) -> Contract | None:
    """The topic's contract in ``directory``, or None when no job has committed yet.

    Raises:
        SinkError: the file exists but is not a contract (naming the file).
    """
    path = contract_path(directory, topic)
    try:
        with open(path, "rb") as file:
            stat = os.fstat(file.fileno())
            key = (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size)
            cached = _PARSED.get(str(path))
            if cached is not None and cached[0] == key:
                return cached[1]
            text = file.read().decode("utf-8")
        contract = Contract.from_json(json.loads(text))
        # A file changed within its file system's timestamp resolution (up to 2 s:
        # FAT, some NFS) could change again under the same key: not cached yet.
        settled = time.time_ns() - stat.st_ctime_ns > _SETTLE_NS
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, pa.ArrowException) as exc:
        raise SinkError(
            f"topic {topic!r}: {path} is not a valid contract ({exc}); remove it"
        ) from exc
    if not settled:
        return contract
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    _PARSED[str(path)] = (key, contract)
    return contract


# Parsed contracts by path, each with the (device, inode, mtime, ctime, size) it
# was read at: every job of a topic reads its contract twice, and the file changes
# by ``write_contract``'s rename (a new ctime, at least). Contracts are frozen, so
# sharing is safe.
_PARSED: dict[str, tuple[tuple[int, int, int, int, int], Contract]] = {}
_SETTLE_NS = 2_000_000_000
_PARSED_MAX = 1024


def write_contract(directory: Path, contract: Contract) -> None:
    """Replace the contract file atomically (call under the directory lock)."""
    path = contract_path(directory, contract.topic)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(contract.to_json(), indent=1), encoding="utf-8")
    os.replace(tmp, path)


def first_contract(topic: str, schema: pa.Schema, job_id: int) -> Contract:
    entry = {"version": 1, "job_id": job_id, "at": time.time(), "change": "first job"}
    return Contract(topic, 1, schema, (entry,))


@attrs.frozen
class Reconciled:
    """What a promotion does: the contract to hold afterwards and the work to get there."""

    contract: Contract
    # The job's staged output must be conformed to ``contract`` first.
    restage: bool
    # Other files of the topic must be rewritten to ``contract`` (a new version).
    migrate: bool


def reconcile(
    current: Contract | None, job: pa.Schema, *, topic: str, job_id: int, evolve: str
) -> Reconciled:
    """Decide a promotion (module docstring). Raises SinkError: a column the contract lacks."""
    if current is None:
        return Reconciled(first_contract(topic, job, job_id), restage=False, migrate=False)
    if current.schema.equals(job):
        return Reconciled(current, restage=False, migrate=False)
    fields = list(current.schema)
    changes: list[str] = []
    restage = False
    for i, field in enumerate(fields):
        idx = job.get_field_index(field.name)
        if idx < 0:
            restage = True  # the job lacks it: nulls
            continue
        theirs = job.field(idx).type
        if theirs == field.type:
            continue
        if widens(field.type, theirs):
            fields[i] = field.with_type(theirs)
            changes.append(f"{field.name}: {field.type} -> {theirs}")
        else:
            restage = True
    new = [f for f in job if f.name not in current.schema.names]
    if new and evolve != "add_columns":
        names = ", ".join(repr(f.name) for f in new)
        raise SinkError(
            f"topic {topic!r}: column {names} is not in the topic's contract (version "
            f"{current.version}: {', '.join(current.schema.names)}); declare it, or set "
            "'evolve: add_columns' on the topic"
        )
    for field in new:
        fields.insert(len(fields) - len(LINEAGE), field.with_nullable(True))  # before lineage
        changes.append(f"+{field.name}: {field.type}")
    if not changes:
        return Reconciled(current, restage=restage, migrate=False)
    contract = current.next(pa.schema(fields), job_id, "; ".join(changes))
    return Reconciled(contract, restage=not pa.schema(fields).equals(job), migrate=True)
