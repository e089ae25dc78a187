-- 0010_definer_search_path: SECURITY DEFINER functions look up tables in public before the
-- caller's temporary schema.
--
-- "SET search_path = public" still searches the session's temporary schema first for tables
-- (PostgreSQL searches pg_temp first unless the path names it), so a caller could create a
-- temporary table named batches, tags, uploads or api_keys and have these functions, which
-- run as the schema owner, read it instead: a batch deletion approved although the batch has
-- tags, say. Naming pg_temp last, as PostgreSQL's documentation advises for SECURITY DEFINER
-- functions, closes that (0009's functions are created this way).
ALTER FUNCTION tagproof_ensure_scan_partition(date) SET search_path = public, pg_temp;
ALTER FUNCTION tagproof_api_key_lookup(text) SET search_path = public, pg_temp;
ALTER FUNCTION tagproof_api_key_touch(text) SET search_path = public, pg_temp;
ALTER FUNCTION tagproof_log_entries_check() SET search_path = public, pg_temp;
ALTER FUNCTION tagproof_batch_unreferenced() SET search_path = public, pg_temp;
