-- celeriac schema version 2: durable revocations and global rate limits.

-- A revoked task id, kept until expires (epoch seconds); every worker, including one
-- started after the revoke, checks it before running a message with that id.
CREATE TABLE celeriac_revoked (
    task_id TEXT PRIMARY KEY,
    expires REAL NOT NULL,
    terminate INTEGER NOT NULL DEFAULT 0,
    signal TEXT
) WITHOUT ROWID;

CREATE INDEX celeriac_revoked_expires ON celeriac_revoked (expires);

-- One token bucket per rate-limited task (rate_limit_scope="global"): tokens left at
-- updated (epoch seconds); refilled at the task's rate when read.
CREATE TABLE celeriac_buckets (
    key TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    updated REAL NOT NULL
) WITHOUT ROWID;
