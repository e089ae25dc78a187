-- 0001_initial: tenants, keys, products, batches, tags, uploads, the Merkle log's queue and
-- storage, checkpoints, anchors, and month-partitioned scan events (SPEC §5-§7).
-- Applied files are never edited: later changes come as new files.

-- The services log in as a member of tagproof_app, which owns nothing and cannot bypass
-- row-level security; the role running migrations owns every object.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tagproof_app') THEN
        CREATE ROLE tagproof_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
END
$$;

CREATE TABLE factories (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name)
);

-- API keys: tp_live_<id>_<secret>; only a hash of the secret is kept.
CREATE TABLE api_keys (
    id            text PRIMARY KEY CHECK (id ~ '^[a-z0-9]{8,32}$'),
    factory_id    uuid REFERENCES factories (id),
    role          text NOT NULL CHECK (role IN ('admin', 'factory_user', 'viewer')),
    name          text NOT NULL DEFAULT '',
    secret_hash   bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    last_used_at  timestamptz,
    CHECK ((role = 'admin') = (factory_id IS NULL))
);
CREATE INDEX api_keys_factory ON api_keys (factory_id);

CREATE TABLE products (
    id          uuid PRIMARY KEY,
    factory_id  uuid NOT NULL REFERENCES factories (id),
    sku         text NOT NULL CHECK (length(sku) BETWEEN 1 AND 100),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (factory_id, sku)
);

CREATE TABLE batches (
    id          uuid PRIMARY KEY,
    factory_id  uuid NOT NULL REFERENCES factories (id),
    product_id  uuid NOT NULL REFERENCES products (id),
    code        text NOT NULL CHECK (length(code) BETWEEN 1 AND 100),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    UNIQUE (factory_id, code)
);
CREATE INDEX batches_product ON batches (product_id);

CREATE TABLE uploads (
    id               uuid PRIMARY KEY,
    factory_id       uuid NOT NULL REFERENCES factories (id),
    batch_id         uuid NOT NULL REFERENCES batches (id),
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'processing', 'completed', 'failed')),
    mode             text NOT NULL DEFAULT 'all-or-nothing'
                     CHECK (mode IN ('all-or-nothing', 'skip-invalid')),
    idempotency_key  text,
    body_sha256      bytea,
    rows_total       bigint NOT NULL DEFAULT 0,
    rows_accepted    bigint NOT NULL DEFAULT 0,
    rows_rejected    bigint NOT NULL DEFAULT 0,
    errors           jsonb NOT NULL DEFAULT '[]',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    UNIQUE (factory_id, idempotency_key)
);
CREATE INDEX uploads_batch ON uploads (batch_id);

CREATE TABLE tags (
    tag_id            uuid PRIMARY KEY,
    factory_id        uuid NOT NULL REFERENCES factories (id),
    batch_id          uuid NOT NULL REFERENCES batches (id),
    product_id        uuid NOT NULL REFERENCES products (id),
    serial            text,
    upload_id         uuid REFERENCES uploads (id),
    registered_at     timestamptz NOT NULL DEFAULT date_trunc('second', now()),
    first_scanned_at  timestamptz
);
CREATE INDEX tags_batch ON tags (batch_id);

-- The Merkle log. Registrations and recalls are queued in the transaction that makes them;
-- the anchor service's leader appends committed entries in queue order, giving each its
-- leaf_index once and for ever.
CREATE TABLE log_entries (
    id           bigserial PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('tag', 'revoke')),
    factory_id   uuid NOT NULL REFERENCES factories (id),
    tag_id       uuid REFERENCES tags (tag_id),
    batch_id     uuid NOT NULL REFERENCES batches (id),
    record       bytea NOT NULL,
    queued_at    timestamptz NOT NULL DEFAULT now(),
    leaf_index   bigint UNIQUE,
    leaf_hash    bytea,
    appended_at  timestamptz,
    CHECK ((kind = 'tag') = (tag_id IS NOT NULL))
);
CREATE INDEX log_entries_pending ON log_entries (id) WHERE leaf_index IS NULL;
CREATE INDEX log_entries_tag ON log_entries (tag_id);

-- Hashes of complete subtrees: level 0 are leaf hashes, node (level, idx) covers leaves
-- [idx * 2^level, (idx + 1) * 2^level).
CREATE TABLE merkle_nodes (
    level  smallint NOT NULL,
    idx    bigint NOT NULL,
    hash   bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
);

CREATE TABLE checkpoints (
    size        bigint PRIMARY KEY CHECK (size > 0),
    root        bytea NOT NULL CHECK (length(root) = 32),
    note        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE anchors (
    id               bigserial PRIMARY KEY,
    checkpoint_size  bigint NOT NULL REFERENCES checkpoints (size),
    ledger           text NOT NULL CHECK (ledger IN ('http', 'ethereum')),
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'submitted', 'confirmed', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    last_error       text,
    ledger_ref       text,
    chain_id         bigint,
    block_number     bigint,
    block_hash       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    submitted_at     timestamptz,
    confirmed_at     timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX anchors_state ON anchors (state);

-- Scan events, stored by the sink from the Redis stream. The stream entry id is the event
-- id, so a redelivered entry is a no-op insert.
CREATE TABLE scan_events (
    event_id    text NOT NULL,
    scanned_at  timestamptz NOT NULL,
    tag_id      uuid NOT NULL,
    factory_id  uuid,
    batch_id    uuid,
    verdict     text NOT NULL CHECK (verdict IN ('authentic', 'suspicious', 'revoked', 'unknown')),
    score       smallint NOT NULL DEFAULT 0,
    reasons     text[] NOT NULL DEFAULT '{}',
    ip_hash     text,
    user_agent  text,
    lat         double precision,
    lon         double precision,
    source      text,
    PRIMARY KEY (event_id, scanned_at)
) PARTITION BY RANGE (scanned_at);
CREATE INDEX scan_events_batch ON scan_events (batch_id, scanned_at);
CREATE INDEX scan_events_tag ON scan_events (tag_id, scanned_at);

-- Creates the month's partition if it is missing. SECURITY DEFINER lets the services, which
-- own no tables, create next month's partition ahead of time.
CREATE FUNCTION tagproof_ensure_scan_partition(month date) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    first date := date_trunc('month', month)::date;
    part text := format('scan_events_%s', to_char(first, 'YYYYMM'));
BEGIN
    IF to_regclass(part) IS NULL THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF scan_events FOR VALUES FROM (%L) TO (%L)',
                       part, first, (first + interval '1 month')::date);
    END IF;
    RETURN part;
END
$$;
REVOKE ALL ON FUNCTION tagproof_ensure_scan_partition(date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tagproof_ensure_scan_partition(date) TO tagproof_app;
SELECT tagproof_ensure_scan_partition(current_date);
SELECT tagproof_ensure_scan_partition((current_date + interval '1 month')::date);

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO tagproof_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO tagproof_app;
REVOKE ALL ON schema_migrations FROM tagproof_app;
GRANT SELECT ON schema_migrations TO tagproof_app;
