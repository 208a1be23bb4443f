-- Many hosts: each host's state (admins put one in maintenance; the reconciler marks one it
-- cannot reach), its labels for placement, where its forwards listen, and the libvirt
-- storage pool its disks live in. NULL forward settings mean the configured defaults.
ALTER TABLE hosts ADD COLUMN state TEXT NOT NULL DEFAULT 'active'
    CHECK (state IN ('active', 'maintenance', 'unreachable'));
ALTER TABLE hosts ADD COLUMN state_reason TEXT;
-- The state an unreachable host goes back to when it answers again.
ALTER TABLE hosts ADD COLUMN resume_state TEXT NOT NULL DEFAULT 'active'
    CHECK (resume_state IN ('active', 'maintenance'));
ALTER TABLE hosts ADD COLUMN labels TEXT NOT NULL DEFAULT '[]';
ALTER TABLE hosts ADD COLUMN forward_address TEXT;
ALTER TABLE hosts ADD COLUMN forward_port_first INTEGER;
ALTER TABLE hosts ADD COLUMN forward_port_last INTEGER;
ALTER TABLE hosts ADD COLUMN storage_pool TEXT NOT NULL DEFAULT '';
ALTER TABLE hosts ADD COLUMN storage_path TEXT NOT NULL DEFAULT '';
-- The machine's UUID (libvirt's host UUID): two hosts on one machine must not share a pool
-- directory, or one's moves and clean-ups would touch the other's disks.
ALTER TABLE hosts ADD COLUMN machine_id TEXT NOT NULL DEFAULT '';
-- The host a VM is being moved to: its resources count there from the start of the move.
ALTER TABLE vms ADD COLUMN moving_to TEXT REFERENCES hosts(id);
-- A removed host stays as a tombstone for the history of the VMs it held (their rows point
-- at it); its name and URI are freed for a new registration.
ALTER TABLE hosts ADD COLUMN removed_at TEXT;
-- Who is putting a base file on a host (one process at a time, across processes): the others
-- wait for its check mark instead of writing over a base that VMs may already use.
CREATE TABLE base_copies (
    host_id     TEXT NOT NULL,
    volume      TEXT NOT NULL,
    owner       TEXT NOT NULL,
    started_ms  INTEGER NOT NULL,
    PRIMARY KEY (host_id, volume)
);
