"""The drift table and the conformer that applies it (pure pyarrow, no I/O)."""

from __future__ import annotations

import datetime

import pyarrow as pa
import pytest

from casparian_trio.errors import SinkError
from casparian_trio.sinks._drift import Drift, drift, widens
from casparian_trio.sinks._schema import Conformer, unique_names

DRIFT_CASES = [
    (pa.int64(), pa.int64(), Drift.SAME),
    (pa.null(), pa.string(), Drift.LOSSLESS),
    (pa.null(), pa.timestamp("us", tz="UTC"), Drift.LOSSLESS),
    (pa.int32(), pa.int64(), Drift.LOSSLESS),
    (pa.uint8(), pa.int16(), Drift.LOSSLESS),
    (pa.uint64(), pa.int64(), Drift.CHECKED),
    (pa.int64(), pa.int32(), Drift.CHECKED),  # narrowing: a value that does not fit fails
    (pa.float64(), pa.int64(), Drift.CHECKED),  # a fraction fails
    (pa.int32(), pa.float64(), Drift.LOSSLESS),
    (pa.int64(), pa.float64(), Drift.CHECKED),  # beyond 2**53 is not exact
    (pa.float32(), pa.float64(), Drift.LOSSLESS),
    (pa.dictionary(pa.int32(), pa.string()), pa.string(), Drift.LOSSLESS),
    (pa.string(), pa.large_string(), Drift.LOSSLESS),
    (pa.binary(), pa.large_binary(), Drift.LOSSLESS),
    (pa.int64(), pa.string(), Drift.LOSSLESS),
    (pa.string(), pa.int64(), Drift.PARSE),
    (pa.string(), pa.timestamp("ms"), Drift.PARSE),
    (pa.string(), pa.list_(pa.int64()), Drift.FORBIDDEN),
    (pa.timestamp("ms"), pa.timestamp("us"), Drift.LOSSLESS),
    (pa.timestamp("us"), pa.timestamp("ms"), Drift.CHECKED),
    (pa.timestamp("us", tz="UTC"), pa.timestamp("us", tz="Europe/Paris"), Drift.LOSSLESS),
    (pa.timestamp("us"), pa.timestamp("us", tz="UTC"), Drift.FORBIDDEN),
    (pa.timestamp("us", tz="+02:00"), pa.timestamp("us"), Drift.FORBIDDEN),
    (pa.bool_(), pa.int64(), Drift.FORBIDDEN),
]


@pytest.mark.parametrize(("src", "dst", "rule"), DRIFT_CASES)
def test_drift_table(src: pa.DataType, dst: pa.DataType, rule: Drift) -> None:
    assert drift(src, dst) is rule


@pytest.mark.parametrize(
    ("current", "incoming", "expected"),
    [
        (pa.null(), pa.string(), True),
        (pa.int32(), pa.int64(), True),
        (pa.int64(), pa.int32(), False),
        (pa.int64(), pa.string(), False),  # text after numbers is parsed, not a new type
        (pa.string(), pa.string(), False),
    ],
)
def test_widens(current: pa.DataType, incoming: pa.DataType, expected: bool) -> None:
    assert widens(current, incoming) is expected


@pytest.mark.parametrize(
    ("names", "unique"),
    [
        (["a", "b"], ["a", "b"]),
        (["a", "a"], ["a", "a_1"]),
        (["a", "a", "a_1"], ["a", "a_1", "a_1_1"]),
        (["", "x", ""], ["column0", "x", "column2"]),
        (["column1", ""], ["column1", "column1_1"]),
    ],
)
def test_unique_names_as_duckdb(names: list[str], unique: list[str]) -> None:
    assert unique_names(names) == unique


def test_repeated_and_empty_names_are_renamed_and_recorded() -> None:
    c = Conformer("t", 1, 1)
    batch = pa.RecordBatch.from_arrays(
        [pa.array([1]), pa.array([2]), pa.array([3])], ["a", "a", ""]
    )
    out = c.conform(batch).batch
    assert out.schema.names[:3] == ["a", "a_1", "column2"]
    assert out.to_pylist()[0]["a_1"] == 2
    assert c.renamed == {"a_1": "a", "column2": ""}


def test_all_null_first_then_strings_widens_the_job_schema() -> None:
    c = Conformer("t", 1, 1)
    first = c.conform(pa.record_batch({"id": [1, 2], "note": pa.nulls(2)}))
    assert not first.retargeted
    second = c.conform(pa.record_batch({"id": [3], "note": ["hello"]}))
    assert second.retargeted
    assert c.output_schema().field("note").type == pa.string()
    assert second.batch.column(1).to_pylist() == ["hello"]


def test_a_column_missing_from_a_batch_is_nulls() -> None:
    c = Conformer("t", 1, 1)
    c.conform(pa.record_batch({"a": [1], "b": ["x"]}))
    out = c.conform(pa.record_batch({"a": [2]})).batch
    assert out.to_pylist()[0]["b"] is None


def test_naive_then_aware_timestamps_fail_naming_the_column() -> None:
    c = Conformer("t", 1, 1)
    naive = pa.array([datetime.datetime(2026, 1, 1, 12)], pa.timestamp("us"))
    aware = pa.array([datetime.datetime(2026, 1, 1, 10)], pa.timestamp("us", tz="+02:00"))
    c.conform(pa.record_batch({"at": naive}))
    with pytest.raises(SinkError, match=r"column 'at': time-zone-aware .* and naive"):
        c.conform(pa.record_batch({"at": aware}))


def test_a_fraction_into_a_declared_integer_fails_naming_the_row() -> None:
    c = Conformer("t", 1, 1, declared=pa.schema([("n", pa.int64())]))
    c.conform(pa.record_batch({"n": pa.array([1.0, 2.0])}))
    with pytest.raises(SinkError, match=r"column 'n': double value '3\.5' at row 4"):
        c.conform(pa.record_batch({"n": pa.array([3.0, 3.5])}))


def test_bad_values_against_a_declared_type_are_quarantined() -> None:
    c = Conformer("t", job_id=7, file_version_id=8, declared=pa.schema([("val", pa.int64())]))
    values = [str(i) for i in range(10_000)]
    for i in (10, 5000, 9999):
        values[i] = f"bad{i}"
    values[20] = " 42 "  # padded: trimmed, valid
    values[21] = ""  # empty text: null, valid
    out = c.conform(pa.record_batch({"val": values, "other": list(range(10_000))}))
    assert out.batch.num_rows == 9_997
    assert out.batch.column(0).null_count == 1
    assert 42 in out.batch.column(0).to_pylist()
    assert out.quarantine is not None
    rows = out.quarantine.to_pylist()
    assert [(r["row"], r["column"], r["raw_value"]) for r in rows] == [
        (11, "val", "bad10"),
        (5001, "val", "bad5000"),
        (10000, "val", "bad9999"),
    ]
    assert all(r["reason"] == "not a valid int64" for r in rows)
    assert {r["_cf_job_id"] for r in rows} == {7}
    c.check_invalid_fraction()  # 0.03 % is under the default 10 %


def test_max_invalid_fraction_fails_the_job_at_commit() -> None:
    c = Conformer("t", 1, 1, declared=pa.schema([("val", pa.int64())]))
    c.conform(pa.record_batch({"val": ["1"] * 17 + ["x", "y", "z"]}))
    with pytest.raises(SinkError, match=r"3 of 20 rows \(15\.0%\).*max_invalid_fraction 0\.1"):
        c.check_invalid_fraction()


def test_a_handful_of_rows_is_quarantined_whatever_the_share() -> None:
    c = Conformer("t", 1, 1, declared=pa.schema([("val", pa.int64())]))
    out = c.conform(pa.record_batch({"val": ["12", "abc"]}))
    assert out.batch.column(0).to_pylist() == [12]
    c.check_invalid_fraction()  # 1 of 2 is 50 %, but 2 rows say nothing about a file


def test_on_invalid_fail_fails_at_the_first_bad_value() -> None:
    c = Conformer("t", 1, 1, declared=pa.schema([("val", pa.int64())]), on_invalid="fail")
    with pytest.raises(SinkError, match=r"column 'val': 'x' at row 2 is not a valid int64"):
        c.conform(pa.record_batch({"val": ["1", "x"]}))
