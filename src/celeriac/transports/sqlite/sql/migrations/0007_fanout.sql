-- celeriac schema version 7: the pub/sub of remote control and events (Celery's pidbox
-- and celeryev exchanges): publications kept for a minute, read by every listener from
-- the id it started at.
CREATE TABLE celeriac_fanout (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX celeriac_fanout_created ON celeriac_fanout (created);
-- who listens (a glob of channels), refreshed every few seconds: a publication no live
-- listener wants is not written, as a pub/sub publication nobody subscribed to is lost
CREATE TABLE celeriac_fanout_listeners (
    id TEXT PRIMARY KEY,
    glob TEXT NOT NULL,
    seen REAL NOT NULL
) WITHOUT ROWID;
