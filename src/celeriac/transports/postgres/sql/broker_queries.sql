-- Named queries of the PostgreSQL broker; {schema} is its schema. Times: epoch seconds.

-- name: publish
-- One statement (no function call): insert the batch, NOTIFY each queue once at commit.
WITH ins AS (
    INSERT INTO {schema}.messages (queue, priority, payload, eta, created)
    SELECT u.q, u.p, u.b, u.e, %(now)s
    FROM unnest(%(queues)s::text[], %(priorities)s::smallint[], %(payloads)s::bytea[],
                %(etas)s::float8[]) AS u(q, p, b, e)
    RETURNING queue)
SELECT pg_notify(%(chan)s, d.queue) FROM (SELECT DISTINCT queue FROM ins) AS d;

-- name: publish_async
-- The same, committed without waiting for the WAL flush (synchronous_commit=off).
WITH cfg AS (SELECT set_config('synchronous_commit', 'off', true)),
ins AS (
    INSERT INTO {schema}.messages (queue, priority, payload, eta, created)
    SELECT u.q, u.p, u.b, u.e, %(now)s
    FROM unnest(%(queues)s::text[], %(priorities)s::smallint[], %(payloads)s::bytea[],
                %(etas)s::float8[]) AS u(q, p, b, e)
    RETURNING queue)
SELECT pg_notify(%(chan)s, d.queue) FROM (SELECT DISTINCT queue FROM ins) AS d, cfg;

-- name: enqueue
SELECT {schema}.enqueue(%s, %s, %s, %s, %s, %s);

-- name: fetch
SELECT lease_id, queue, payload, delivery_count, revocations
FROM {schema}.fetch(%s::text[], %s, %s, %s, %s, %s::bigint[]);

-- name: next_due
SELECT least(
    (SELECT min(eta) FROM {schema}.messages WHERE eta IS NOT NULL AND queue = ANY(%s::text[])),
    (SELECT min(deadline) FROM {schema}.leases WHERE queue = ANY(%s::text[])));

-- name: ack
SELECT {schema}.ack(%s::bigint[]);

-- name: give_back
SELECT {schema}.give_back(%s::bigint[], %s, %s, %s);

-- name: recover
SELECT {schema}.give_back(ARRAY(
    SELECT lease_id FROM {schema}.leases WHERE owner = %s AND lease_id <> ALL(%s::bigint[])
), NULL, 0, %s);

-- name: extend
SELECT {schema}.extend(%s::bigint[], %s);

-- name: dead_letter
WITH gone AS (DELETE FROM {schema}.leases WHERE lease_id = %s RETURNING queue, payload)
INSERT INTO {schema}.dead_letters (queue, payload, reason, failed_at)
SELECT queue, payload, %s, %s FROM gone;

-- name: dead_letters
SELECT queue, payload, reason, failed_at FROM {schema}.dead_letters ORDER BY id DESC LIMIT %s;

-- name: purge
WITH ready AS (DELETE FROM {schema}.messages WHERE queue = %s RETURNING 1),
expired AS (DELETE FROM {schema}.leases WHERE queue = %s AND deadline <= %s RETURNING 1)
SELECT (SELECT count(*) FROM ready) + (SELECT count(*) FROM expired);

-- name: size
SELECT (SELECT count(*) FROM {schema}.messages WHERE queue = %s)
     + (SELECT count(*) FROM {schema}.leases WHERE queue = %s AND deadline <= %s);

-- name: revoke
INSERT INTO {schema}.revoked AS r (task_id, expires, terminate, signal)
SELECT t, %s, %s, %s FROM unnest(%s::text[]) AS t
ON CONFLICT (task_id) DO UPDATE SET
    expires = greatest(r.expires, excluded.expires),
    terminate = r.terminate OR excluded.terminate,
    signal = coalesce(excluded.signal, r.signal);

-- name: forget_revoked
DELETE FROM {schema}.revoked WHERE expires <= %s;

-- name: revoked
SELECT task_id, terminate, signal FROM {schema}.revoked
WHERE task_id = ANY(%s::text[]) AND expires > %s;

-- name: take_token
SELECT {schema}.take_token(%s, %s, %s, %s);

-- name: fan_notify
SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p;

-- name: fan_store
INSERT INTO {schema}.fanout (payload, created) VALUES (%s, %s) RETURNING id;

-- name: fan_get
SELECT payload FROM {schema}.fanout WHERE id = %s;

-- name: fan_trim
DELETE FROM {schema}.fanout WHERE created < %s;
