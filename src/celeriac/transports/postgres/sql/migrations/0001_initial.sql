-- celeriac PostgreSQL schema, version 1. Applied by celeriac.transports.postgres.db.migrate
-- in one transaction, under an advisory lock; {schema} is the configured schema (quoted).
-- Times are epoch seconds (the clients' time.time()), as on SQLite.

-- Waiting messages: ready (eta IS NULL) or delayed (eta: epoch seconds).
CREATE TABLE {schema}.messages (
    id bigserial PRIMARY KEY,
    queue text NOT NULL,
    priority smallint NOT NULL DEFAULT 0,
    payload bytea NOT NULL,
    eta double precision,
    delivery_count integer NOT NULL DEFAULT 0,
    created double precision NOT NULL
);
-- fetch order: highest priority first, FIFO (id) within a priority
CREATE INDEX messages_ready ON {schema}.messages (queue, priority DESC, id) WHERE eta IS NULL;
CREATE INDEX messages_eta ON {schema}.messages (eta) WHERE eta IS NOT NULL;

-- Leased messages: moved here by a fetch, deleted by an ack, moved back when the lease
-- (deadline) expires, or by recover(owner) when the worker process died. lease_id is
-- new for every lease, so a stale delivery cannot ack the next lease of its message.
CREATE TABLE {schema}.leases (
    lease_id bigserial PRIMARY KEY,
    msg_id bigint NOT NULL,
    queue text NOT NULL,
    priority smallint NOT NULL,
    payload bytea NOT NULL,
    owner text,
    deadline double precision NOT NULL,
    delivery_count integer NOT NULL,
    created double precision NOT NULL
);
CREATE INDEX leases_deadline ON {schema}.leases (deadline);
CREATE INDEX leases_owner ON {schema}.leases (owner) WHERE owner IS NOT NULL;

CREATE TABLE {schema}.dead_letters (
    id bigserial PRIMARY KEY,
    queue text NOT NULL,
    payload bytea NOT NULL,
    reason text NOT NULL,
    failed_at double precision NOT NULL
);

CREATE TABLE {schema}.revoked (
    task_id text PRIMARY KEY,
    expires double precision NOT NULL,
    terminate boolean NOT NULL DEFAULT false,
    signal text
);
CREATE INDEX revoked_expires ON {schema}.revoked (expires);

CREATE TABLE {schema}.buckets (
    key text PRIMARY KEY,
    tokens double precision NOT NULL,
    updated double precision NOT NULL
);

CREATE TABLE {schema}.beat_runs (name text PRIMARY KEY, last_run bigint NOT NULL);
CREATE TABLE {schema}.beat_entries (name text PRIMARY KEY, data bytea NOT NULL);

-- Remote control and events travel by NOTIFY; a payload too large for NOTIFY is kept
-- here for a minute and the notification names its id.
CREATE TABLE {schema}.fanout (
    id bigserial PRIMARY KEY,
    payload bytea NOT NULL,
    created double precision NOT NULL
);
CREATE INDEX fanout_created ON {schema}.fanout (created);

-- Result metas (JSON text), expired rows invisible and deleted lazily.
CREATE TABLE {schema}.results (
    task_id text PRIMARY KEY,
    meta text NOT NULL,
    status text NOT NULL,
    expires double precision
);
CREATE INDEX results_expires ON {schema}.results (expires) WHERE expires IS NOT NULL;

CREATE TABLE {schema}.groups (
    group_id text PRIMARY KEY,
    meta text NOT NULL,
    expires double precision
);

-- Chords: header size, the claim (NULL, the header task id firing the body until
-- claim_expires, or 'done'), and the finished header tasks (deduplicated by key).
CREATE TABLE {schema}.chords (
    group_id text PRIMARY KEY,
    size integer,
    claim text,
    claim_expires double precision NOT NULL DEFAULT 0,
    expires double precision
);
CREATE TABLE {schema}.chord_parts (
    group_id text NOT NULL,
    task_id text NOT NULL,
    idx integer NOT NULL,
    part text NOT NULL,
    PRIMARY KEY (group_id, task_id, idx)
);

CREATE TABLE {schema}.key_values (
    key text PRIMARY KEY,
    value bytea NOT NULL,
    expires double precision
);

-- One round trip of the worker's steady state: ack, bring due delayed messages and
-- expired leases back, lease up to n messages of the queues (in the order given; the
-- caller rotates it), each row taken with SKIP LOCKED so consumers never wait on each
-- other.
CREATE FUNCTION {schema}.fetch(
    queues text[], n integer, lease_owner text, lease_seconds double precision,
    now double precision, acks bigint[]
) RETURNS TABLE (
    lease_id bigint, msg_id bigint, queue text, priority smallint, payload bytea,
    delivery_count integer, revocations boolean
) LANGUAGE plpgsql AS $$
DECLARE
    q text;
    got integer := 0;
    step integer;
    revoked boolean;
BEGIN
    -- a lost lease or ack (server crash) only means a redelivery: no WAL flush wait
    PERFORM set_config('synchronous_commit', 'off', true);
    IF cardinality(acks) > 0 THEN
        DELETE FROM {schema}.leases l WHERE l.lease_id = ANY(acks);
    END IF;
    IF n <= 0 THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM {schema}.messages m WHERE m.eta <= now) THEN
        UPDATE {schema}.messages m SET eta = NULL WHERE m.id IN (
            SELECT d.id FROM {schema}.messages d WHERE d.eta <= now
            FOR UPDATE SKIP LOCKED);
    END IF;
    IF EXISTS (SELECT 1 FROM {schema}.leases l WHERE l.deadline <= now) THEN
        WITH back AS (
            DELETE FROM {schema}.leases l WHERE l.lease_id IN (
                SELECT e.lease_id FROM {schema}.leases e WHERE e.deadline <= now
                FOR UPDATE SKIP LOCKED)
            RETURNING l.*)
        INSERT INTO {schema}.messages (id, queue, priority, payload, eta, delivery_count, created)
        SELECT b.msg_id, b.queue, b.priority, b.payload, NULL, b.delivery_count, b.created
        FROM back b;
    END IF;
    -- whether any revocation is in force: when none is, the worker need not look its
    -- messages up in the revocation store (one round trip less per batch)
    revoked := EXISTS (SELECT 1 FROM {schema}.revoked r WHERE r.expires > now);
    FOREACH q IN ARRAY queues LOOP
        RETURN QUERY
        WITH picked AS (
            SELECT m.id FROM {schema}.messages m
            WHERE m.queue = q AND m.eta IS NULL
            ORDER BY m.priority DESC, m.id
            LIMIT n - got
            FOR UPDATE SKIP LOCKED),
        moved AS (
            DELETE FROM {schema}.messages m USING picked p WHERE m.id = p.id
            RETURNING m.*)
        INSERT INTO {schema}.leases AS l
            (msg_id, queue, priority, payload, owner, deadline, delivery_count, created)
        SELECT v.id, v.queue, v.priority, v.payload, lease_owner, now + lease_seconds,
               v.delivery_count + 1, v.created
        FROM moved v ORDER BY v.priority DESC, v.id
        RETURNING l.lease_id, l.msg_id, l.queue, l.priority, l.payload, l.delivery_count,
            revoked;
        GET DIAGNOSTICS step = ROW_COUNT;
        got := got + step;
        EXIT WHEN got >= n;
    END LOOP;
END
$$;

-- Return leases to their queue (requeue, recover): the message keeps its id, so its
-- place in the queue.
CREATE FUNCTION {schema}.give_back(
    ids bigint[], due double precision, uncount integer, chan text
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    moved integer;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    WITH back AS (DELETE FROM {schema}.leases l WHERE l.lease_id = ANY(ids) RETURNING l.*),
    ins AS (
        INSERT INTO {schema}.messages
            (id, queue, priority, payload, eta, delivery_count, created)
        SELECT b.msg_id, b.queue, b.priority, b.payload, due,
               greatest(b.delivery_count - uncount, 0), b.created
        FROM back b RETURNING queue)
    SELECT count(*) INTO moved FROM ins;
    IF moved > 0 THEN  -- '' wakes the consumers of every queue
        PERFORM pg_notify(chan, '');
    END IF;
    RETURN moved;
END
$$;

-- Acks, and lease extensions, without waiting for a WAL flush (see fetch).
CREATE FUNCTION {schema}.ack(ids bigint[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    DELETE FROM {schema}.leases l WHERE l.lease_id = ANY(ids);
END
$$;

CREATE FUNCTION {schema}.extend(ids bigint[], until double precision)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE {schema}.leases l SET deadline = until WHERE l.lease_id = ANY(ids);
END
$$;

-- Global rate limits: one token-bucket step under the bucket's row lock; the seconds
-- to wait (0: a token was taken). A new bucket starts full.
CREATE FUNCTION {schema}.take_token(
    bucket text, rate double precision, capacity double precision, now double precision
) RETURNS double precision LANGUAGE plpgsql AS $$
DECLARE
    level double precision;
    last double precision;
BEGIN
    INSERT INTO {schema}.buckets AS b (key, tokens, updated) VALUES (bucket, capacity, now)
    ON CONFLICT (key) DO NOTHING;
    SELECT b.tokens, b.updated INTO level, last FROM {schema}.buckets b
    WHERE b.key = bucket FOR UPDATE;
    level := least(capacity, level + greatest(0, now - last) * rate);
    IF level >= 1.0 THEN
        UPDATE {schema}.buckets b SET tokens = level - 1.0, updated = now WHERE b.key = bucket;
        RETURN 0.0;
    END IF;
    UPDATE {schema}.buckets b SET tokens = level, updated = now WHERE b.key = bucket;
    RETURN (1.0 - level) / rate;
END
$$;

-- One message, for transactional enqueue on a client's own connection (scalar
-- arguments: any driver can pass them).
CREATE FUNCTION {schema}.enqueue(
    chan text, queue text, priority integer, payload bytea, eta double precision,
    now double precision
) RETURNS void LANGUAGE sql AS $$
    INSERT INTO {schema}.messages (queue, priority, payload, eta, created)
    VALUES (queue, priority, payload, eta, now);
    SELECT pg_notify(chan, queue);
$$;

-- Store result metas and NOTIFY the ids of the ready ones (comma-separated, in
-- payloads under NOTIFY's 8000 bytes), so waiting clients read only when theirs came.
CREATE FUNCTION {schema}.store_results(
    chan text, ids text[], metas text[], statuses text[], expiries double precision[],
    ready text[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    note text := '';
    id text;
BEGIN
    -- results are written before the ack of their message (and WAL is written in
    -- order): a result lost in a server crash comes with its ack, and the task runs again
    PERFORM set_config('synchronous_commit', 'off', true);
    INSERT INTO {schema}.results AS r (task_id, meta, status, expires)
    SELECT u.i, u.m, u.s, u.e FROM unnest(ids, metas, statuses, expiries) AS u(i, m, s, e)
    ON CONFLICT (task_id) DO UPDATE
    SET meta = excluded.meta, status = excluded.status, expires = excluded.expires;
    FOR id IN SELECT u.i FROM unnest(ids, statuses) AS u(i, s) WHERE u.s = ANY(ready) LOOP
        IF length(note) + length(id) > 7000 THEN
            PERFORM pg_notify(chan, note);
            note := '';
        END IF;
        note := CASE WHEN note = '' THEN id ELSE note || ',' || id END;
    END LOOP;
    IF note <> '' THEN
        PERFORM pg_notify(chan, note);
    END IF;
END
$$;
