"""Sink URI confinement and schema_def enforcement (no Trio, no guest)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from casparian_trio.errors import SinkError
from casparian_trio.protocol.messages import SinkConfig
from casparian_trio.sinks import open_sinks
from casparian_trio.sinks._schema import Conformer, parse_schema_def
from casparian_trio.sinks._uri import parse_sink_uri, safe_name


@pytest.mark.parametrize(
    ("uri", "rel", "table"),
    [
        ("parquet://test_output.parquet", "test_output.parquet", None),
        ("parquet://a/b", "a/b", None),
        ("sqlite://db/x.sqlite/events", "db/x.sqlite", "events"),
    ],
)
def test_good_uris(tmp_path: Path, uri: str, rel: str, table: str | None) -> None:
    target = parse_sink_uri(uri, tmp_path, "t")
    assert target.path == (tmp_path / rel).resolve()
    assert target.table == table


@pytest.mark.parametrize(
    "uri",
    [
        "parquet://../x",
        "parquet://a/../../x",
        "parquet:///abs",
        "parquet://",
        "s3://b/k",
        "nothing",
        "sqlite://x.db/1bad",
    ],
)
def test_bad_uris(tmp_path: Path, uri: str) -> None:
    with pytest.raises(SinkError, match="bad sink URI"):
        parse_sink_uri(uri, tmp_path, "t")


def test_symlink_escape(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(SinkError, match="outside the output root"):
        parse_sink_uri("parquet://link/x", tmp_path / "root", "t")


def test_safe_name_and_duplicate_topic(tmp_path: Path) -> None:
    assert safe_name("../evil/topic") == "_evil_topic"
    sinks = [SinkConfig("a", "parquet://x"), SinkConfig("a", "parquet://y")]
    with pytest.raises(SinkError, match="more than one sink"):
        open_sinks(sinks, output_root=tmp_path, job_id=1, file_version_id=1)


def test_schema_def_forms() -> None:
    as_dict = parse_schema_def('{"id": "int64", "when": "timestamp[ms]"}', "t")
    as_list = parse_schema_def(
        '[{"name": "id", "type": "int64"}, {"name": "when", "type": "timestamp[ms]"}]', "t"
    )
    assert as_dict == as_list == pa.schema([("id", pa.int64()), ("when", pa.timestamp("ms"))])
    with pytest.raises(SinkError, match="invalid schema_def"):
        parse_schema_def('{"id": "integer-ish"}', "t")


def test_conform_casts_orders_and_adds_lineage() -> None:
    c = Conformer(
        "t",
        job_id=5,
        file_version_id=9,
        declared=pa.schema([("id", pa.int64()), ("v", pa.float64())]),
        source_hash="ab12",
        parser_version="sales 1.2.0",
    )
    batch = pa.record_batch({"extra": ["x"], "v": ["2.5"], "id": pa.array([1], pa.int32())})
    out = c.conform(batch)
    assert out.quarantine is None
    assert out.batch.schema.names == [
        "id",
        "v",
        "extra",
        "_cf_job_id",
        "_cf_file_version_id",
        "_cf_source_hash",
        "_cf_parser_version",
    ]
    assert out.batch.to_pylist() == [
        {
            "id": 1,
            "v": 2.5,
            "extra": "x",
            "_cf_job_id": 5,
            "_cf_file_version_id": 9,
            "_cf_source_hash": "ab12",
            "_cf_parser_version": "sales 1.2.0",
        }
    ]
    assert pa.types.is_dictionary(out.batch.schema.field("_cf_source_hash").type)


def test_a_user_column_with_the_lineage_prefix_fails_naming_it() -> None:
    c = Conformer("t", 1, 1)
    with pytest.raises(SinkError, match="column '_cf_job_id' uses the reserved prefix '_cf_'"):
        c.conform(pa.record_batch({"a": [1], "_cf_job_id": [99]}))
