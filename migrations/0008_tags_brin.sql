-- 0008_tags_brin: a tag's batch and upload are found through a block-range index (SPEC §6, §9).
--
-- tags_batch (batch_id, upload_id, tag_id) was a B-tree entry for every tag: about a second of
-- a million-tag upload's five to seven (docs/BENCHMARKS.md), to serve three readers that never
-- look for one tag by its batch: a batch's statistics count its tags, a batch's deletion asks
-- whether it has any, and the anchor's leader reads an expanded upload's tags in tag order.
-- An upload's tags are inserted by one statement, in tag order, at the end of the table, so
-- the blocks that hold one upload hold little else: a BRIN index of (batch_id, upload_id)
-- keeps each range of blocks' smallest and largest batch and upload, costs next to nothing to
-- insert into, and leads each of those readers to the blocks of its batch or upload. The
-- anchor now reads an upload's tag ids a large window at a time and sorts them once
-- (anchor/tlog.c) instead of walking an index a page of leaves at a time.
--
-- A range is summarised when the table has grown past it (autosummarize, by autovacuum);
-- until then a query reads it whatever it holds, which is correct, only slower.
--
-- The index stays useful only while an upload's rows stay together. Rows move when they are
-- updated, and the one update a tag has is its first scan (first_scanned_at): with the default
-- fillfactor of 100 its new version would go to another page, and the space it left would
-- later take rows of other uploads. A fillfactor of 90 keeps room on each page for those
-- updates, which become HOT (same page, no index entry: the scan sink's update is cheaper as
-- well), and inserts never use that room. It applies to pages written from now on.
DROP INDEX tags_batch;
CREATE INDEX tags_batch_upload ON tags USING brin (batch_id, upload_id) WITH (autosummarize = on);
ALTER TABLE tags SET (fillfactor = 90);
