-- celeriac schema version 4: raw key values of app.backend.get/set/delete (Celery's
-- key-value calls on a result backend).
CREATE TABLE celeriac_key_values (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires REAL
) WITHOUT ROWID;
