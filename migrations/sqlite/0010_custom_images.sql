-- Custom images: a qcow2 base an admin uploads (kept in carve's data directory, with the
-- digest of what was received) beside those built into the image directory. Any image can be
-- hidden from customers. A removed upload that deleted VMs still name stays as a row with
-- `removed_at` set and its name freed.
ALTER TABLE images ADD COLUMN source TEXT NOT NULL DEFAULT 'built' CHECK (source IN ('built', 'uploaded'));
ALTER TABLE images ADD COLUMN visible INTEGER NOT NULL DEFAULT 1;
ALTER TABLE images ADD COLUMN sha256 TEXT;
ALTER TABLE images ADD COLUMN removed_at TEXT;
