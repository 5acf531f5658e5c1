-- Named queries of celeriac.backends.sqlite. Times are epoch seconds (time.time()).

-- name: store
INSERT INTO celeriac_results (task_id, meta, status, expires)
VALUES (:task_id, :meta, :status, :expires)
ON CONFLICT (task_id) DO UPDATE
SET meta = excluded.meta, status = excluded.status, expires = excluded.expires;

-- name: get
SELECT meta FROM celeriac_results
WHERE task_id = :task_id AND (expires IS NULL OR expires > :now);

-- name: get_many
SELECT task_id, meta FROM celeriac_results
WHERE task_id IN (SELECT value FROM json_each(:task_ids))
  AND (expires IS NULL OR expires > :now);

-- name: get_ready
SELECT task_id, meta FROM celeriac_results
WHERE task_id IN (SELECT value FROM json_each(:task_ids))
  AND status IN (SELECT value FROM json_each(:states))
  AND (expires IS NULL OR expires > :now);

-- name: forget
DELETE FROM celeriac_results WHERE task_id = :task_id;

-- name: delete_expired
DELETE FROM celeriac_results WHERE expires IS NOT NULL AND expires <= :now;

-- name: recent
SELECT task_id, meta FROM celeriac_results
WHERE expires IS NULL OR expires > :now
ORDER BY json_extract(meta, '$.date_done') DESC
LIMIT :limit;
