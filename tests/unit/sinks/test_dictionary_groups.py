"""Row groups of a file whose text dictionaries are costly to repeat: write_table's size."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from casparian_trio.protocol.messages import SinkConfig
from casparian_trio.sinks import open_sinks, parquet


def text_table(rows: int, distinct: int, seed: int = 7) -> pa.Table:
    """Two text columns of ``distinct`` values (names of 15-31 bytes) and an id."""
    pick = random.Random(seed)
    pool = [f"customer-{i:06d}-{'x' * (i % 17)}" for i in range(distinct)]
    return pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "city": pa.array([pool[pick.randrange(distinct)] for _ in range(rows)]),
            "name": pa.array([pool[pick.randrange(distinct)] for _ in range(rows)]),
        }
    )


@pytest.mark.parametrize(
    ("distinct", "heavy"),
    [
        (4, False),  # a category: a dictionary of a few bytes
        (20_000, True),  # mid-cardinality names: ~0.5 MB of dictionary per column
        (200_000, True),  # nearly unique: each dictionary page fills its 1 MiB and falls back
    ],
)
def test_dictionary_heavy_weighs_the_text_dictionaries(distinct: int, heavy: bool) -> None:
    assert parquet.dictionary_heavy(text_table(200_000, distinct)) is heavy


def test_numbers_never_weigh_as_heavy() -> None:
    table = pa.table({"v": pa.array([float(i % 20_000) for i in range(200_000)])})
    assert parquet.dictionary_heavy(table) is False


def write(tmp_path: Path, table: pa.Table) -> pq.FileMetaData:
    sink = open_sinks(
        [SinkConfig("t", "parquet://ds")], output_root=tmp_path, job_id=1, file_version_id=3
    )["t"]
    for batch in table.to_batches(max_chunksize=10_000):
        sink.write(batch)
    artifact = sink.commit()
    assert artifact is not None
    return pq.ParquetFile(artifact.uri).metadata


def test_a_file_with_costly_dictionaries_takes_write_tables_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut at ROW_GROUP_BYTES its groups would repeat the dictionaries; it is cut by rows instead."""
    monkeypatch.setattr(parquet, "ROW_GROUP_BYTES", 1 << 20)  # ~25k rows of this table
    monkeypatch.setattr(parquet, "WIDER_GROUP_BYTES", (1 << 20) * 5 // 4)
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 100_000)
    table = text_table(250_000, 20_000)
    meta = write(tmp_path / "heavy", table)
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [
        100_000,
        100_000,
        50_000,  # the job's last rows: one group, not one per thread
    ]
    light = write(tmp_path / "light", text_table(250_000, 4))
    assert light.num_row_groups > 5  # cut by bytes, as before


def test_costly_dictionaries_keep_the_file_near_write_tables_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parquet, "ROW_GROUP_BYTES", 1 << 20)
    monkeypatch.setattr(parquet, "WIDER_GROUP_BYTES", (1 << 20) * 5 // 4)
    table = text_table(250_000, 20_000)
    meta = write(tmp_path / "ours", table)
    ours = pq.read_table(next((tmp_path / "ours").rglob("*.parquet")))
    theirs = tmp_path / "theirs.parquet"
    pq.write_table(ours, theirs)  # the same rows and lineage columns, write_table's groups
    assert meta.num_rows == 250_000
    size = next((tmp_path / "ours").rglob("*.parquet")).stat().st_size
    assert size <= 1.02 * theirs.stat().st_size
