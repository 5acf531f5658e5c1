-- celeriac schema version 3: saved group results and chord joins (canvas).

-- GroupResult.save(): Celery's {"result": [[group_id, null], [member tuples]]} as JSON.
CREATE TABLE celeriac_groups (
    group_id TEXT PRIMARY KEY,
    meta TEXT NOT NULL,
    expires REAL
) WITHOUT ROWID;

CREATE INDEX celeriac_groups_expires
    ON celeriac_groups (expires) WHERE expires IS NOT NULL;

-- One row per chord: the header size (set by the producer, or taken from the first
-- member's message), and the claim: NULL, the id of the header task that completed the
-- header and is sending the body (until claim_expires), or 'done' once the body is sent.
CREATE TABLE celeriac_chords (
    group_id TEXT PRIMARY KEY,
    size INTEGER,
    claim TEXT,
    claim_expires REAL NOT NULL DEFAULT 0,
    expires REAL
) WITHOUT ROWID;

CREATE INDEX celeriac_chords_expires
    ON celeriac_chords (expires) WHERE expires IS NOT NULL;

-- Finished header tasks. The primary key is the dedupe: a header task re-run after a
-- lost worker is recorded once. part is Celery's [1, task_id, state, result] JSON.
CREATE TABLE celeriac_chord_parts (
    group_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    part TEXT NOT NULL,
    PRIMARY KEY (group_id, task_id, idx)
) WITHOUT ROWID;
