-- Beat's store (celeriac/transports/postgres/schedule.py). Times: whole milliseconds.

-- name: runs
SELECT name, last_run FROM {schema}.beat_runs WHERE name = ANY(%s::text[]);

-- name: claim_first
INSERT INTO {schema}.beat_runs (name, last_run) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING;

-- name: claim_next
UPDATE {schema}.beat_runs SET last_run = %s WHERE name = %s AND last_run = %s AND last_run < %s;

-- name: forget_run
DELETE FROM {schema}.beat_runs WHERE name = %s;

-- name: entries
SELECT name, data FROM {schema}.beat_entries;

-- name: set_entry
INSERT INTO {schema}.beat_entries (name, data) VALUES (%s, %s)
ON CONFLICT (name) DO UPDATE SET data = excluded.data;

-- name: forget_entry
DELETE FROM {schema}.beat_entries WHERE name = %s;
