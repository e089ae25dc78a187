-- 0009_tags_scope: a tag's references checked by a row-level security policy instead of a
-- statement trigger (SPEC §6, §9).
--
-- Migration 0003 replaced the foreign keys of tags by an AFTER INSERT statement trigger that
-- read every inserted row back from its transition table. Filling that table costs about
-- 0.6-0.75 s of a million-tag upload's four to five in the tags step (docs/BENCHMARKS.md),
-- whatever the trigger then does with it. The same guarantees now come from a restrictive
-- policy, checked on every row any role inserts (superusers and BYPASSRLS roles aside), which
-- accepts a row when:
--
--   * it belongs to the upload the transaction declares in tagproof.upload (set with
--     set_config(..., true) by factory-api/loader.c), compared column by column with that
--     upload's factory, batch and product, which tagproof_upload_scope() reads once per
--     statement (an init plan) and whose batch it locks FOR KEY SHARE, as the trigger and the
--     foreign keys did; this is the bulk path, a few comparisons a row; or else
--   * its batch exists with its factory and product (locked FOR KEY SHARE as well), and its
--     upload, if it names one, is of that batch and factory: tagproof_tag_refs_hold(), a
--     function call a row (about 8 us), for the few tags inserted otherwise (fixtures, tools).
--
-- Either way, a tag joins an upload only while that upload is processing: once it has
-- completed, its log entry stands for a fixed set of tags (0007), which the anchor expands.
-- Both functions are SECURITY DEFINER with search_path = public, pg_temp, so that no
-- temporary table of the caller's can stand in for uploads or batches (0010 does the same for
-- the older such functions).
--
-- A row that fails both is refused with SQLSTATE 42501 ("new row violates row-level security
-- policy") where the trigger raised 23503. The batch deletion trigger of 0003 stays.
DROP TRIGGER tags_references ON tags;
DROP FUNCTION tagproof_tags_check();

CREATE TYPE tagproof_tag_scope AS (factory_id uuid, batch_id uuid, product_id uuid, upload_id uuid);

-- The upload named by tagproof.upload, while it is processing, with its batch's product, if
-- the tenant may see it (the same rule as the tenant policies: 'all', or the upload's
-- factory); NULLs otherwise, so a session that sets no tenant (the schema owner's) takes the
-- second way. SECURITY DEFINER: it locks the batch whatever the caller's privileges on batches.
CREATE FUNCTION tagproof_upload_scope() RETURNS tagproof_tag_scope
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT u.factory_id, u.batch_id, b.product_id, u.id
      FROM uploads u JOIN batches b ON b.id = u.batch_id AND b.factory_id = u.factory_id
     WHERE u.status = 'processing'
       AND u.id = (SELECT CASE WHEN s ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                               THEN s::uuid END
                     FROM (SELECT current_setting('tagproof.upload', true) AS s) x)
       AND (tagproof_tenant_all() OR u.factory_id = tagproof_tenant_id())
       FOR KEY SHARE OF b
$$;
REVOKE ALL ON FUNCTION tagproof_upload_scope() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tagproof_upload_scope() TO tagproof_app;

-- The other way, a row at a time: the batch is of the tag's factory and product, locked FOR KEY
-- SHARE so that it cannot be deleted under the transaction, and the upload, if the tag names
-- one, is of that batch and factory. SECURITY DEFINER, as the trigger was: it sees every batch
-- and upload whatever the tenant (the tenant policy decides separately whose tag it may be).
CREATE FUNCTION tagproof_tag_refs_hold(p_factory uuid, p_batch uuid, p_product uuid, p_upload uuid)
RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM batches b WHERE b.id = p_batch AND b.factory_id = p_factory
                      AND b.product_id = p_product FOR KEY SHARE)
       AND (p_upload IS NULL OR EXISTS (SELECT 1 FROM uploads u WHERE u.id = p_upload
                                          AND u.batch_id = p_batch AND u.factory_id = p_factory
                                          AND u.status = 'processing'))
$$;
REVOKE ALL ON FUNCTION tagproof_tag_refs_hold(uuid, uuid, uuid, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tagproof_tag_refs_hold(uuid, uuid, uuid, uuid) TO tagproof_app;

CREATE POLICY tags_reference_their_batch ON tags AS RESTRICTIVE FOR INSERT
    WITH CHECK (
        ROW(tags.factory_id, tags.batch_id, tags.product_id, tags.upload_id)
            = (SELECT s.factory_id, s.batch_id, s.product_id, s.upload_id
                 FROM tagproof_upload_scope() s)
        OR tagproof_tag_refs_hold(tags.factory_id, tags.batch_id, tags.product_id,
                                  tags.upload_id));
