-- What the image catalogue tells customers about each image: its OS version, the user to log
-- in as, and whether it runs the QEMU guest agent (carve then gives it the agent's channel).
ALTER TABLE images ADD COLUMN version TEXT NOT NULL DEFAULT '';
ALTER TABLE images ADD COLUMN default_user TEXT NOT NULL DEFAULT 'root';
ALTER TABLE images ADD COLUMN guest_agent INTEGER NOT NULL DEFAULT 0;

-- The cloud-init instance id a VM's seed carries: its id until a reinstall gives it a new one
-- (so cloud-init runs its first-boot work again on the fresh disk, and only then).
ALTER TABLE vms ADD COLUMN instance_id TEXT;

-- What a running guest's agent last reported (sampled with the VM's statistics).
CREATE TABLE vm_guest_info (
    vm_id      TEXT PRIMARY KEY REFERENCES vms(id),
    hostname   TEXT,
    addresses  TEXT NOT NULL DEFAULT '[]',
    at         TEXT NOT NULL
);
