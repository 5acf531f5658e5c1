-- celeriac schema version 5: beat's store (the last run of each periodic entry, claimed
-- in the transaction that publishes its message, and the entries added at runtime).
CREATE TABLE celeriac_beat_runs (
    name TEXT PRIMARY KEY,
    last_run INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE celeriac_beat_entries (
    name TEXT PRIMARY KEY,
    data BLOB NOT NULL
) WITHOUT ROWID;
