-- Scale groups: a pool may own a group that keeps `desired` identical VMs (made from a
-- template) behind it, replaces unhealthy ones and rolls template changes through. The
-- group's state is all here, so any carve process (after a crash, or a clone) carries on.

CREATE TABLE scale_groups (
    pool_id               TEXT PRIMARY KEY REFERENCES pools(id),
    tenant_id             TEXT NOT NULL REFERENCES tenants(id),
    -- The template every member is made from.
    plan_id               TEXT NOT NULL REFERENCES plans(id),
    image_id              TEXT NOT NULL REFERENCES images(id),
    user_data             TEXT,
    ssh_keys              TEXT NOT NULL DEFAULT '[]',
    port                  INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    -- A SHA-512 crypt hash (as /etc/shadow holds), never the password.
    root_password_hash    TEXT,
    -- Bumped by every template change and refresh; members record the one they were made of.
    template_version      INTEGER NOT NULL DEFAULT 1,
    min_size              INTEGER NOT NULL CHECK (min_size >= 0),
    max_size              INTEGER NOT NULL CHECK (max_size >= min_size),
    desired               INTEGER NOT NULL CHECK (desired BETWEEN min_size AND max_size),
    replace_after_s       INTEGER NOT NULL,
    health_grace_s        INTEGER NOT NULL,
    max_surge             INTEGER NOT NULL,
    min_healthy_percent   INTEGER NOT NULL CHECK (min_healthy_percent BETWEEN 0 AND 100),
    -- Target tracking (optional): keep the metric per healthy member near the value.
    target_metric         TEXT CHECK (target_metric IN ('connections', 'requests_per_second')),
    target_value          INTEGER,
    scale_out_cooldown_s  INTEGER NOT NULL,
    scale_in_cooldown_s   INTEGER NOT NULL,
    last_scaled_at        TEXT,
    -- The rolling replacement in progress: none, running or paused, and its operation.
    refresh               TEXT NOT NULL DEFAULT 'none' CHECK (refresh IN ('none', 'running', 'paused')),
    refresh_operation     TEXT,
    -- Why the group has fewer members than it wants, while it does.
    shortfall             TEXT,
    next_index            INTEGER NOT NULL DEFAULT 1,
    -- Being deleted: its members are retired, then the row goes.
    deleting              INTEGER NOT NULL DEFAULT 0,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL
);

CREATE TABLE scale_group_members (
    pool_id           TEXT NOT NULL REFERENCES scale_groups(pool_id) ON DELETE CASCADE,
    vm_id             TEXT NOT NULL REFERENCES vms(id),
    template_version  INTEGER NOT NULL,
    -- Chosen to go: its delete operation drains it from the pool first.
    retiring          INTEGER NOT NULL DEFAULT 0,
    -- Since when it has run without passing the pool's health check (NULL while it passes).
    unhealthy_since   TEXT,
    ever_healthy      INTEGER NOT NULL DEFAULT 0,
    created_at        TEXT NOT NULL,
    PRIMARY KEY (pool_id, vm_id)
);
CREATE UNIQUE INDEX scale_group_members_vm ON scale_group_members(vm_id);

-- What the balancer measured per pool, written every few seconds, for target tracking (its
-- own table: the pools table's triggers feed the panel, which need not hear of this).
CREATE TABLE pool_load (
    pool_id              TEXT PRIMARY KEY REFERENCES pools(id) ON DELETE CASCADE,
    connections          INTEGER NOT NULL,
    requests_per_second  REAL NOT NULL,
    healthy_members      INTEGER NOT NULL,
    at                   TEXT NOT NULL
);

-- Group changes show on the pool's page live (a 'pool' event for the group's pool).
CREATE TRIGGER events_scale_group_insert AFTER INSERT ON scale_groups BEGIN
    INSERT INTO events (tenant_id, kind, subject, data)
    SELECT p.tenant_id, 'pool', p.id, json_object('id', p.id, 'name', p.name, 'deleted', json('false'))
    FROM pools p WHERE p.id = NEW.pool_id;
END;
CREATE TRIGGER events_scale_group_update AFTER UPDATE OF desired, min_size, max_size, template_version, refresh, shortfall, deleting ON scale_groups
WHEN OLD.desired IS NOT NEW.desired OR OLD.min_size IS NOT NEW.min_size OR OLD.max_size IS NOT NEW.max_size
  OR OLD.template_version IS NOT NEW.template_version OR OLD.refresh IS NOT NEW.refresh
  OR OLD.shortfall IS NOT NEW.shortfall OR OLD.deleting IS NOT NEW.deleting
BEGIN
    INSERT INTO events (tenant_id, kind, subject, data)
    SELECT p.tenant_id, 'pool', p.id, json_object('id', p.id, 'name', p.name, 'deleted', json('false'))
    FROM pools p WHERE p.id = NEW.pool_id;
END;
CREATE TRIGGER events_scale_group_delete AFTER DELETE ON scale_groups BEGIN
    INSERT INTO events (tenant_id, kind, subject, data)
    SELECT p.tenant_id, 'pool', p.id, json_object('id', p.id, 'name', p.name, 'deleted', json('false'))
    FROM pools p WHERE p.id = OLD.pool_id;
END;
