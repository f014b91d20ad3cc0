-- 003_sentinel: the Sentinel's own heartbeat, so operator commands in other
-- processes (`status`, `workers`) can tell a running Sentinel from a stopped one.
--
-- One row (id = 1): the Sentinel that last started on this database. It writes
-- the row when it starts, refreshes last_seen_at every heartbeat interval and
-- sets stopped_at on a clean exit; a Sentinel killed outright leaves
-- last_seen_at to age past liveness_s. Times are unix seconds. A beat or a stop
-- only touches the row while it is still that Sentinel's (pid, host, started_at).
CREATE TABLE cf_sentinel (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid INTEGER NOT NULL,
    host TEXT,
    bind TEXT NOT NULL,
    started_at REAL NOT NULL,
    last_seen_at REAL NOT NULL,
    stopped_at REAL,
    heartbeat_interval_s REAL NOT NULL,
    liveness_s REAL NOT NULL
);

-- cf_worker.status gains STOPPED (a worker that said goodbye), next to IDLE,
-- BUSY, DRAINING, UNHEALTHY, LOST and GONE; the column has no CHECK to change.
