-- Named queries of the rpc:// replies (celeriac.transports.sqlite.rpc).
-- Times are epoch seconds (time.time()).

-- name: push
INSERT INTO celeriac_replies (reply_to, meta, expires) VALUES (:reply_to, :meta, :expires);

-- name: waiting
SELECT 1 FROM celeriac_replies WHERE reply_to = :reply_to LIMIT 1;

-- name: take
DELETE FROM celeriac_replies WHERE reply_to = :reply_to RETURNING id, meta;

-- name: delete_expired
DELETE FROM celeriac_replies WHERE expires <= :now;
