-- 0006_scan_anchor: how far tagproof-anchor has told the scan service's Redis cache about the
-- Merkle log (SPEC §5: a scan shows a tag as anchored once its leaf is covered by a confirmed
-- anchor, and a cache hit must know that without PostgreSQL).
--
-- After appending, the leader writes each new tag leaf's index into the tag's cache entry
-- (tp:t:<tag>, field i). Redis may be down or lose writes, and that must never stop anchoring,
-- so what Redis has acknowledged is kept here: every leaf below leaves_pushed is in Redis, and
-- the next cycle goes on from there. Written only by the leader, on its leader session.
CREATE TABLE scan_cache_sync (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    leaves_pushed  bigint NOT NULL CHECK (leaves_pushed >= 0),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE ON scan_cache_sync TO tagproof_app;
