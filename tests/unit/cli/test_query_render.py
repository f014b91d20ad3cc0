"""``query``'s output formats: the result as DuckDB returned it (issue 11)."""

from __future__ import annotations

import json

from casparian_trio.cli.query import render


def test_json_keeps_values_and_column_order_and_is_valid_json() -> None:
    columns = ["order_id", "shipped_at", "score"]
    rows = [(7, "2024-05-01", float("nan")), (8, 1, [float("inf")])]
    text = render(columns, rows, as_json=True, as_csv=False)
    document = json.loads(text, parse_constant=lambda c: f"invalid {c}")
    assert document == [
        {"order_id": 7, "shipped_at": "2024-05-01", "score": None},
        {"order_id": 8, "shipped_at": 1, "score": [None]},
    ]
    assert list(document[0]) == columns  # the SELECT's order, not sorted


def test_json_keeps_every_column_of_a_join_with_shared_names() -> None:
    # SELECT * over two topics: both have the lineage columns.
    columns = ["_cf_job_id", "v", "_cf_job_id", "x_1", "x", "x"]
    text = render(columns, [(1, 2, 3, 4, 5, 6)], as_json=True, as_csv=False)
    assert json.loads(text) == [
        {"_cf_job_id": 1, "v": 2, "_cf_job_id_1": 3, "x_1": 4, "x": 5, "x_2": 6}
    ]
