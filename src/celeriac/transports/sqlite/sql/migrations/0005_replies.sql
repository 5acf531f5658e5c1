-- celeriac schema version 5: rpc:// replies (result_backend = 'rpc://' on a SQLite broker).
-- A worker adds each result for the reply queue its task named (the sending client's
-- reply_to); that client alone takes its rows, oldest (id) first. The rows of a client
-- that went away are deleted once expired (epoch seconds).
CREATE TABLE celeriac_replies (
    id INTEGER PRIMARY KEY,
    reply_to TEXT NOT NULL,
    meta TEXT NOT NULL,
    expires REAL NOT NULL
);

CREATE INDEX celeriac_replies_queue ON celeriac_replies (reply_to, id);

CREATE INDEX celeriac_replies_expires ON celeriac_replies (expires);
