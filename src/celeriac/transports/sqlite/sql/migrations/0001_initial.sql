-- celeriac schema version 1: broker messages, dead letters, results.
-- Applied inside one transaction by celeriac._sql.migrate.

-- One row per message. A row is in exactly one of three states:
--   ready    eta IS NULL     AND lease_expires IS NULL
--   delayed  eta IS NOT NULL (waits until eta, epoch seconds)
--   leased   lease_expires IS NOT NULL (owned by lease_owner until lease_expires)
-- lease_token grows with every lease, so a stale delivery cannot ack a re-leased row.
CREATE TABLE celeriac_messages (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    payload BLOB NOT NULL,
    eta REAL,
    lease_expires REAL,
    lease_owner TEXT,
    lease_token INTEGER NOT NULL DEFAULT 0,
    delivery_count INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);

-- Fetch order: highest priority first, FIFO (id) within a priority.
CREATE INDEX celeriac_messages_ready
    ON celeriac_messages (queue, priority DESC, id)
    WHERE eta IS NULL AND lease_expires IS NULL;

-- Promotion of due delayed rows and expired leases.
CREATE INDEX celeriac_messages_eta
    ON celeriac_messages (eta) WHERE eta IS NOT NULL;

CREATE INDEX celeriac_messages_lease
    ON celeriac_messages (lease_expires) WHERE lease_expires IS NOT NULL;

-- recover(consumer_id) after a worker process died.
CREATE INDEX celeriac_messages_owner
    ON celeriac_messages (lease_owner) WHERE lease_owner IS NOT NULL;

CREATE TABLE celeriac_dead_letters (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL,
    failed_at REAL NOT NULL
);

-- Result metas as JSON text (celeriac.protocol.json_dumps); expired rows are invisible
-- and deleted lazily.
CREATE TABLE celeriac_results (
    task_id TEXT PRIMARY KEY,
    meta TEXT NOT NULL,
    status TEXT NOT NULL,
    expires REAL
) WITHOUT ROWID;

CREATE INDEX celeriac_results_expires
    ON celeriac_results (expires) WHERE expires IS NOT NULL;
