-- 005_skipped_jobs: a job whose input is no longer the queued version ends
-- without counting as a failure. cf_processing_queue.status gains SUPERSEDED
-- (the file changed since the scan; the next scan queues the new version) and
-- SKIPPED (the file is gone); the status column has no CHECK to change.
-- cf_job_attempt.outcome gains the same two values: SQLite cannot alter a
-- CHECK, so the table is rebuilt with its rows (ids kept).
CREATE TABLE cf_job_attempt_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL REFERENCES cf_processing_queue(id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    worker_id TEXT,
    started_at REAL NOT NULL,
    ended_at REAL,
    outcome TEXT CHECK (outcome IN ('COMPLETED', 'FAILED', 'TIMED_OUT', 'WORKER_LOST',
                                    'ABORTED', 'HANDED_BACK', 'CANCELLED',
                                    'SUPERSEDED', 'SKIPPED')),
    error_message TEXT,
    UNIQUE (job_id, attempt)
);
INSERT INTO cf_job_attempt_new
    (id, job_id, attempt, worker_id, started_at, ended_at, outcome, error_message)
SELECT id, job_id, attempt, worker_id, started_at, ended_at, outcome, error_message
  FROM cf_job_attempt;
DROP TABLE cf_job_attempt;
ALTER TABLE cf_job_attempt_new RENAME TO cf_job_attempt;
