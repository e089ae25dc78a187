# scan_fixtures.sh — registers a factory, product, batch and N tags straight in PostgreSQL
# (as the schema owner), for the scan tests that run before the factory API exists in them.
# Source it after lib.sh. fixture_tags OWNER_URL N → the N tag ids in the array fixture,
# and fixture_factory, fixture_product, fixture_batch.

fixture_tags() {
  local url=$1 n=$2
  fixture_factory=$(cat /proc/sys/kernel/random/uuid)
  fixture_product=$(cat /proc/sys/kernel/random/uuid)
  fixture_batch=$(cat /proc/sys/kernel/random/uuid)
  local out
  out=$(psql "$url" -qAt -v ON_ERROR_STOP=1 \
    -v f="$fixture_factory" -v p="$fixture_product" -v b="$fixture_batch" -v n="$n" <<'SQL'
INSERT INTO factories (id, name) VALUES (:'f', 'Factory ' || :'f');
INSERT INTO products (id, factory_id, sku, name) VALUES (:'p', :'f', 'SKU-' || left(:'p', 8), 'Trail Shoe <b>&"x"</b>');
INSERT INTO batches (id, factory_id, product_id, code) VALUES (:'b', :'f', :'p', 'B-' || left(:'b', 8));
INSERT INTO tags (tag_id, factory_id, batch_id, product_id)
  SELECT gen_random_uuid(), :'f', :'b', :'p' FROM generate_series(1, :n);
SELECT tag_id FROM tags WHERE batch_id = :'b' ORDER BY tag_id;
SQL
  ) ; mapfile -t fixture <<<"$out"
}
