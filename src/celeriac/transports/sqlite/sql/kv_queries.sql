-- Named queries of app.backend.get/set/delete (celeriac.transports.sqlite.backend).
-- Times are epoch seconds (time.time()); an expired row is invisible.

-- name: kv_get
SELECT value FROM celeriac_key_values
WHERE key = :key AND (expires IS NULL OR expires > :now);

-- name: kv_set
INSERT INTO celeriac_key_values (key, value, expires)
VALUES (:key, :value, :expires)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires;

-- name: kv_delete
DELETE FROM celeriac_key_values WHERE key = :key OR (expires IS NOT NULL AND expires <= :now);
