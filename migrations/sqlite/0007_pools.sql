-- Load-balanced pools: a tenant's listener in front of its VMs' guest ports, members with the
-- state the balancer last saw, and a `pool` kind in the change feed (the feed's CHECK is
-- rebuilt, which means dropping and re-creating the triggers that write it).

CREATE TABLE pools (
    id                   TEXT PRIMARY KEY,
    tenant_id            TEXT NOT NULL REFERENCES tenants(id),
    name                 TEXT NOT NULL,
    protocol             TEXT NOT NULL CHECK (protocol IN ('http', 'tcp')),
    listen_address       TEXT NOT NULL,
    listen_port          INTEGER NOT NULL CHECK (listen_port BETWEEN 1 AND 65535),
    algorithm            TEXT NOT NULL CHECK (algorithm IN ('round_robin', 'least_connections')),
    check_kind           TEXT NOT NULL CHECK (check_kind IN ('http', 'tcp')),
    check_path           TEXT,
    check_expect_status  INTEGER,
    check_interval_s     INTEGER NOT NULL,
    check_timeout_s      INTEGER NOT NULL,
    check_rise           INTEGER NOT NULL,
    check_fall           INTEGER NOT NULL,
    drain_timeout_s      INTEGER NOT NULL,
    sticky_cookie        TEXT,
    proxy_protocol       INTEGER NOT NULL DEFAULT 0,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);
CREATE UNIQUE INDEX pools_name ON pools(tenant_id, name);
CREATE UNIQUE INDEX pools_listen ON pools(listen_port);

CREATE TABLE pool_members (
    pool_id           TEXT NOT NULL REFERENCES pools(id) ON DELETE CASCADE,
    vm_id             TEXT NOT NULL REFERENCES vms(id),
    port              INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    weight            INTEGER NOT NULL CHECK (weight BETWEEN 1 AND 256),
    -- What the balancer last saw: joining, healthy, unhealthy, draining; inactive while the
    -- VM does not run.
    state             TEXT NOT NULL CHECK (state IN ('joining', 'healthy', 'unhealthy', 'draining', 'inactive')),
    -- Detached: drained, then this row goes.
    leaving           INTEGER NOT NULL DEFAULT 0,
    state_changed_at  TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    PRIMARY KEY (pool_id, vm_id)
);
CREATE INDEX pool_members_vm ON pool_members(vm_id);

DROP TRIGGER events_vm_insert;
DROP TRIGGER events_vm_update;
DROP TRIGGER events_operation_insert;
DROP TRIGGER events_operation_update;
DROP TRIGGER events_sftp_usage;
DROP TRIGGER events_sftp_account;
DROP TRIGGER events_sftp_account_delete;

CREATE TABLE events_new (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    tenant_id  TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('vm', 'operation', 'usage', 'pool')),
    subject    TEXT NOT NULL,
    data       TEXT NOT NULL
);
INSERT INTO events_new (id, at, tenant_id, kind, subject, data)
    SELECT id, at, tenant_id, kind, subject, data FROM events;
-- Ids go on from where they were even when no event is kept (clients resume by id).
DELETE FROM sqlite_sequence WHERE name = 'events_new';
INSERT INTO sqlite_sequence (name, seq) SELECT 'events_new', seq FROM sqlite_sequence WHERE name = 'events';
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;

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

-- Pool changes: the pool itself (subject the pool id, `deleted` when it goes) and each
-- member's state.
CREATE TRIGGER events_pool_insert AFTER INSERT ON pools BEGIN
    INSERT INTO events (tenant_id, kind, subject, data)
    VALUES (NEW.tenant_id, 'pool', NEW.id, json_object('id', NEW.id, 'name', NEW.name, 'deleted', json('false')));
END;
CREATE TRIGGER events_pool_update AFTER UPDATE ON pools BEGIN
    INSERT INTO events (tenant_id, kind, subject, data)
    VALUES (NEW.tenant_id, 'pool', NEW.id, json_object('id', NEW.id, 'name', NEW.name, 'deleted', json('false')));
END;
CREATE TRIGGER events_pool_delete AFTER DELETE ON pools BEGIN
    INSERT INTO events (tenant_id, kind, subject, data)
    VALUES (OLD.tenant_id, 'pool', OLD.id, json_object('id', OLD.id, 'name', OLD.name, 'deleted', json('true')));
END;
CREATE TRIGGER events_pool_member_insert AFTER INSERT ON pool_members BEGIN
    INSERT INTO events (tenant_id, kind, subject, data)
    SELECT p.tenant_id, 'pool', p.id, json_object('id', p.id, 'name', p.name, 'deleted', json('false'),
           'member', json_object('vm_id', NEW.vm_id, 'state', NEW.state))
    FROM pools p WHERE p.id = NEW.pool_id;
END;
CREATE TRIGGER events_pool_member_update AFTER UPDATE OF state, leaving, weight, port ON pool_members
WHEN OLD.state IS NOT NEW.state OR OLD.leaving IS NOT NEW.leaving OR OLD.weight IS NOT NEW.weight
  OR OLD.port IS NOT NEW.port
BEGIN
    INSERT INTO events (tenant_id, kind, subject, data)
    SELECT p.tenant_id, 'pool', p.id, json_object('id', p.id, 'name', p.name, 'deleted', json('false'),
           'member', json_object('vm_id', NEW.vm_id, 'state', NEW.state))
    FROM pools p WHERE p.id = NEW.pool_id;
END;
CREATE TRIGGER events_pool_member_delete AFTER DELETE ON pool_members BEGIN
    INSERT INTO events (tenant_id, kind, subject, data)
    SELECT p.tenant_id, 'pool', p.id, json_object('id', p.id, 'name', p.name, 'deleted', json('false'),
           'member', json_object('vm_id', OLD.vm_id, 'state', 'gone'))
    FROM pools p WHERE p.id = OLD.pool_id;
END;
