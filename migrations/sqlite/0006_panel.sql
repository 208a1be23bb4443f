-- The panel: a change feed written by triggers (so every process's writes reach every
-- process's event streams), SSH keys saved on users, and sampled VM statistics.

CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    tenant_id  TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('vm', 'operation', 'usage')),
    subject    TEXT NOT NULL,
    data       TEXT NOT NULL
);

CREATE TRIGGER events_vm_insert AFTER INSERT ON vms BEGIN
    INSERT INTO events (tenant_id, kind, subject, data)
    VALUES (NEW.tenant_id, 'vm', NEW.id, json_object('id', NEW.id, 'name', NEW.name, 'state', NEW.state, 'deleted', json('false')));
    INSERT INTO events (tenant_id, kind, subject, data)
    VALUES (NEW.tenant_id, 'usage', NEW.tenant_id, json_object('tenant_id', NEW.tenant_id));
END;

CREATE TRIGGER events_vm_update AFTER UPDATE OF state, deleted_at, vcpus, memory_mib, disk_gib, plan_id ON vms
WHEN OLD.state IS NOT NEW.state OR OLD.deleted_at IS NOT NEW.deleted_at OR OLD.vcpus IS NOT NEW.vcpus
  OR OLD.memory_mib IS NOT NEW.memory_mib OR OLD.disk_gib IS NOT NEW.disk_gib OR OLD.plan_id IS NOT NEW.plan_id
BEGIN
    INSERT INTO events (tenant_id, kind, subject, data)
    VALUES (NEW.tenant_id, 'vm', NEW.id, json_object('id', NEW.id, 'name', NEW.name, 'state', NEW.state,
            'deleted', json(CASE WHEN NEW.deleted_at IS NULL THEN 'false' ELSE 'true' END)));
    INSERT INTO events (tenant_id, kind, subject, data)
    SELECT NEW.tenant_id, 'usage', NEW.tenant_id, json_object('tenant_id', NEW.tenant_id)
    WHERE OLD.deleted_at IS NOT NEW.deleted_at OR OLD.vcpus IS NOT NEW.vcpus
       OR OLD.memory_mib IS NOT NEW.memory_mib OR OLD.disk_gib IS NOT NEW.disk_gib;
END;

CREATE TRIGGER events_operation_insert AFTER INSERT ON operations BEGIN
    INSERT INTO events (tenant_id, kind, subject, data)
    VALUES (NEW.tenant_id, 'operation', NEW.id, json_object('id', NEW.id, 'kind', NEW.kind,
            'target', NEW.target_id, 'state', NEW.state, 'steps', json(NEW.steps)));
END;

CREATE TRIGGER events_operation_update AFTER UPDATE OF state, steps ON operations
WHEN OLD.state IS NOT NEW.state OR OLD.steps IS NOT NEW.steps
BEGIN
    INSERT INTO events (tenant_id, kind, subject, data)
    VALUES (NEW.tenant_id, 'operation', NEW.id, json_object('id', NEW.id, 'kind', NEW.kind,
            'target', NEW.target_id, 'state', NEW.state, 'steps', json(NEW.steps)));
END;

CREATE TRIGGER events_sftp_usage AFTER UPDATE OF used_bytes, used_files ON sftp_accounts
WHEN OLD.used_bytes IS NOT NEW.used_bytes OR OLD.used_files IS NOT NEW.used_files
BEGIN
    INSERT INTO events (tenant_id, kind, subject, data)
    VALUES (NEW.tenant_id, 'usage', NEW.tenant_id, json_object('tenant_id', NEW.tenant_id));
END;

CREATE TRIGGER events_sftp_account AFTER INSERT ON sftp_accounts BEGIN
    INSERT INTO events (tenant_id, kind, subject, data)
    VALUES (NEW.tenant_id, 'usage', NEW.tenant_id, json_object('tenant_id', NEW.tenant_id));
END;

CREATE TRIGGER events_sftp_account_delete AFTER DELETE ON sftp_accounts BEGIN
    INSERT INTO events (tenant_id, kind, subject, data)
    VALUES (OLD.tenant_id, 'usage', OLD.tenant_id, json_object('tenant_id', OLD.tenant_id));
END;

CREATE TABLE user_ssh_keys (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    public_key   TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    UNIQUE (user_id, name),
    UNIQUE (user_id, fingerprint)
);

-- One row per VM per sampling slot (10 s); duplicates from several processes are ignored.
CREATE TABLE vm_samples (
    vm_id             TEXT NOT NULL,
    slot              INTEGER NOT NULL,
    cpu_time_ns       INTEGER NOT NULL,
    cpu_percent       REAL,
    memory_used_kib   INTEGER NOT NULL,
    memory_total_kib  INTEGER NOT NULL,
    PRIMARY KEY (vm_id, slot)
);
CREATE INDEX vm_samples_slot ON vm_samples(slot);

-- The dashboard is cached by view version too: operations, SFTP usage, quotas and the
-- catalogue's names it shows bump the version of the tenant concerned (and '*').
CREATE TRIGGER view_versions_operation_insert AFTER INSERT ON operations BEGIN
    UPDATE view_versions SET version = version + 1 WHERE scope IN ('*', NEW.tenant_id);
END;
CREATE TRIGGER view_versions_operation_update AFTER UPDATE OF state, steps, error ON operations BEGIN
    UPDATE view_versions SET version = version + 1 WHERE scope IN ('*', NEW.tenant_id);
END;
CREATE TRIGGER view_versions_sftp_insert AFTER INSERT ON sftp_accounts BEGIN
    UPDATE view_versions SET version = version + 1 WHERE scope IN ('*', NEW.tenant_id);
END;
CREATE TRIGGER view_versions_sftp_update AFTER UPDATE OF used_bytes, used_files ON sftp_accounts BEGIN
    UPDATE view_versions SET version = version + 1 WHERE scope IN ('*', NEW.tenant_id);
END;
CREATE TRIGGER view_versions_sftp_delete AFTER DELETE ON sftp_accounts BEGIN
    UPDATE view_versions SET version = version + 1 WHERE scope IN ('*', OLD.tenant_id);
END;
CREATE TRIGGER view_versions_quota_insert AFTER INSERT ON quotas BEGIN
    UPDATE view_versions SET version = version + 1 WHERE scope IN ('*', NEW.tenant_id);
END;
CREATE TRIGGER view_versions_quota_update AFTER UPDATE ON quotas BEGIN
    UPDATE view_versions SET version = version + 1 WHERE scope IN ('*', NEW.tenant_id);
END;
CREATE TRIGGER view_versions_quota_delete AFTER DELETE ON quotas BEGIN
    UPDATE view_versions SET version = version + 1 WHERE scope IN ('*', OLD.tenant_id);
END;
CREATE TRIGGER view_versions_plan_insert AFTER INSERT ON plans BEGIN
    UPDATE view_versions SET version = version + 1;
END;
CREATE TRIGGER view_versions_plan_delete AFTER DELETE ON plans BEGIN
    UPDATE view_versions SET version = version + 1;
END;
CREATE TRIGGER view_versions_image_update AFTER UPDATE OF name ON images BEGIN
    UPDATE view_versions SET version = version + 1;
END;
