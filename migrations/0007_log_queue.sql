-- 0007_log_queue: an upload queues its tags' leaves as one log entry (SPEC §7, §9).
--
-- Until now a CSV upload wrote one log_entries row per tag in the upload's transaction, and the anchor
-- service then rewrote each of those rows to give it its leaf index: for a million tags about
-- 700 MB of WAL and two thirds of the upload's time (docs/BENCHMARKS.md). A tag's leaf is a
-- function of its row in tags (tag, factory, batch, product, registration time: SPEC §7), and
-- those columns never change, so the upload now queues one entry of kind 'upload' naming
-- itself, in the transaction that inserts the tags, and the anchor's leader expands it when
-- it reaches it in the queue: the upload's tags in tag order, each inserted as an appended
-- 'tag' entry with its index, its record and its hash.
--
-- The queue keeps its one order (0004): entries take their ids in commit order, and the leader
-- appends them in id order; an 'upload' entry stands for its tags at its place in that order,
-- so a recall queued after an upload is appended after every tag of that upload. A long
-- upload is expanded over several appends: expanded_to is the last tag appended so far, and
-- appended_at is set once the last of its tags is in the log. The 'tag' entries it produces
-- carry the upload entry's queued_at.
ALTER TABLE log_entries DROP CONSTRAINT log_entries_kind_check;
ALTER TABLE log_entries ADD CONSTRAINT log_entries_kind_check
    CHECK (kind IN ('tag', 'revoke', 'upload'));
ALTER TABLE log_entries ADD COLUMN upload_id uuid, ADD COLUMN expanded_to uuid;
ALTER TABLE log_entries ADD CONSTRAINT log_entries_upload_entry
    CHECK ((kind = 'upload') = (upload_id IS NOT NULL)
           AND (kind = 'upload' OR expanded_to IS NULL)
           AND (kind <> 'upload' OR (leaf_index IS NULL AND octet_length(record) = 0)));

-- Pending: not yet appended (a leaf without its index, an upload not fully expanded).
DROP INDEX log_entries_pending;
CREATE INDEX log_entries_pending ON log_entries (id) WHERE leaf_index IS NULL AND appended_at IS NULL;
DROP INDEX log_entries_tag;
CREATE UNIQUE INDEX log_entries_tag ON log_entries (tag_id) WHERE kind = 'tag';
-- Whether a tag's upload is still queued (a proof or a tag view asks while it is); an upload
-- is queued once.
CREATE UNIQUE INDEX log_entries_upload ON log_entries (upload_id) WHERE kind = 'upload';

-- The expansion reads an upload's tags in tag order from where it stopped. The index on
-- tags.batch_id becomes (batch_id, upload_id, tag_id): it serves every batch_id lookup as
-- before, and an upload's rows go into it in order, at the end of their range.
DROP INDEX tags_batch;
CREATE INDEX tags_batch ON tags (batch_id, upload_id, tag_id);

-- A tag's leaf is read from its row when its upload is expanded, so the services may change
-- nothing of a tag but its first scan, and delete no tag.
REVOKE UPDATE, DELETE ON tags FROM tagproof_app;
GRANT UPDATE (first_scanned_at) ON tags TO tagproof_app;

-- An upload entry names the same upload, batch and factory for ever, its cursor only moves
-- forward, and once expanded it stays so. And a tag has one registration leaf: a cursor moved
-- back by hand could not append its tags twice.
CREATE OR REPLACE FUNCTION tagproof_log_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.leaf_index IS NOT NULL AND (NEW.leaf_index IS DISTINCT FROM OLD.leaf_index
            OR NEW.leaf_hash IS DISTINCT FROM OLD.leaf_hash OR NEW.record <> OLD.record
            OR NEW.kind <> OLD.kind) THEN
        RAISE EXCEPTION 'log entry % is leaf % of the Merkle log and cannot change', OLD.id,
            OLD.leaf_index USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF OLD.kind = 'upload' AND (NEW.kind <> OLD.kind OR NEW.upload_id <> OLD.upload_id
            OR NEW.batch_id <> OLD.batch_id OR NEW.factory_id <> OLD.factory_id
            OR (OLD.appended_at IS NOT NULL AND (NEW.appended_at IS DISTINCT FROM OLD.appended_at
                OR NEW.expanded_to IS DISTINCT FROM OLD.expanded_to))
            OR (OLD.expanded_to IS NOT NULL AND (NEW.expanded_to IS NULL
                OR NEW.expanded_to < OLD.expanded_to))) THEN
        RAISE EXCEPTION 'log entry % queues the leaves of upload % and cannot change that', OLD.id,
            OLD.upload_id USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;

-- SPEC §7's record of a tag registration, from its row. The anchor builds the leaves of an
-- expanded upload with it; registered_at is stored truncated to the second.
CREATE FUNCTION tagproof_tag_record(t tags) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT convert_to('tagproof/tag/v1' || E'\n' || t.tag_id::text || E'\n' || t.factory_id::text
        || E'\n' || t.batch_id::text || E'\n' || t.product_id::text || E'\n'
        || to_char(t.registered_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') || E'\n',
        'UTF8')
$$;

-- The tenant policies of the two tables a million-row statement writes evaluate the tenant
-- once per statement instead of once per row: each subquery below is an init plan. Same
-- meaning as tagproof_tenant_visible: 'all', or exactly the factory's id as text; anything
-- else, or nothing set, matches no row (fail closed).
CREATE FUNCTION tagproof_tenant_all() RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(current_setting('tagproof.tenant', true) = 'all', false)
$$;
CREATE FUNCTION tagproof_tenant_id() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN s ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                THEN s::uuid END
      FROM (SELECT current_setting('tagproof.tenant', true) AS s) x
$$;
ALTER POLICY tenant ON tags
    USING ((SELECT tagproof_tenant_all()) OR factory_id = (SELECT tagproof_tenant_id()));
ALTER POLICY tenant ON log_entries
    USING ((SELECT tagproof_tenant_all()) OR factory_id = (SELECT tagproof_tenant_id()));
