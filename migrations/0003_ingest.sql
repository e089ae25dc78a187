-- 0003_ingest: bulk tag registration without per-row foreign-key checks (SPEC §6, §9).
--
-- A CSV upload inserts its tags and their Merkle leaves with INSERT ... SELECT from a staging
-- table, a million rows in one statement. Each foreign key on those tables is a trigger that
-- runs a query per inserted row (SELECT 1 FROM batches WHERE id = $1 FOR KEY SHARE ...): with
-- four on tags and three on log_entries, a 1,000,000-tag upload spent about 190 of its 200
-- seconds in those seven million checks (docs/BENCHMARKS.md), to find the same batch, product,
-- factory and upload a million times over.
--
-- They are replaced by one check per statement of what the keys guaranteed, and more: every
-- (factory, batch, product) of the inserted tags names a batch of that factory and product
-- (the foreign keys never checked that the three agree), the upload exists, and each tag leaf
-- names a batch of its factory. The check reads the statement's rows from its transition
-- table, so it costs one scan of them and an index probe per distinct batch, and it locks the
-- batches it found FOR KEY SHARE, as the foreign keys did, so that none can be deleted under
-- a transaction that references it. A leaf's tag_id is not checked against tags: leaves and
-- tags are written by one statement pair in one transaction (factory-api/loader.c), and the
-- Merkle log is append-only.
--
-- What the foreign keys also did is refuse the deletion of a referenced row. A batch with tags
-- cannot be deleted (a row trigger asks tags_batch, the index on tags.batch_id); products and
-- factories are still held by the foreign keys of batches, and a tag's batch is of its product
-- and factory. Uploads are not watched: tags.upload_id only says which upload brought a tag,
-- and no program deletes uploads.

ALTER TABLE tags DROP CONSTRAINT tags_factory_id_fkey;
ALTER TABLE tags DROP CONSTRAINT tags_batch_id_fkey;
ALTER TABLE tags DROP CONSTRAINT tags_product_id_fkey;
ALTER TABLE tags DROP CONSTRAINT tags_upload_id_fkey;
ALTER TABLE log_entries DROP CONSTRAINT log_entries_factory_id_fkey;
ALTER TABLE log_entries DROP CONSTRAINT log_entries_tag_id_fkey;
ALTER TABLE log_entries DROP CONSTRAINT log_entries_batch_id_fkey;

-- SECURITY DEFINER: the check sees every batch and upload whatever the tenant (row-level
-- security would hide another factory's batch and make the error misleading), and it runs
-- for inserts of any role.
CREATE FUNCTION tagproof_tags_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.factory_id, n.batch_id, n.product_id INTO bad
      FROM (SELECT DISTINCT factory_id, batch_id, product_id FROM new_tags) n
      LEFT JOIN batches b ON b.id = n.batch_id AND b.factory_id = n.factory_id
                         AND b.product_id = n.product_id
     WHERE b.id IS NULL
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'tags reference batch % of factory % and product %, which does not exist',
              bad.batch_id, bad.factory_id, bad.product_id
              USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT n.upload_id INTO bad
      FROM (SELECT DISTINCT upload_id FROM new_tags WHERE upload_id IS NOT NULL) n
      LEFT JOIN uploads u ON u.id = n.upload_id
     WHERE u.id IS NULL
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'tags reference upload %, which does not exist', bad.upload_id
              USING ERRCODE = 'foreign_key_violation';
    END IF;
    PERFORM 1 FROM batches b WHERE b.id IN (SELECT DISTINCT batch_id FROM new_tags)
        FOR KEY SHARE OF b;
    RETURN NULL;
END
$$;

CREATE TRIGGER tags_references AFTER INSERT ON tags
    REFERENCING NEW TABLE AS new_tags
    FOR EACH STATEMENT EXECUTE FUNCTION tagproof_tags_check();

CREATE FUNCTION tagproof_log_entries_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.factory_id, n.batch_id INTO bad
      FROM (SELECT DISTINCT factory_id, batch_id FROM new_entries) n
      LEFT JOIN batches b ON b.id = n.batch_id AND b.factory_id = n.factory_id
     WHERE b.id IS NULL
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'log entries reference batch % of factory %, which does not exist',
              bad.batch_id, bad.factory_id
              USING ERRCODE = 'foreign_key_violation';
    END IF;
    PERFORM 1 FROM batches b WHERE b.id IN (SELECT DISTINCT batch_id FROM new_entries)
        FOR KEY SHARE OF b;
    RETURN NULL;
END
$$;

CREATE TRIGGER log_entries_references AFTER INSERT ON log_entries
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION tagproof_log_entries_check();

-- SECURITY DEFINER: whoever deletes, the tags of every tenant count.
CREATE FUNCTION tagproof_batch_unreferenced() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM tags WHERE batch_id = OLD.id) THEN
        RAISE EXCEPTION 'batch % has tags and cannot be deleted', OLD.id
              USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN OLD;
END
$$;

CREATE TRIGGER batches_referenced BEFORE DELETE ON batches
    FOR EACH ROW EXECUTE FUNCTION tagproof_batch_unreferenced();
