-- 004_topic_contracts: what every topic holds, as the workers report it, so
-- `topics`, `topic NAME`, `job ID` and `status` can answer without reading the
-- sinks.
--
-- cf_topic_contract: one row per version of a topic's schema contract at one
-- sink (a Parquet folder, or sqlite://PATH/TABLE), as the first job that
-- committed under that version reported it. columns_json is a JSON list of
-- {"name", "type"} (Arrow type names for Parquet, declared SQLite types for
-- tables). Versions only grow; a version is recorded once, by the first
-- receipt that names it (later receipts with the same version change nothing).
-- recorded_at is ISO 8601 UTC text, like the seed's TEXT timestamps.
CREATE TABLE cf_topic_contract (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic_name TEXT NOT NULL,
    sink_uri TEXT NOT NULL,
    version INTEGER NOT NULL,
    columns_json TEXT NOT NULL,
    first_job_id INTEGER REFERENCES cf_processing_queue(id) ON DELETE SET NULL,
    recorded_at TEXT NOT NULL,
    UNIQUE (topic_name, sink_uri, version)
);

-- cf_job_topic_output: one row per (job, attempt, topic) that a SUCCESS receipt
-- reported: where it went, how many rows, how many went to <topic>_quarantine.
-- Quarantine topics get rows of their own (rows_quarantined 0). Topic totals
-- take each job's latest attempt, since a re-run replaces its own file.
CREATE TABLE cf_job_topic_output (
    job_id INTEGER NOT NULL REFERENCES cf_processing_queue(id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    topic_name TEXT NOT NULL,
    uri TEXT NOT NULL,
    sink_uri TEXT NOT NULL,
    rows INTEGER NOT NULL DEFAULT 0,
    rows_quarantined INTEGER NOT NULL DEFAULT 0,
    contract_version INTEGER,
    PRIMARY KEY (job_id, attempt, topic_name)
);
CREATE INDEX ix_job_topic_output_topic ON cf_job_topic_output(topic_name, job_id);
