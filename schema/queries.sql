-- Named queries of the store (loaded by casparian_trio.store._sql).
-- One statement per block, named parameters. Dynamic SQL stays in Python.

-- ============================ queue ==========================================

-- name: supersede_queued
-- A new version of a file makes queued jobs of older versions pointless: the
-- job resolves the file by location, so they would process the new content twice.
-- It starts from the file's older versions (few), not from every QUEUED job:
-- queueing a directory of N new files stays O(N), not O(N^2).
UPDATE cf_processing_queue
   SET status = 'CANCELLED',
       error_message = 'superseded by file version ' || :file_version_id,
       updated_at = :now
 WHERE id IN (
       SELECT job.id
         FROM cf_file_version AS older
         JOIN cf_processing_queue AS job ON job.file_version_id = older.id
        WHERE older.location_id = (SELECT location_id FROM cf_file_version WHERE id = :file_version_id)
          AND older.id < :file_version_id
          AND job.plugin_name = :plugin_name
          AND job.status = 'QUEUED');

-- name: enqueue_job
INSERT INTO cf_processing_queue
    (file_version_id, plugin_name, config_overrides, status, priority,
     max_attempts, timeout_s, created_at, updated_at, kind)
VALUES
    (:file_version_id, :plugin_name, :config_overrides, 'QUEUED', :priority,
     :max_attempts, :timeout_s, :now, :now, :kind)
ON CONFLICT (file_version_id, plugin_name, kind) DO NOTHING;

-- name: job_id_by_file_plugin
SELECT id FROM cf_processing_queue
 WHERE file_version_id = :file_version_id AND plugin_name = :plugin_name AND kind = :kind;

-- name: requeue_job
-- Re-run an ended job (retry --force, reprocess, a file that came back): a fresh
-- retry budget, the attempt counter keeps counting.
UPDATE cf_processing_queue
   SET status = 'QUEUED', retry_count = 0, cancel_requested = 0, not_before = NULL,
       error_message = NULL, error_traceback = NULL, worker_id = NULL,
       worker_host = NULL, worker_pid = NULL, end_time = NULL, updated_at = :now,
       priority = :priority
 WHERE id = :id AND status NOT IN ('QUEUED', 'RUNNING');

-- name: jobs_of_location
-- Every job of a plugin on any version of one file location (output identity).
SELECT q.id, q.kind, q.status, q.file_version_id, q.priority FROM cf_processing_queue AS q
  JOIN cf_file_version AS v ON v.id = q.file_version_id
 WHERE v.location_id = :location_id AND q.plugin_name = :plugin_name
 ORDER BY q.id;

-- name: plugins_of_location
-- The plugins that ever parsed a version of one file location.
SELECT DISTINCT q.plugin_name FROM cf_processing_queue AS q
  JOIN cf_file_version AS v ON v.id = q.file_version_id
 WHERE v.location_id = :location_id AND q.kind = 'parse'
 ORDER BY q.plugin_name;

-- The claim walks ix_queue_claim in order (status, priority DESC, id): no sort.
-- name: claim_next_any
SELECT id FROM cf_processing_queue
 WHERE status = 'QUEUED'
   AND (not_before IS NULL OR not_before <= :now)
   AND cancel_requested = 0
 ORDER BY priority DESC, id
 LIMIT 1;

-- :plugins is a JSON list of plugin names.
-- name: claim_next_for_plugins
SELECT id FROM cf_processing_queue
 WHERE status = 'QUEUED'
   AND (not_before IS NULL OR not_before <= :now)
   AND cancel_requested = 0
   AND plugin_name IN (SELECT value FROM json_each(:plugins))
 ORDER BY priority DESC, id
 LIMIT 1;

-- name: mark_claimed
UPDATE cf_processing_queue
   SET status = 'RUNNING', attempt = attempt + 1, worker_id = :worker_id,
       worker_host = :worker_host, worker_pid = :worker_pid, claim_time = :claim_time,
       started_at = :now, updated_at = :now, end_time = NULL, not_before = NULL
 WHERE id = :id AND status = 'QUEUED'
RETURNING *;

-- name: attempt_start
INSERT INTO cf_job_attempt (job_id, attempt, worker_id, started_at)
VALUES (:job_id, :attempt, :worker_id, :now);

-- name: attempt_end
UPDATE cf_job_attempt
   SET ended_at = :now, outcome = :outcome, error_message = :error_message
 WHERE job_id = :job_id AND attempt = :attempt AND ended_at IS NULL;

-- name: job_by_id
SELECT * FROM cf_processing_queue WHERE id = :id;

-- name: job_conclude
UPDATE cf_processing_queue
   SET status = :status, retry_count = :retry_count, not_before = :not_before,
       error_message = :error_message, error_traceback = :error_traceback,
       result_summary = coalesce(:result_summary, result_summary),
       worker_id = :worker_id, worker_host = :worker_host, worker_pid = :worker_pid,
       end_time = :end_time, updated_at = :now
 WHERE id = :id;

-- name: request_cancel_running
UPDATE cf_processing_queue SET cancel_requested = 1, updated_at = :now WHERE id = :id;

-- name: cancel_job
UPDATE cf_processing_queue
   SET status = 'CANCELLED', cancel_requested = 1, not_before = NULL,
       end_time = :end_time, updated_at = :now
 WHERE id = :id;

-- name: retry_job
UPDATE cf_processing_queue
   SET status = 'QUEUED', retry_count = 0, cancel_requested = 0, not_before = NULL,
       error_message = NULL, error_traceback = NULL, worker_id = NULL,
       worker_host = NULL, worker_pid = NULL, end_time = NULL, updated_at = :now
 WHERE id = :id;

-- name: running_jobs
SELECT * FROM cf_processing_queue WHERE status = 'RUNNING' ORDER BY id;

-- name: cancel_requested_jobs
SELECT * FROM cf_processing_queue
 WHERE status = 'RUNNING' AND cancel_requested = 1 ORDER BY id;

-- name: cancel_queued_requests
UPDATE cf_processing_queue
   SET status = 'CANCELLED', not_before = NULL, end_time = :end_time, updated_at = :now
 WHERE status = 'QUEUED' AND cancel_requested = 1;

-- name: next_wakeup
SELECT min(not_before) FROM cf_processing_queue
 WHERE status = 'QUEUED' AND not_before > :now;

-- name: count_by_status
SELECT status, count(*) FROM cf_processing_queue GROUP BY status;

-- name: attempts_of_job
SELECT job_id, attempt, worker_id, started_at, ended_at, outcome, error_message
  FROM cf_job_attempt WHERE job_id = :job_id ORDER BY attempt;

-- ============================ workers ========================================

-- name: upsert_worker
INSERT INTO cf_worker
    (worker_id, host, pid, capabilities, slots, status, first_seen, last_seen, status_since)
VALUES (:worker_id, :host, :pid, :capabilities, :slots, :status, :now, :now, :now)
ON CONFLICT (worker_id) DO UPDATE SET
    host = excluded.host, pid = excluded.pid, capabilities = excluded.capabilities,
    slots = excluded.slots, last_seen = excluded.last_seen,
    status_since = CASE WHEN cf_worker.status = excluded.status
                        THEN cf_worker.status_since ELSE excluded.status_since END,
    status = excluded.status;

-- name: set_worker_status
UPDATE cf_worker
   SET status_since = CASE WHEN status = :status THEN status_since ELSE :now END,
       status = :status
 WHERE worker_id = :worker_id;

-- name: touch_worker
UPDATE cf_worker
   SET status_since = CASE WHEN status = :status THEN status_since ELSE :now END,
       status = :status,
       last_seen = :now
 WHERE worker_id = :worker_id;

-- name: list_workers
SELECT * FROM cf_worker ORDER BY worker_id;

-- name: prune_workers
DELETE FROM cf_worker
 WHERE status IN ('LOST', 'GONE', 'STOPPED')
   AND COALESCE(last_seen, status_since, first_seen, 0) < :before;

-- ============================ sentinel =======================================

-- name: sentinel_start
INSERT INTO cf_sentinel
    (id, pid, host, bind, started_at, last_seen_at, stopped_at, heartbeat_interval_s, liveness_s)
VALUES (1, :pid, :host, :bind, :started_at, :started_at, NULL, :heartbeat_interval_s, :liveness_s)
ON CONFLICT (id) DO UPDATE SET
    pid = excluded.pid, host = excluded.host, bind = excluded.bind,
    started_at = excluded.started_at, last_seen_at = excluded.last_seen_at, stopped_at = NULL,
    heartbeat_interval_s = excluded.heartbeat_interval_s, liveness_s = excluded.liveness_s;

-- Only while the row is still ours: another Sentinel may have started on this
-- database since (it would be refused the port, not the file).
-- name: sentinel_beat
UPDATE cf_sentinel SET last_seen_at = :now
 WHERE id = 1 AND pid = :pid AND host IS :host AND started_at = :started_at
   AND stopped_at IS NULL;

-- name: sentinel_stop
UPDATE cf_sentinel SET last_seen_at = :now, stopped_at = :now
 WHERE id = 1 AND pid = :pid AND host IS :host AND started_at = :started_at
   AND stopped_at IS NULL;

-- name: sentinel_row
SELECT * FROM cf_sentinel WHERE id = 1;

-- ============================ catalog ========================================

-- name: file_of_version
SELECT v.id AS file_version_id, v.content_hash, v.size_bytes, v.modified_time,
       l.id AS location_id, l.rel_path, l.current_version_id,
       l.last_known_size, l.last_known_mtime,
       r.id AS source_root_id, r.path AS root_path
  FROM cf_file_version AS v
  LEFT JOIN cf_file_location AS l ON l.id = v.location_id
  LEFT JOIN cf_source_root AS r ON r.id = l.source_root_id
 WHERE v.id = :file_version_id;

-- name: active_manifest
SELECT * FROM cf_plugin_manifest
 WHERE plugin_name = :plugin_name AND status = 'ACTIVE'
 ORDER BY id DESC LIMIT 1;

-- name: topics_of_plugin
SELECT topic_name, uri, mode, schema_json FROM cf_topic_config
 WHERE plugin_name = :plugin_name ORDER BY id;

-- name: environment
SELECT * FROM cf_plugin_environment WHERE env_hash = :env_hash;

-- name: record_environment
INSERT INTO cf_plugin_environment (env_hash, lockfile, pyproject, python_version, created_at)
VALUES (:env_hash, :lockfile, :pyproject, :python_version, :now)
ON CONFLICT (env_hash) DO NOTHING;

-- name: active_manifest_with_artifact
SELECT id FROM cf_plugin_manifest
 WHERE plugin_name = :plugin_name AND status = 'ACTIVE'
   AND coalesce(artifact_hash, source_hash) = :artifact_hash
 ORDER BY id DESC LIMIT 1;

-- name: manifest_by_source_hash
SELECT id, plugin_name FROM cf_plugin_manifest WHERE source_hash = :source_hash;

-- name: insert_manifest
INSERT INTO cf_plugin_manifest
    (plugin_name, version, source_code, source_hash, status, created_at, deployed_at,
     env_hash, artifact_hash, manifest_json)
VALUES (:plugin_name, :version, :source_code, :source_hash, 'ACTIVE', :iso, :iso,
        :env_hash, :artifact_hash, :manifest_json);

-- name: reactivate_manifest
UPDATE cf_plugin_manifest
   SET version = :version, status = 'ACTIVE', deployed_at = :iso, env_hash = :env_hash,
       artifact_hash = :artifact_hash, manifest_json = :manifest_json
 WHERE id = :id;

-- name: supersede_manifests
UPDATE cf_plugin_manifest SET status = 'SUPERSEDED'
 WHERE plugin_name = :plugin_name AND status = 'ACTIVE' AND id <> :keep_id;

-- name: update_topic
UPDATE cf_topic_config SET uri = :uri, mode = :mode, schema_json = :schema_json
 WHERE plugin_name = :plugin_name AND topic_name = :topic_name;

-- name: insert_topic
INSERT INTO cf_topic_config (plugin_name, topic_name, uri, mode, schema_json)
VALUES (:plugin_name, :topic_name, :uri, :mode, :schema_json);

-- name: insert_routing_rule
INSERT INTO cf_routing_rule (pattern, plugin_name, priority, enabled, created_at)
VALUES (:pattern, :plugin_name, :priority, 1, :now)
ON CONFLICT (pattern, plugin_name) DO NOTHING;

-- name: update_routing_rule
UPDATE cf_routing_rule SET priority = :priority, enabled = 1
 WHERE pattern = :pattern AND plugin_name = :plugin_name
RETURNING id;

-- name: routing_rules
SELECT id, pattern, plugin_name, priority, enabled, created_at
  FROM cf_routing_rule ORDER BY priority DESC, id;

-- name: insert_source_root
INSERT INTO cf_source_root (path) VALUES (:path) ON CONFLICT (path) DO NOTHING;

-- name: source_root_by_path
SELECT id FROM cf_source_root WHERE path = :path;

-- name: source_roots
SELECT id, path, type, active FROM cf_source_root ORDER BY id;

-- name: cancel_queued_retractions
-- The file is back: a retraction still waiting would remove its rows again.
UPDATE cf_processing_queue
   SET status = 'CANCELLED', error_message = 'the file is back', updated_at = :now
 WHERE kind = 'retract' AND status = 'QUEUED'
   AND file_version_id IN (SELECT id FROM cf_file_version WHERE location_id = :location_id);

-- name: location_by_path
SELECT id, current_version_id FROM cf_file_location
 WHERE source_root_id = :source_root_id AND rel_path = :rel_path;

-- name: insert_location
INSERT INTO cf_file_location
    (source_root_id, rel_path, filename, last_known_mtime, last_known_size,
     discovered_time, last_seen_time)
VALUES (:source_root_id, :rel_path, :filename, :mtime, :size, :iso, :iso);

-- Current version: the pointer if set, else the newest version of the location
-- (seed databases leave current_version_id NULL).
-- name: current_version
SELECT id, content_hash FROM cf_file_version
 WHERE location_id = :location_id
 ORDER BY (id = :current_version_id) DESC, id DESC LIMIT 1;

-- name: register_hash
INSERT INTO cf_file_hash_registry (content_hash, first_seen, size_bytes)
VALUES (:content_hash, :iso, :size)
ON CONFLICT (content_hash) DO NOTHING;

-- name: insert_file_version
INSERT INTO cf_file_version (location_id, content_hash, size_bytes, modified_time, detected_at)
VALUES (:location_id, :content_hash, :size, :modified_time, :iso);

-- name: touch_location
UPDATE cf_file_location
   SET last_known_mtime = :mtime, last_known_size = :size,
       current_version_id = :version_id, last_seen_time = :iso, deleted_at = NULL
 WHERE id = :location_id;

-- name: file_location_state
SELECT id, rel_path, last_known_mtime, last_known_size, deleted_at FROM cf_file_location
 WHERE source_root_id = :source_root_id;

-- name: mark_location_deleted
UPDATE cf_file_location SET deleted_at = :now WHERE id = :location_id AND deleted_at IS NULL;

-- name: version_location
SELECT location_id FROM cf_file_version WHERE id = :id;

-- name: version_location_deleted
-- Whether a version's file location is marked deleted (a retraction's precondition).
SELECT l.deleted_at FROM cf_file_version AS v
  JOIN cf_file_location AS l ON l.id = v.location_id
 WHERE v.id = :id;

-- name: location_current
-- Seed databases leave current_version_id NULL: then the newest version (as current_files).
SELECT l.id,
       COALESCE(l.current_version_id,
                (SELECT max(v.id) FROM cf_file_version AS v WHERE v.location_id = l.id))
           AS current_version_id,
       l.deleted_at, l.rel_path
  FROM cf_file_location AS l
 WHERE l.id = :location_id;

-- name: current_files
-- The current version of every file that exists (reprocessing). Seed databases
-- leave current_version_id NULL: then the newest version.
SELECT l.id AS location_id, l.rel_path,
       COALESCE(l.current_version_id,
                (SELECT max(v.id) FROM cf_file_version AS v WHERE v.location_id = l.id))
           AS file_version_id
  FROM cf_file_location AS l
 WHERE l.deleted_at IS NULL
 ORDER BY l.id;

-- name: parsed_locations
-- Locations a plugin has parse jobs for (files it took by `submit` too).
SELECT DISTINCT v.location_id FROM cf_processing_queue AS q
  JOIN cf_file_version AS v ON v.id = q.file_version_id
 WHERE q.plugin_name = :plugin_name AND q.kind = 'parse';

-- Reads for people (store/reports.py): the command line's listings and status numbers.

-- name: job_views
-- Newest first; a NULL filter matches every job. Each job comes with its file.
SELECT q.*, l.rel_path AS file_rel_path, r.path AS file_root_path,
       v.content_hash AS file_content_hash, v.size_bytes AS file_size
  FROM cf_processing_queue AS q
  LEFT JOIN cf_file_version AS v ON v.id = q.file_version_id
  LEFT JOIN cf_file_location AS l ON l.id = v.location_id
  LEFT JOIN cf_source_root AS r ON r.id = l.source_root_id
 WHERE (:status IS NULL OR q.status = :status)
   AND (:plugin IS NULL OR q.plugin_name = :plugin)
 ORDER BY q.id DESC LIMIT :limit;

-- name: job_view
SELECT q.*, l.rel_path AS file_rel_path, r.path AS file_root_path,
       v.content_hash AS file_content_hash, v.size_bytes AS file_size
  FROM cf_processing_queue AS q
  LEFT JOIN cf_file_version AS v ON v.id = q.file_version_id
  LEFT JOIN cf_file_location AS l ON l.id = v.location_id
  LEFT JOIN cf_source_root AS r ON r.id = l.source_root_id
 WHERE q.id = :id;

-- name: job_ids_matching
-- The ids a filtered cancel/retry acts on; a NULL filter matches every job.
SELECT id FROM cf_processing_queue
 WHERE (:status IS NULL OR status = :status)
   AND (:plugin IS NULL OR plugin_name = :plugin)
 ORDER BY id;

-- name: manifest_summary
SELECT id, version, artifact_hash, source_hash, env_hash, deployed_at
  FROM cf_plugin_manifest WHERE plugin_name = :plugin_name AND status = 'ACTIVE'
 ORDER BY id DESC LIMIT 1;

-- name: throughput
-- json_valid guards against the seed's legacy free-text result_summary values.
SELECT count(*) AS jobs,
       coalesce(sum(CASE WHEN json_valid(result_summary)
                         THEN json_extract(result_summary, '$.rows') END), 0) AS rows
  FROM cf_processing_queue
 WHERE status = :status AND updated_at >= :since;

-- name: oldest_queued
SELECT min(created_at) FROM cf_processing_queue WHERE status = 'QUEUED';

-- name: files_per_source
SELECT source_root_id, count(*) FROM cf_file_location GROUP BY source_root_id;

-- name: schema_version
PRAGMA user_version;

-- ============================ topics =========================================
-- What SUCCESS receipts reported per topic (cf_topic_contract, cf_job_topic_output).
-- Totals take each job's latest recorded attempt: a re-run replaces its own file.

-- name: insert_topic_contract
-- The first receipt naming a version records it; later ones change nothing.
INSERT INTO cf_topic_contract
    (topic_name, sink_uri, version, columns_json, first_job_id, recorded_at)
VALUES (:topic_name, :sink_uri, :version, :columns_json, :job_id, :recorded_at)
ON CONFLICT (topic_name, sink_uri, version) DO NOTHING;

-- name: upsert_job_topic_output
INSERT INTO cf_job_topic_output
    (job_id, attempt, topic_name, uri, sink_uri, rows, rows_quarantined, contract_version)
VALUES (:job_id, :attempt, :topic_name, :uri, :sink_uri, :rows, :rows_quarantined,
        :contract_version)
ON CONFLICT (job_id, attempt, topic_name) DO UPDATE
   SET uri = excluded.uri, sink_uri = excluded.sink_uri, rows = excluded.rows,
       rows_quarantined = excluded.rows_quarantined,
       contract_version = excluded.contract_version;

-- name: topic_summaries
-- One row per (topic, sink) that received output, then configured topics that
-- never did (their configured URI, zero counts). Only current output counts
-- (README "One current version per source file"): per (file location, plugin),
-- the job of the newest file version that completed or recorded output, and
-- nothing of a deleted file. Of that job, its latest recorded attempt.
WITH ranked AS (
    SELECT q.id,
           row_number() OVER (PARTITION BY v.location_id, q.plugin_name
                              ORDER BY q.file_version_id DESC, q.id DESC) AS n
      FROM cf_processing_queue AS q
      JOIN cf_file_version AS v ON v.id = q.file_version_id
      JOIN cf_file_location AS loc ON loc.id = v.location_id
     WHERE q.kind = 'parse' AND loc.deleted_at IS NULL
       AND (q.status = 'COMPLETED'
            OR EXISTS (SELECT 1 FROM cf_job_topic_output AS e WHERE e.job_id = q.id))
),
latest AS (
    SELECT o.* FROM cf_job_topic_output AS o
      JOIN ranked AS r ON r.id = o.job_id AND r.n = 1
     WHERE o.attempt = (SELECT max(m.attempt) FROM cf_job_topic_output AS m
                         WHERE m.job_id = o.job_id)
)
SELECT l.topic_name, l.sink_uri,
       (SELECT max(c.version) FROM cf_topic_contract AS c
         WHERE c.topic_name = l.topic_name AND c.sink_uri = l.sink_uri) AS contract_version,
       sum(l.rows) AS rows, count(DISTINCT l.uri) AS files,
       sum(l.rows_quarantined) AS rows_quarantined, count(DISTINCT l.job_id) AS jobs,
       max(l.job_id) AS last_job_id
  FROM latest AS l
 GROUP BY l.topic_name, l.sink_uri
UNION ALL
SELECT t.topic_name, min(t.uri), NULL, 0, 0, 0, 0, NULL
  FROM cf_topic_config AS t
 WHERE t.topic_name NOT IN (SELECT topic_name FROM cf_job_topic_output)
 GROUP BY t.topic_name
 ORDER BY 1, 2;

-- name: topic_contracts
SELECT topic_name, sink_uri, version, columns_json, first_job_id, recorded_at
  FROM cf_topic_contract
 WHERE topic_name = :topic_name
 ORDER BY sink_uri, version;

-- name: job_topic_outputs
-- The topics of a job's latest recorded attempt.
SELECT topic_name, uri, sink_uri, rows, rows_quarantined, contract_version, attempt
  FROM cf_job_topic_output
 WHERE job_id = :job_id
   AND attempt = (SELECT max(attempt) FROM cf_job_topic_output WHERE job_id = :job_id)
 ORDER BY topic_name;

-- name: rows_quarantined_total
SELECT coalesce(sum(o.rows_quarantined), 0) FROM cf_job_topic_output AS o
 WHERE o.attempt = (SELECT max(m.attempt) FROM cf_job_topic_output AS m
                     WHERE m.job_id = o.job_id);

-- ============================ dashboard ======================================
-- Reads of the Sentinel's web dashboard and /metrics (store/dashboard.py). They
-- run on the dashboard's own connection, never on the Sentinel's writer.

-- name: dashboard_job_page
-- Newest first, one page; a NULL filter matches every job. :file matches any part
-- of the file's path under its source; :topic matches jobs that wrote to the topic
-- or whose plugin is configured to write it (queued and failed ones included).
SELECT q.*, l.rel_path AS file_rel_path, r.path AS file_root_path,
       v.content_hash AS file_content_hash, v.size_bytes AS file_size
  FROM cf_processing_queue AS q
  LEFT JOIN cf_file_version AS v ON v.id = q.file_version_id
  LEFT JOIN cf_file_location AS l ON l.id = v.location_id
  LEFT JOIN cf_source_root AS r ON r.id = l.source_root_id
 WHERE (:status IS NULL OR q.status = :status)
   AND (:plugin IS NULL OR q.plugin_name = :plugin)
   AND (:file IS NULL OR instr(l.rel_path, :file) > 0)
   AND (:topic IS NULL
        OR EXISTS (SELECT 1 FROM cf_topic_config AS t
                    WHERE t.plugin_name = q.plugin_name AND t.topic_name = :topic)
        OR EXISTS (SELECT 1 FROM cf_job_topic_output AS o
                    WHERE o.job_id = q.id AND o.topic_name = :topic))
 ORDER BY q.id DESC LIMIT :limit OFFSET :offset;

-- name: dashboard_plugin_names
SELECT DISTINCT plugin_name FROM cf_plugin_manifest ORDER BY plugin_name;

-- name: dashboard_topic_names
SELECT topic_name FROM cf_topic_config
UNION
SELECT DISTINCT topic_name FROM cf_job_topic_output
ORDER BY 1;

-- name: dashboard_throughput
-- Attempts that ended at or after :since, per :bucket_s-wide bucket and outcome.
SELECT CAST((ended_at - :since) / :bucket_s AS INTEGER) AS bucket, outcome, count(*) AS jobs
  FROM cf_job_attempt
 WHERE ended_at >= :since
 GROUP BY bucket, outcome;

-- name: dashboard_attempts_after_id
-- Attempts recorded after :after_id (ended or still running), with their plugin,
-- claim-to-end seconds and, for a completion, the run time the worker measured:
-- the /metrics counters and histograms are fed with these, a scrape at a time.
SELECT a.id, q.plugin_name AS plugin, a.outcome, a.ended_at - a.started_at AS took_s,
       CASE WHEN a.outcome = 'COMPLETED' AND json_valid(q.result_summary)
            THEN json_extract(q.result_summary, '$.metrics.duration_s') END AS run_s
  FROM cf_job_attempt AS a JOIN cf_processing_queue AS q ON q.id = a.job_id
 WHERE a.id > :after_id
 ORDER BY a.id;

-- name: dashboard_attempts_by_ids
-- The same for the attempts still running at the last scrape (:ids, a JSON list).
SELECT a.id, q.plugin_name AS plugin, a.outcome, a.ended_at - a.started_at AS took_s,
       CASE WHEN a.outcome = 'COMPLETED' AND json_valid(q.result_summary)
            THEN json_extract(q.result_summary, '$.metrics.duration_s') END AS run_s
  FROM cf_job_attempt AS a JOIN cf_processing_queue AS q ON q.id = a.job_id
 WHERE a.id IN (SELECT value FROM json_each(:ids));
