-- Named queries of the PostgreSQL result backend; {schema} is its schema.
-- Times are epoch seconds; an expired row is invisible.

-- name: store
SELECT {schema}.store_results(%s, %s::text[], %s::text[], %s::text[], %s::float8[], %s::text[]);

-- name: get_many
SELECT task_id, meta FROM {schema}.results
WHERE task_id = ANY(%s::text[]) AND (expires IS NULL OR expires > %s);

-- name: get_ready
SELECT task_id, meta FROM {schema}.results
WHERE task_id = ANY(%s::text[]) AND status = ANY(%s::text[])
  AND (expires IS NULL OR expires > %s);

-- name: forget
DELETE FROM {schema}.results WHERE task_id = %s;

-- name: delete_expired
DELETE FROM {schema}.results WHERE expires <= %s;

-- name: kv_get
SELECT value FROM {schema}.key_values WHERE key = %s AND (expires IS NULL OR expires > %s);

-- name: kv_set
INSERT INTO {schema}.key_values (key, value, expires) VALUES (%s, %s, %s)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires;

-- name: kv_delete
DELETE FROM {schema}.key_values WHERE key = %s OR expires <= %s;

-- name: save_group
INSERT INTO {schema}.groups (group_id, meta, expires) VALUES (%s, %s, %s)
ON CONFLICT (group_id) DO UPDATE SET meta = excluded.meta, expires = excluded.expires;

-- name: restore_group
SELECT meta FROM {schema}.groups WHERE group_id = %s AND (expires IS NULL OR expires > %s);

-- name: forget_group
DELETE FROM {schema}.groups WHERE group_id = %s;

-- name: chord_lock
SELECT size, claim, claim_expires, expires FROM {schema}.chords WHERE group_id = %s FOR UPDATE;

-- name: chord_reset
DELETE FROM {schema}.chord_parts WHERE group_id = %s;

-- name: chord_drop
DELETE FROM {schema}.chords WHERE group_id = %s;

-- name: chord_start
-- A chord sent again with the same group id is a new run: its 'done' mark goes.
INSERT INTO {schema}.chords AS c (group_id, size, expires) VALUES (%s, %s, %s)
ON CONFLICT (group_id) DO UPDATE SET size = excluded.size, expires = excluded.expires,
  claim = CASE WHEN c.claim = 'done' THEN NULL ELSE c.claim END;

-- name: chord_touch
INSERT INTO {schema}.chords AS c (group_id, size, expires) VALUES (%s, %s, %s)
ON CONFLICT (group_id) DO UPDATE
SET size = coalesce(c.size, excluded.size), expires = excluded.expires
RETURNING size, claim, claim_expires;

-- name: chord_grow
UPDATE {schema}.chords SET size = size + %s WHERE group_id = %s AND size IS NOT NULL;

-- name: chord_add_part
INSERT INTO {schema}.chord_parts (group_id, task_id, idx, part) VALUES (%s, %s, %s, %s)
ON CONFLICT DO NOTHING;

-- name: chord_count
SELECT count(*) FROM {schema}.chord_parts WHERE group_id = %s;

-- name: chord_claim
UPDATE {schema}.chords SET claim = %s, claim_expires = %s WHERE group_id = %s;

-- name: chord_parts
SELECT part FROM {schema}.chord_parts WHERE group_id = %s ORDER BY idx;

-- name: chord_done
UPDATE {schema}.chords SET claim = 'done', expires = %s WHERE group_id = %s AND claim = %s;

-- name: delete_expired_canvas
WITH parts AS (
    DELETE FROM {schema}.chord_parts WHERE group_id IN (
        SELECT group_id FROM {schema}.chords WHERE expires <= %s)),
chords AS (DELETE FROM {schema}.chords WHERE expires <= %s)
DELETE FROM {schema}.groups WHERE expires <= %s;
