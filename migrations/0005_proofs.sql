-- 0005_proofs: what the factory API's proof endpoints read besides the log itself (SPEC §6,
-- §7): the verifier keys of the log's checkpoints, written by tagproof-anchor when it starts
-- leading, so that GET /v1/log/key and every proof bundle name the key from the database.
--
-- migrations/0004_log (tagproof-anchor) defines this very table; this file repeats its
-- definition with IF NOT EXISTS so that the proof endpoints work, and are tested, on a schema
-- without 0004, and change nothing where 0004 has run.
CREATE TABLE IF NOT EXISTS log_keys (
    vkey           text PRIMARY KEY,
    origin         text NOT NULL,
    first_used_at  timestamptz NOT NULL DEFAULT now(),
    last_used_at   timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE ON log_keys TO tagproof_app;
