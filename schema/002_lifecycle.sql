-- 002_lifecycle: job lifecycle, attempt history, environments, routing, workers.
--
-- Upgrades a seed database in place: columns are added with ALTER TABLE (their
-- defaults make existing rows valid), the seed's 'PENDING' status becomes
-- 'QUEUED'. Job states: QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED.

-- attempt: dispatch generation, +1 per claim (Dispatch.attempt; a receipt for
-- another attempt is stale). retry_count counts failures; max_attempts is the
-- number of failures allowed before FAILED. not_before: unix time (backoff).
ALTER TABLE cf_processing_queue ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cf_processing_queue ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 3;
ALTER TABLE cf_processing_queue ADD COLUMN not_before REAL;
ALTER TABLE cf_processing_queue ADD COLUMN timeout_s REAL;
ALTER TABLE cf_processing_queue ADD COLUMN worker_id TEXT;
ALTER TABLE cf_processing_queue ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cf_processing_queue ADD COLUMN created_at REAL;
ALTER TABLE cf_processing_queue ADD COLUMN updated_at REAL;
ALTER TABLE cf_processing_queue ADD COLUMN started_at REAL;
ALTER TABLE cf_processing_queue ADD COLUMN error_traceback TEXT;

UPDATE cf_processing_queue SET status = 'QUEUED' WHERE status = 'PENDING';
UPDATE cf_processing_queue
   SET created_at = (julianday('now') - 2440587.5) * 86400.0
 WHERE created_at IS NULL;

-- The seed's ix_queue_pop is (status, priority ASC, id): it cannot serve
-- ORDER BY priority DESC, id ASC without a temp b-tree, so it is replaced.
DROP INDEX IF EXISTS ix_queue_pop;
CREATE INDEX ix_queue_claim ON cf_processing_queue(status, priority DESC, id);
-- Idempotent enqueue: one job per (file version, plugin); retries reuse it.
CREATE UNIQUE INDEX ux_queue_file_plugin ON cf_processing_queue(file_version_id, plugin_name);
-- The dispatcher's "when does the next backoff end" lookup.
CREATE INDEX ix_queue_backoff ON cf_processing_queue(not_before)
    WHERE status = 'QUEUED' AND not_before IS NOT NULL;

-- Writers of the original system insert with the column default 'PENDING'.
CREATE TRIGGER tr_queue_pending_is_queued AFTER INSERT ON cf_processing_queue
WHEN NEW.status = 'PENDING'
BEGIN
    UPDATE cf_processing_queue SET status = 'QUEUED' WHERE id = NEW.id;
END;

-- One row per claim of a job: who ran it and how that attempt ended.
CREATE TABLE cf_job_attempt (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL REFERENCES cf_processing_queue(id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    worker_id TEXT,
    started_at REAL NOT NULL,
    ended_at REAL,
    outcome TEXT CHECK (outcome IN ('COMPLETED', 'FAILED', 'TIMED_OUT', 'WORKER_LOST',
                                    'ABORTED', 'HANDED_BACK', 'CANCELLED')),
    error_message TEXT,
    UNIQUE (job_id, attempt)
);

-- env_hash = SHA-256 of the lockfile; 'system' has no row.
CREATE TABLE cf_plugin_environment (
    env_hash TEXT PRIMARY KEY,
    lockfile TEXT NOT NULL,
    pyproject TEXT,
    python_version TEXT,
    created_at REAL
);

-- Scout routing: a glob on cf_file_location.rel_path picks a plugin.
CREATE TABLE cf_routing_rule (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pattern TEXT NOT NULL,
    plugin_name TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at REAL,
    UNIQUE (pattern, plugin_name)
);

-- What the Sentinel knows of its workers (capabilities: JSON list).
CREATE TABLE cf_worker (
    worker_id TEXT PRIMARY KEY,
    host TEXT,
    pid INTEGER,
    capabilities TEXT NOT NULL DEFAULT '[]',
    slots INTEGER NOT NULL DEFAULT 1,
    status TEXT NOT NULL,
    first_seen REAL,
    last_seen REAL,
    status_since REAL
);

-- manifest_json: the plugin's declared pattern/topics/priority/timeout_s.
ALTER TABLE cf_plugin_manifest ADD COLUMN manifest_json TEXT;
CREATE INDEX ix_manifest_plugin_status ON cf_plugin_manifest(plugin_name, status, id);

CREATE UNIQUE INDEX ux_file_location_path ON cf_file_location(source_root_id, rel_path);
CREATE INDEX ix_file_version_location ON cf_file_version(location_id);
