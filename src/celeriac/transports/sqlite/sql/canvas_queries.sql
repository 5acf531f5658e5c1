-- Named queries for saved groups and chord joins (celeriac.backends.sqlite).
-- Times are epoch seconds (time.time()).

-- name: save_group
INSERT INTO celeriac_groups (group_id, meta, expires)
VALUES (:group_id, :meta, :expires)
ON CONFLICT (group_id) DO UPDATE SET meta = excluded.meta, expires = excluded.expires;

-- name: restore_group
SELECT meta FROM celeriac_groups
WHERE group_id = :group_id AND (expires IS NULL OR expires > :now);

-- name: forget_group
DELETE FROM celeriac_groups WHERE group_id = :group_id;

-- name: chord_get
SELECT size, claim, claim_expires, expires FROM celeriac_chords WHERE group_id = :group_id;

-- name: chord_reset
-- An expired chord row (and its parts) is gone for every purpose.
DELETE FROM celeriac_chord_parts WHERE group_id = :group_id;

-- name: chord_drop
DELETE FROM celeriac_chords WHERE group_id = :group_id;

-- name: chord_start
-- A chord sent again with the same group id (a re-applied frozen chord) is a new run:
-- its 'done' mark goes.
INSERT INTO celeriac_chords (group_id, size, expires)
VALUES (:group_id, :size, :expires)
ON CONFLICT (group_id) DO UPDATE SET size = excluded.size, expires = excluded.expires,
  claim = CASE WHEN claim = 'done' THEN NULL ELSE claim END;

-- name: chord_touch
-- Create the row on the first part (size from the message), refresh its expiry.
INSERT INTO celeriac_chords (group_id, size, expires)
VALUES (:group_id, :size, :expires)
ON CONFLICT (group_id) DO UPDATE
SET size = coalesce(celeriac_chords.size, excluded.size), expires = excluded.expires;

-- name: chord_grow
-- Task.add_to_chord: the header has more members than the producer sent.
UPDATE celeriac_chords SET size = size + :count
WHERE group_id = :group_id AND size IS NOT NULL;

-- name: chord_add_part
INSERT INTO celeriac_chord_parts (group_id, task_id, idx, part)
VALUES (:group_id, :task_id, :idx, :part)
ON CONFLICT (group_id, task_id, idx) DO NOTHING;

-- name: chord_count
SELECT count(*) FROM celeriac_chord_parts WHERE group_id = :group_id;

-- name: chord_claim
UPDATE celeriac_chords SET claim = :token, claim_expires = :claim_expires
WHERE group_id = :group_id;

-- name: chord_parts
SELECT part FROM celeriac_chord_parts WHERE group_id = :group_id ORDER BY idx;

-- name: chord_done
UPDATE celeriac_chords SET claim = 'done', expires = :expires
WHERE group_id = :group_id AND claim = :token;

-- name: delete_expired_groups
DELETE FROM celeriac_groups WHERE expires IS NOT NULL AND expires <= :now;

-- name: delete_expired_chord_parts
DELETE FROM celeriac_chord_parts WHERE group_id IN (
    SELECT group_id FROM celeriac_chords WHERE expires IS NOT NULL AND expires <= :now
);

-- name: delete_expired_chords
DELETE FROM celeriac_chords WHERE expires IS NOT NULL AND expires <= :now;
