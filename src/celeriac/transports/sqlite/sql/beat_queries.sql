-- Beat's store (celeriac/transports/sqlite/schedule.py). Times: whole milliseconds.

-- name: runs
SELECT name, last_run FROM celeriac_beat_runs
WHERE name IN (SELECT value FROM json_each(:names));

-- name: run_of
SELECT last_run FROM celeriac_beat_runs WHERE name = :name;

-- name: set_run
INSERT INTO celeriac_beat_runs (name, last_run) VALUES (:name, :slot)
ON CONFLICT (name) DO UPDATE SET last_run = excluded.last_run;

-- name: forget_run
DELETE FROM celeriac_beat_runs WHERE name = :name;

-- name: entries
SELECT name, data FROM celeriac_beat_entries;

-- name: set_entry
INSERT INTO celeriac_beat_entries (name, data) VALUES (:name, :data)
ON CONFLICT (name) DO UPDATE SET data = excluded.data;

-- name: forget_entry
DELETE FROM celeriac_beat_entries WHERE name = :name;
