-- Which carve process drives each scale group, until when (Unix milliseconds): with several
-- processes on one database, only the lease holder decides for a group, so two cannot both
-- add a member for the same shortfall. A dead holder's lease runs out and another takes over.
ALTER TABLE scale_groups ADD COLUMN controller TEXT;
ALTER TABLE scale_groups ADD COLUMN controller_until_ms INTEGER NOT NULL DEFAULT 0;
