-- Named queries of the SQLite broker's pub/sub (remote control and events).

-- name: fan_publish
INSERT INTO celeriac_fanout (channel, payload, created) VALUES (:channel, :payload, :now);

-- name: fan_last
SELECT coalesce(max(id), 0) FROM celeriac_fanout;

-- name: fan_read
SELECT id, channel, payload FROM celeriac_fanout WHERE id > :after ORDER BY id LIMIT 1000;

-- name: fan_trim
DELETE FROM celeriac_fanout WHERE created < :before;

-- name: fan_listening
INSERT INTO celeriac_fanout_listeners (id, glob, seen) VALUES (:id, :glob, :now)
ON CONFLICT (id) DO UPDATE SET seen = excluded.seen;

-- name: fan_unlisten
DELETE FROM celeriac_fanout_listeners WHERE id = :id;

-- name: fan_listeners
SELECT glob FROM celeriac_fanout_listeners WHERE seen >= :since;
