"""The DuckDB catalog's views: one per topic, each file's rows once (issue 11)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from casparian_trio import duck_catalog


def write(folder: Path, name: str, values: list[int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"v": values}), folder / name)


def rows(plan: duck_catalog.CatalogPlan, sql: str) -> list[tuple[object, ...]]:
    conn = duckdb.connect()
    duck_catalog.create_views(conn, plan)
    return conn.execute(sql).fetchall()


def test_one_view_per_topic_over_both_naming_schemes(tmp_path: Path) -> None:
    sales = tmp_path / "sales"
    write(sales, "sales.src-1.p.parquet", [1, 2])
    write(sales, "sales.job-9.parquet", [3])
    write(sales, "other.src-1.p.parquet", [100])  # another topic in the same folder
    (sales / ".sales.src-2.p.parquet.abcd.staging").write_bytes(b"partial")
    plan = duck_catalog.plan_views([{"topic_name": "sales", "sink_uri": str(sales)}])
    assert [v.name for v in plan.views] == ["sales"]
    assert rows(plan, "SELECT sum(v), count(*) FROM sales") == [(6, 3)]


def test_shared_topic_names_get_one_view_per_folder_and_odd_folders_work(
    tmp_path: Path,
) -> None:
    a, b = tmp_path / "plug a [v1]", tmp_path / "b's"
    write(a, "output.src-1.a.parquet", [1])
    write(b, "output.src-2.b.parquet", [2, 3])
    listed = [
        {"topic_name": "output", "sink_uri": str(a)},
        {"topic_name": "output", "sink_uri": str(b)},
        {"topic_name": "t", "sink_uri": "sqlite://x.db/t"},
        {"topic_name": "empty", "sink_uri": str(tmp_path / "none")},
    ]
    plan = duck_catalog.plan_views(listed)
    assert sorted(v.name for v in plan.views) == ["b's__output", "plug a [v1]__output"]
    assert len(plan.skipped) == 2
    assert rows(plan, 'SELECT count(*) FROM "b\'s__output"') == [(2,)]
    assert rows(plan, 'SELECT count(*) FROM "plug a [v1]__output"') == [(1,)]


def test_write_catalog_replaces_the_file(tmp_path: Path) -> None:
    write(tmp_path / "t", "t.src-1.p.parquet", [1, 2, 3])
    plan = duck_catalog.plan_views([{"topic_name": "t", "sink_uri": str(tmp_path / "t")}])
    out = tmp_path / "cat.duckdb"
    duck_catalog.write_catalog(out, plan)
    duck_catalog.write_catalog(out, plan)  # again: replaced, not appended to
    conn = duckdb.connect(str(out), read_only=True)
    assert conn.execute("SELECT count(*) FROM t").fetchall() == [(3,)]
    conn.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.duckdb", "t"]


def test_view_names_that_differ_only_in_case_do_not_replace_each_other(tmp_path: Path) -> None:
    # DuckDB identifiers are case-insensitive: "Sales" and "sales" are one view.
    write(tmp_path / "x" / "a", "Sales.src-1.p.parquet", [1])
    write(tmp_path / "y" / "a", "sales.src-2.q.parquet", [2, 3])
    write(tmp_path / "z" / "a", "sales.src-3.r.parquet", [4, 5, 6])
    listed = [
        {"topic_name": "Sales", "sink_uri": str(tmp_path / "x" / "a")},
        {"topic_name": "sales", "sink_uri": str(tmp_path / "y" / "a")},
        {"topic_name": "sales", "sink_uri": str(tmp_path / "z" / "a")},
    ]
    plan = duck_catalog.plan_views(listed)
    names = [v.name for v in plan.views]
    assert len({n.casefold() for n in names}) == 3, names
    counts = sorted(
        rows(plan, f"SELECT count(*) FROM {duck_catalog.quote_identifier(n)}")[0][0] for n in names
    )
    assert counts == [1, 2, 3]
