-- Named queries of the SQLite broker's pub/sub (remote control and events).

-- name: fan_publish
INSERT INTO celeriac_fanout (channel, payload, created) VALUES (:channel, :payload, :now);

-- name: fan_last
SELECT coalesce(max(id), 0) FROM celeriac_fanout;

-- name: fan_read
SELECT id, channel, payload FROM celeriac_fanout WHERE id > :after ORDER BY id LIMIT 1000;

-- name: fan_trim
DELETE FROM celeriac_fanout WHERE created < :before;
