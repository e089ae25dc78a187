-- 0002_tenancy: sealed tenants (SPEC §6). Row-level security, forced also on the owner, on
-- every table that carries a factory; a session sees the rows of the tenant named by the
-- setting tagproof.tenant (a factory id, or 'all'), and nothing when it names none.
--
-- The factory API sets the tenant with set_config(..., true) -- SET LOCAL -- inside each
-- transaction, so a pooled connection never carries the previous caller's tenant; the
-- services that work across tenants (scan, its event sink, anchor) start their connections
-- with tagproof.tenant=all. Row-level security is the floor beneath the application's own
-- filters: a query that forgot its WHERE clause still sees one tenant.
--
-- The tenant policies apply to tagproof_app, the services' role. The schema owner (this
-- migration's role: migrations, operators, and the SECURITY DEFINER functions below) has a
-- policy of its own that shows it every row; FORCE makes even the owner go through policies.

-- True when the session may see rows of factory f. A missing or empty setting matches no
-- factory (fail closed); a plain SQL function, so the planner inlines it into each policy.
CREATE FUNCTION tagproof_tenant_visible(f uuid) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(current_setting('tagproof.tenant', true) IN ('all', f::text), false)
$$;

ALTER TABLE factories ENABLE ROW LEVEL SECURITY;
ALTER TABLE factories FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON factories TO tagproof_app
    USING (tagproof_tenant_visible(id));
CREATE POLICY owner ON factories TO CURRENT_USER USING (true);

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
-- Admin keys have no factory: only an all-tenant session sees them.
CREATE POLICY tenant ON api_keys TO tagproof_app
    USING (current_setting('tagproof.tenant', true) = 'all' OR tagproof_tenant_visible(factory_id));
CREATE POLICY owner ON api_keys TO CURRENT_USER USING (true);

ALTER TABLE products ENABLE ROW LEVEL SECURITY;
ALTER TABLE products FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON products TO tagproof_app
    USING (tagproof_tenant_visible(factory_id));
CREATE POLICY owner ON products TO CURRENT_USER USING (true);

ALTER TABLE batches ENABLE ROW LEVEL SECURITY;
ALTER TABLE batches FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON batches TO tagproof_app
    USING (tagproof_tenant_visible(factory_id));
CREATE POLICY owner ON batches TO CURRENT_USER USING (true);

ALTER TABLE uploads ENABLE ROW LEVEL SECURITY;
ALTER TABLE uploads FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON uploads TO tagproof_app
    USING (tagproof_tenant_visible(factory_id));
CREATE POLICY owner ON uploads TO CURRENT_USER USING (true);

ALTER TABLE tags ENABLE ROW LEVEL SECURITY;
ALTER TABLE tags FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON tags TO tagproof_app
    USING (tagproof_tenant_visible(factory_id));
CREATE POLICY owner ON tags TO CURRENT_USER USING (true);

ALTER TABLE log_entries ENABLE ROW LEVEL SECURITY;
ALTER TABLE log_entries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON log_entries TO tagproof_app
    USING (tagproof_tenant_visible(factory_id));
CREATE POLICY owner ON log_entries TO CURRENT_USER USING (true);

-- Queries through the partitioned parent get its policy; the partitions themselves are not
-- for the services to touch directly.
ALTER TABLE scan_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE scan_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON scan_events TO tagproof_app
    USING (tagproof_tenant_visible(factory_id));
CREATE POLICY owner ON scan_events TO CURRENT_USER USING (true);
DO $$
DECLARE
    part regclass;
BEGIN
    FOR part IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'scan_events'::regclass
    LOOP
        EXECUTE format('REVOKE ALL ON %s FROM tagproof_app', part);
    END LOOP;
END
$$;

-- Authentication happens before a tenant is known: the API key of an id, whatever its
-- factory, for the caller to compare the secret's hash with (in constant time).
CREATE FUNCTION tagproof_api_key_lookup(key_id text)
RETURNS TABLE (factory_id uuid, role text, secret_hash bytea, revoked boolean,
               last_used_s bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT factory_id, role, secret_hash, revoked_at IS NOT NULL,
           extract(epoch FROM now() - last_used_at)::bigint
      FROM api_keys WHERE id = key_id
$$;
REVOKE ALL ON FUNCTION tagproof_api_key_lookup(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tagproof_api_key_lookup(text) TO tagproof_app;

-- Records a key's use at most once a minute.
CREATE FUNCTION tagproof_api_key_touch(key_id text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
    UPDATE api_keys SET last_used_at = now()
     WHERE id = key_id AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
$$;
REVOKE ALL ON FUNCTION tagproof_api_key_touch(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tagproof_api_key_touch(text) TO tagproof_app;
