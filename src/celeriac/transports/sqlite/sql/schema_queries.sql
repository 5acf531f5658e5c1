-- Bookkeeping for celeriac._sql.migrate.

-- name: create_schema_table
CREATE TABLE IF NOT EXISTS celeriac_schema (version INTEGER NOT NULL);

-- name: schema_version
SELECT max(version) FROM celeriac_schema;

-- name: clear_schema_version
DELETE FROM celeriac_schema;

-- name: set_schema_version
INSERT INTO celeriac_schema (version) VALUES (:version);
