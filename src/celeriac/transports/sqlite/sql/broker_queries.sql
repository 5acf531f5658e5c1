-- Named queries of celeriac.brokers.sqlite. Times are epoch seconds (time.time()).

-- name: publish
INSERT INTO celeriac_messages (queue, priority, payload, eta, created)
VALUES (:queue, :priority, :payload, :eta, :now);

-- name: promote_delayed
UPDATE celeriac_messages SET eta = NULL
WHERE eta IS NOT NULL AND eta <= :now;

-- name: expire_leases
UPDATE celeriac_messages SET lease_expires = NULL, lease_owner = NULL
WHERE lease_expires IS NOT NULL AND lease_expires <= :now;

-- name: lease
UPDATE celeriac_messages
SET lease_expires = :expires,
    lease_owner = :owner,
    lease_token = lease_token + 1,
    delivery_count = delivery_count + 1
WHERE id IN (
    SELECT id FROM celeriac_messages
    WHERE queue = :queue AND eta IS NULL AND lease_expires IS NULL
    ORDER BY priority DESC, id
    LIMIT :limit
)
RETURNING id, priority, payload, lease_token, delivery_count;

-- name: next_due
SELECT
    (SELECT min(eta) FROM celeriac_messages WHERE eta IS NOT NULL),
    (SELECT min(lease_expires) FROM celeriac_messages WHERE lease_expires IS NOT NULL);

-- name: peek
SELECT
    EXISTS (
        SELECT 1 FROM celeriac_messages
        WHERE queue IN (SELECT value FROM json_each(:queues))
          AND eta IS NULL AND lease_expires IS NULL
    ),
    (SELECT min(eta) FROM celeriac_messages WHERE eta IS NOT NULL),
    (SELECT min(lease_expires) FROM celeriac_messages WHERE lease_expires IS NOT NULL);

-- name: ack
DELETE FROM celeriac_messages WHERE id = :id AND lease_token = :token;

-- name: requeue
UPDATE celeriac_messages
SET lease_expires = NULL,
    lease_owner = NULL,
    eta = :eta,
    delivery_count = max(delivery_count - :uncount, 0)
WHERE id = :id AND lease_token = :token;

-- name: extend
UPDATE celeriac_messages SET lease_expires = :expires
WHERE id = :id AND lease_token = :token AND lease_expires IS NOT NULL;

-- name: dead_letter
INSERT INTO celeriac_dead_letters (queue, payload, reason, failed_at)
SELECT queue, payload, :reason, :now FROM celeriac_messages
WHERE id = :id AND lease_token = :token;

-- name: recover
UPDATE celeriac_messages SET lease_expires = NULL, lease_owner = NULL
WHERE lease_owner = :owner AND id NOT IN (SELECT value FROM json_each(:keep));

-- name: purge_ready
DELETE FROM celeriac_messages
WHERE queue = :queue AND eta IS NULL AND lease_expires IS NULL;

-- name: purge_delayed
DELETE FROM celeriac_messages WHERE eta IS NOT NULL AND queue = :queue;

-- name: size
SELECT
    (SELECT count(*) FROM celeriac_messages
     WHERE queue = :queue AND eta IS NULL AND lease_expires IS NULL)
  + (SELECT count(*) FROM celeriac_messages
     WHERE eta IS NOT NULL AND queue = :queue)
  + (SELECT count(*) FROM celeriac_messages
     WHERE lease_expires IS NOT NULL AND lease_expires <= :now AND queue = :queue);

-- name: dead_letters
SELECT queue, payload, reason, failed_at FROM celeriac_dead_letters
ORDER BY id DESC LIMIT :limit;

-- name: remove_dead_letter
DELETE FROM celeriac_dead_letters WHERE id = (
  SELECT id FROM celeriac_dead_letters
  WHERE queue = :queue AND failed_at = :failed_at AND payload = :payload
  ORDER BY id LIMIT 1);

-- name: revoke
INSERT INTO celeriac_revoked (task_id, expires, terminate, signal)
VALUES (:task_id, :expires, :terminate, :signal)
ON CONFLICT (task_id) DO UPDATE SET
    expires = max(expires, excluded.expires),
    terminate = max(terminate, excluded.terminate),
    signal = coalesce(excluded.signal, signal);

-- name: revoked
SELECT task_id, terminate, signal FROM celeriac_revoked
WHERE expires > :now AND task_id IN (SELECT value FROM json_each(:ids));

-- name: revoked_ids
SELECT task_id FROM celeriac_revoked WHERE expires > :now
ORDER BY expires DESC LIMIT :limit;

-- name: forget_revoked
DELETE FROM celeriac_revoked WHERE expires <= :now;

-- name: bucket_get
SELECT tokens, updated FROM celeriac_buckets WHERE key = :key;

-- name: bucket_set
INSERT INTO celeriac_buckets (key, tokens, updated) VALUES (:key, :tokens, :now)
ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, updated = excluded.updated;
