-- 006_output_identity: one current version per source file (README "One current
-- version per source file").
--
-- cf_processing_queue.kind: 'parse' (run the plugin on the file version) or
-- 'retract' (the file was deleted: remove its output from every topic of the
-- plugin). A file version has at most one job of each kind per plugin, so the
-- unique index gains the column.
-- cf_file_location.deleted_at: when a scan found the file gone (unix seconds);
-- NULL while it exists. A file that comes back clears it.
ALTER TABLE cf_processing_queue ADD COLUMN kind TEXT NOT NULL DEFAULT 'parse';
DROP INDEX ux_queue_file_plugin;
CREATE UNIQUE INDEX ux_queue_file_plugin_kind
    ON cf_processing_queue(file_version_id, plugin_name, kind);
ALTER TABLE cf_file_location ADD COLUMN deleted_at REAL;
