-- 0004_log: the Merkle log's one total order, and the anchor service's bookkeeping (SPEC §7).
--
-- Leaves are appended in the order their log entries committed, and a leaf's index never
-- changes. A bigserial alone does not give that order: two transactions may take ids 5 and 6
-- and commit 6 first; an appender that has already appended 6 would then find 5 behind it.
-- So every statement that inserts into log_entries first takes one transaction-level advisory
-- lock: writers into the log serialise from their first insert to their commit, ids are handed
-- out in commit order, and any snapshot sees a prefix of the id order (less rolled-back ids).
-- The lock is taken before the statement's rows draw their ids (a BEFORE STATEMENT trigger
-- fires before the rows are formed, for INSERT and for COPY alike) and released after the
-- commit is visible. The key is fixed: 7226351602313740302 (migrations use ...301, the anchor
-- service's leader lock ...303).
CREATE FUNCTION tagproof_log_serialize() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7226351602313740302);
    RETURN NULL;
END
$$;
CREATE TRIGGER log_entries_serialize BEFORE INSERT ON log_entries
    FOR EACH STATEMENT EXECUTE FUNCTION tagproof_log_serialize();

-- An appended leaf is never changed: its record, its index and its hash are fixed once the
-- index is set.
CREATE FUNCTION tagproof_log_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.leaf_index IS NOT NULL AND (NEW.leaf_index IS DISTINCT FROM OLD.leaf_index
            OR NEW.leaf_hash IS DISTINCT FROM OLD.leaf_hash OR NEW.record <> OLD.record
            OR NEW.kind <> OLD.kind) THEN
        RAISE EXCEPTION 'log entry % is leaf % of the Merkle log and cannot change', OLD.id,
            OLD.leaf_index USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER log_entries_immutable BEFORE UPDATE ON log_entries
    FOR EACH ROW EXECUTE FUNCTION tagproof_log_immutable();

ALTER TABLE log_entries ADD CONSTRAINT log_entries_leaf_complete
    CHECK ((leaf_index IS NULL) = (leaf_hash IS NULL) AND (leaf_index IS NULL OR leaf_index >= 0)
           AND (leaf_hash IS NULL OR length(leaf_hash) = 32));

-- One anchor per checkpoint and ledger: a retry, a reconciliation after a crash and a
-- re-anchoring after a reorg all update that one row.
ALTER TABLE anchors ADD CONSTRAINT anchors_one_per_ledger UNIQUE (checkpoint_size, ledger);
-- The Ethereum adapter pins the nonce of its transaction (and notes the chain head) in the row
-- before it sends, so that after a crash the transaction can be found by that nonce instead of
-- being sent twice.
ALTER TABLE anchors ADD COLUMN eth_nonce bigint, ADD COLUMN eth_from_block bigint;

-- The verifier keys the log's checkpoints were signed with (note-verifier-key text), so that the
-- programs that serve proofs read the key from the database rather than from the anchor
-- service's files.
CREATE TABLE log_keys (
    vkey           text PRIMARY KEY,
    origin         text NOT NULL,
    first_used_at  timestamptz NOT NULL DEFAULT now(),
    last_used_at   timestamptz NOT NULL DEFAULT now()
);

-- Which tagproof-anchor leads (the PostgreSQL session advisory lock 7226351602313740303 decides;
-- this row only says who has it, for operators).
CREATE TABLE anchor_leader (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    holder     text NOT NULL,
    since      timestamptz NOT NULL DEFAULT now(),
    seen_at    timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT, UPDATE ON log_keys, anchor_leader TO tagproof_app;
