-- carve's schema on PostgreSQL: the same tables, keys and rules as the SQLite migrations reach
-- (migrations/sqlite/0001 to 0012), in PostgreSQL's own types: BIGINT counts, BOOLEAN flags,
-- TIMESTAMPTZ times, BYTEA hashes. JSON documents stay TEXT, as the code reads them as text.
-- A change to the schema is a new migration in both directories.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    suspended   BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  TIMESTAMPTZ NOT NULL
);
-- Admins' VMs go here when no tenant is named.
INSERT INTO tenants (id, name, created_at) VALUES ('tn_0000000000000000', 'default', now());

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'customer')),
    tenant_id      TEXT REFERENCES tenants(id),
    password_hash  TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ,
    CHECK (role = 'admin' OR tenant_id IS NOT NULL)
);
-- Emails are unique ignoring case, as SQLite's COLLATE NOCASE has them; carve stores them
-- lower-cased.
CREATE UNIQUE INDEX users_email ON users (lower(email));

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    token_hash    BYTEA NOT NULL UNIQUE,
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ,
    last_used_at  TIMESTAMPTZ
);
CREATE INDEX api_tokens_user ON api_tokens(user_id);
CREATE INDEX api_tokens_expiry ON api_tokens(expires_at);

CREATE TABLE hosts (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    libvirt_uri          TEXT NOT NULL UNIQUE,
    domain_type          TEXT NOT NULL CHECK (domain_type IN ('kvm', 'qemu')),
    cpus                 BIGINT NOT NULL,
    memory_mib           BIGINT NOT NULL,
    disk_gib             BIGINT NOT NULL,
    cpu_overcommit       DOUBLE PRECISION NOT NULL,
    memory_overcommit    DOUBLE PRECISION NOT NULL,
    disk_overcommit      DOUBLE PRECISION NOT NULL,
    reserved_memory_mib  BIGINT NOT NULL,
    unmanaged_domains    TEXT NOT NULL DEFAULT '[]',
    refreshed_at         TIMESTAMPTZ NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL,
    state                TEXT NOT NULL DEFAULT 'active'
                         CHECK (state IN ('active', 'maintenance', 'unreachable')),
    state_reason         TEXT,
    resume_state         TEXT NOT NULL DEFAULT 'active' CHECK (resume_state IN ('active', 'maintenance')),
    labels               TEXT NOT NULL DEFAULT '[]',
    forward_address      TEXT,
    forward_port_first   BIGINT,
    forward_port_last    BIGINT,
    storage_pool         TEXT NOT NULL DEFAULT '',
    storage_path         TEXT NOT NULL DEFAULT '',
    machine_id           TEXT NOT NULL DEFAULT '',
    removed_at           TIMESTAMPTZ
);

CREATE TABLE plans (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    vcpus       BIGINT NOT NULL CHECK (vcpus > 0),
    memory_mib  BIGINT NOT NULL CHECK (memory_mib > 0),
    disk_gib    BIGINT NOT NULL CHECK (disk_gib > 0),
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE images (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    os                  TEXT NOT NULL,
    description         TEXT NOT NULL,
    boot                TEXT NOT NULL CHECK (boot IN ('kernel', 'disk')),
    disk_path           TEXT NOT NULL,
    kernel_path         TEXT,
    initrd_path         TEXT,
    cmdline             TEXT,
    virtual_size_bytes  BIGINT NOT NULL,
    min_memory_mib      BIGINT NOT NULL,
    available           BOOLEAN NOT NULL DEFAULT TRUE,
    registered_at       TIMESTAMPTZ NOT NULL,
    version             TEXT NOT NULL DEFAULT '',
    default_user        TEXT NOT NULL DEFAULT 'root',
    guest_agent         BOOLEAN NOT NULL DEFAULT FALSE,
    source              TEXT NOT NULL DEFAULT 'built' CHECK (source IN ('built', 'uploaded')),
    visible             BOOLEAN NOT NULL DEFAULT TRUE,
    sha256              TEXT,
    removed_at          TIMESTAMPTZ
);

CREATE TABLE vms (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    name           TEXT NOT NULL,
    host_id        TEXT NOT NULL REFERENCES hosts(id),
    plan_id        TEXT NOT NULL,
    image_id       TEXT NOT NULL REFERENCES images(id),
    vcpus          BIGINT NOT NULL,
    memory_mib     BIGINT NOT NULL,
    disk_gib       BIGINT NOT NULL,
    state          TEXT NOT NULL,
    ssh_keys       TEXT NOT NULL DEFAULT '[]',
    user_data      TEXT,
    domain_name    TEXT NOT NULL UNIQUE,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    deleted_at     TIMESTAMPTZ,
    instance_id    TEXT,
    moving_to      TEXT REFERENCES hosts(id)
);
CREATE UNIQUE INDEX vms_live_name ON vms(tenant_id, name) WHERE deleted_at IS NULL;
CREATE INDEX vms_host_live ON vms(host_id) WHERE deleted_at IS NULL;
CREATE INDEX vms_tenant_live ON vms(tenant_id) WHERE deleted_at IS NULL;
CREATE INDEX vms_live_created ON vms(created_at DESC, id DESC) WHERE deleted_at IS NULL;

CREATE TABLE port_forwards (
    host_id     TEXT NOT NULL REFERENCES hosts(id),
    host_port   BIGINT NOT NULL,
    vm_id       TEXT NOT NULL REFERENCES vms(id),
    guest_port  BIGINT NOT NULL,
    PRIMARY KEY (host_id, host_port),
    UNIQUE (vm_id, guest_port)
);

CREATE TABLE operations (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    kind          TEXT NOT NULL,
    target_type   TEXT NOT NULL,
    target_id     TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'running', 'succeeded', 'failed')),
    params        TEXT NOT NULL DEFAULT '{}',
    steps         TEXT NOT NULL DEFAULT '[]',
    error         TEXT,
    owner         TEXT,
    heartbeat_at  TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL,
    started_at    TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ
);
CREATE UNIQUE INDEX operations_one_active ON operations(target_id) WHERE state IN ('pending', 'running');
CREATE INDEX operations_tenant ON operations(tenant_id, created_at);
CREATE INDEX operations_unfinished ON operations(state) WHERE state IN ('pending', 'running');
CREATE INDEX operations_target ON operations(target_id, created_at);

CREATE TABLE quotas (
    tenant_id       TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    max_vms         BIGINT NOT NULL,
    max_vcpus       BIGINT NOT NULL,
    max_memory_mib  BIGINT NOT NULL,
    max_disk_gib    BIGINT NOT NULL,
    max_sftp_bytes  BIGINT NOT NULL,
    max_sftp_files  BIGINT NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE sessions (
    id_hash       BYTEA PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token    TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE INDEX sessions_expiry ON sessions(expires_at);

CREATE TABLE audit_log (
    id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL,
    actor_id   TEXT,
    actor      TEXT NOT NULL,
    tenant_id  TEXT,
    action     TEXT NOT NULL,
    target     TEXT,
    outcome    TEXT NOT NULL,
    status     BIGINT,
    client     TEXT
);
CREATE INDEX audit_log_tenant ON audit_log(tenant_id, id);
CREATE INDEX audit_log_at ON audit_log(at);

CREATE TABLE login_failures (
    key               TEXT PRIMARY KEY,
    failures          BIGINT NOT NULL,
    window_started_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE sftp_accounts (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    username       TEXT NOT NULL UNIQUE,
    password_hash  TEXT,
    public_keys    TEXT NOT NULL DEFAULT '[]',
    enabled        BOOLEAN NOT NULL DEFAULT TRUE,
    used_bytes     BIGINT NOT NULL DEFAULT 0,
    used_files     BIGINT NOT NULL DEFAULT 0,
    scanned_at     TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX sftp_accounts_tenant ON sftp_accounts(tenant_id);

CREATE TABLE sftp_reservations (
    owner       TEXT NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    bytes       BIGINT NOT NULL DEFAULT 0,
    files       BIGINT NOT NULL DEFAULT 0,
    expires_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (owner, tenant_id)
);

CREATE TABLE user_ssh_keys (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    public_key   TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (user_id, name),
    UNIQUE (user_id, fingerprint)
);

CREATE TABLE vm_samples (
    vm_id             TEXT NOT NULL,
    slot              BIGINT NOT NULL,
    cpu_time_ns       BIGINT NOT NULL,
    cpu_percent       DOUBLE PRECISION,
    memory_used_kib   BIGINT NOT NULL,
    memory_total_kib  BIGINT NOT NULL,
    PRIMARY KEY (vm_id, slot)
);
CREATE INDEX vm_samples_slot ON vm_samples(slot);

CREATE TABLE vm_guest_info (
    vm_id      TEXT PRIMARY KEY REFERENCES vms(id),
    hostname   TEXT,
    addresses  TEXT NOT NULL DEFAULT '[]',
    at         TIMESTAMPTZ NOT NULL
);

CREATE TABLE pools (
    id                   TEXT PRIMARY KEY,
    tenant_id            TEXT NOT NULL REFERENCES tenants(id),
    name                 TEXT NOT NULL,
    protocol             TEXT NOT NULL CHECK (protocol IN ('http', 'tcp')),
    listen_address       TEXT NOT NULL,
    listen_port          BIGINT NOT NULL CHECK (listen_port BETWEEN 1 AND 65535),
    algorithm            TEXT NOT NULL CHECK (algorithm IN ('round_robin', 'least_connections')),
    check_kind           TEXT NOT NULL CHECK (check_kind IN ('http', 'tcp')),
    check_path           TEXT,
    check_expect_status  BIGINT,
    check_interval_s     BIGINT NOT NULL,
    check_timeout_s      BIGINT NOT NULL,
    check_rise           BIGINT NOT NULL,
    check_fall           BIGINT NOT NULL,
    drain_timeout_s      BIGINT NOT NULL,
    sticky_cookie        TEXT,
    proxy_protocol       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX pools_name ON pools(tenant_id, name);
CREATE UNIQUE INDEX pools_listen ON pools(listen_port);

CREATE TABLE pool_members (
    pool_id           TEXT NOT NULL REFERENCES pools(id) ON DELETE CASCADE,
    vm_id             TEXT NOT NULL REFERENCES vms(id),
    port              BIGINT NOT NULL CHECK (port BETWEEN 1 AND 65535),
    weight            BIGINT NOT NULL CHECK (weight BETWEEN 1 AND 256),
    state             TEXT NOT NULL CHECK (state IN ('joining', 'healthy', 'unhealthy', 'draining', 'inactive')),
    leaving           BOOLEAN NOT NULL DEFAULT FALSE,
    state_changed_at  TIMESTAMPTZ NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (pool_id, vm_id)
);
CREATE INDEX pool_members_vm ON pool_members(vm_id);

CREATE TABLE scale_groups (
    pool_id               TEXT PRIMARY KEY REFERENCES pools(id),
    tenant_id             TEXT NOT NULL REFERENCES tenants(id),
    plan_id               TEXT NOT NULL REFERENCES plans(id),
    image_id              TEXT NOT NULL REFERENCES images(id),
    user_data             TEXT,
    ssh_keys              TEXT NOT NULL DEFAULT '[]',
    port                  BIGINT NOT NULL CHECK (port BETWEEN 1 AND 65535),
    root_password_hash    TEXT,
    template_version      BIGINT NOT NULL DEFAULT 1,
    min_size              BIGINT NOT NULL CHECK (min_size >= 0),
    max_size              BIGINT NOT NULL CHECK (max_size >= min_size),
    desired               BIGINT NOT NULL CHECK (desired BETWEEN min_size AND max_size),
    replace_after_s       BIGINT NOT NULL,
    health_grace_s        BIGINT NOT NULL,
    max_surge             BIGINT NOT NULL,
    min_healthy_percent   BIGINT NOT NULL CHECK (min_healthy_percent BETWEEN 0 AND 100),
    target_metric         TEXT CHECK (target_metric IN ('connections', 'requests_per_second')),
    target_value          BIGINT,
    scale_out_cooldown_s  BIGINT NOT NULL,
    scale_in_cooldown_s   BIGINT NOT NULL,
    last_scaled_at        TIMESTAMPTZ,
    refresh               TEXT NOT NULL DEFAULT 'none' CHECK (refresh IN ('none', 'running', 'paused')),
    refresh_operation     TEXT,
    shortfall             TEXT,
    next_index            BIGINT NOT NULL DEFAULT 1,
    deleting              BOOLEAN NOT NULL DEFAULT FALSE,
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL,
    controller            TEXT,
    controller_until_ms   BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE scale_group_members (
    pool_id           TEXT NOT NULL REFERENCES scale_groups(pool_id) ON DELETE CASCADE,
    vm_id             TEXT NOT NULL REFERENCES vms(id),
    template_version  BIGINT NOT NULL,
    retiring          BOOLEAN NOT NULL DEFAULT FALSE,
    unhealthy_since   TIMESTAMPTZ,
    ever_healthy      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at        TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (pool_id, vm_id)
);
CREATE UNIQUE INDEX scale_group_members_vm ON scale_group_members(vm_id);

CREATE TABLE pool_load (
    pool_id              TEXT PRIMARY KEY REFERENCES pools(id) ON DELETE CASCADE,
    connections          BIGINT NOT NULL,
    requests_per_second  DOUBLE PRECISION NOT NULL,
    healthy_members      BIGINT NOT NULL,
    at                   TIMESTAMPTZ NOT NULL
);

CREATE TABLE base_copies (
    host_id     TEXT NOT NULL,
    volume      TEXT NOT NULL,
    owner       TEXT NOT NULL,
    started_ms  BIGINT NOT NULL,
    PRIMARY KEY (host_id, volume)
);

-- A version per tenant (and '*' for everything) that every change to what a tenant's pages
-- show bumps, by trigger, so no write path can forget, whichever clone made the change.
CREATE TABLE view_versions (
    scope    TEXT PRIMARY KEY,
    version  BIGINT NOT NULL DEFAULT 0
);
INSERT INTO view_versions (scope) VALUES ('*');
INSERT INTO view_versions (scope) SELECT id FROM tenants;

-- The change feed behind live pages and the balancer: one row per change, written by
-- triggers, and a NOTIFY on `carve_events` so every clone's tailer wakes at once.
CREATE TABLE events (
    id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    tenant_id  TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('vm', 'operation', 'usage', 'pool')),
    subject    TEXT NOT NULL,
    data       TEXT NOT NULL
);
CREATE INDEX events_at ON events(at);

CREATE FUNCTION carve_event(tenant TEXT, kind TEXT, subject TEXT, data JSONB) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (tenant_id, kind, subject, data) VALUES (tenant, kind, subject, data::text);
    PERFORM pg_notify('carve_events', '');
END $$;

CREATE FUNCTION carve_bump(scope_a TEXT, scope_b TEXT) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE view_versions SET version = version + 1
    WHERE scope IN ('*', scope_a, scope_b);
END $$;

-- Tenants
CREATE FUNCTION carve_tenants_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO view_versions (scope) VALUES (NEW.id) ON CONFLICT DO NOTHING;
    ELSE
        DELETE FROM view_versions WHERE scope = OLD.id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER tenants_changed AFTER INSERT OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION carve_tenants_trigger();

-- VMs
CREATE FUNCTION carve_vms_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM carve_bump(NEW.tenant_id, NULL);
        PERFORM carve_event(NEW.tenant_id, 'vm', NEW.id, jsonb_build_object('id', NEW.id,
            'name', NEW.name, 'state', NEW.state, 'deleted', false));
        PERFORM carve_event(NEW.tenant_id, 'usage', NEW.tenant_id,
            jsonb_build_object('tenant_id', NEW.tenant_id));
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM carve_bump(NEW.tenant_id, OLD.tenant_id);
        IF OLD.state IS DISTINCT FROM NEW.state OR OLD.deleted_at IS DISTINCT FROM NEW.deleted_at
           OR OLD.vcpus IS DISTINCT FROM NEW.vcpus OR OLD.memory_mib IS DISTINCT FROM NEW.memory_mib
           OR OLD.disk_gib IS DISTINCT FROM NEW.disk_gib OR OLD.plan_id IS DISTINCT FROM NEW.plan_id THEN
            PERFORM carve_event(NEW.tenant_id, 'vm', NEW.id, jsonb_build_object('id', NEW.id,
                'name', NEW.name, 'state', NEW.state, 'deleted', NEW.deleted_at IS NOT NULL));
        END IF;
        IF OLD.deleted_at IS DISTINCT FROM NEW.deleted_at OR OLD.vcpus IS DISTINCT FROM NEW.vcpus
           OR OLD.memory_mib IS DISTINCT FROM NEW.memory_mib OR OLD.disk_gib IS DISTINCT FROM NEW.disk_gib THEN
            PERFORM carve_event(NEW.tenant_id, 'usage', NEW.tenant_id,
                jsonb_build_object('tenant_id', NEW.tenant_id));
        END IF;
    ELSE
        PERFORM carve_bump(OLD.tenant_id, NULL);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER vms_changed AFTER INSERT OR UPDATE OR DELETE ON vms
    FOR EACH ROW EXECUTE FUNCTION carve_vms_trigger();

-- Port forwards
CREATE FUNCTION carve_forwards_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    vm TEXT := CASE WHEN TG_OP = 'DELETE' THEN OLD.vm_id ELSE NEW.vm_id END;
BEGIN
    PERFORM carve_bump((SELECT tenant_id FROM vms WHERE id = vm), NULL);
    RETURN NULL;
END $$;
CREATE TRIGGER forwards_changed AFTER INSERT OR DELETE ON port_forwards
    FOR EACH ROW EXECUTE FUNCTION carve_forwards_trigger();

-- Operations
CREATE FUNCTION carve_operations_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM carve_bump(NEW.tenant_id, NULL);
    IF TG_OP = 'INSERT' OR OLD.state IS DISTINCT FROM NEW.state OR OLD.steps IS DISTINCT FROM NEW.steps THEN
        PERFORM carve_event(NEW.tenant_id, 'operation', NEW.id, jsonb_build_object('id', NEW.id,
            'kind', NEW.kind, 'target', NEW.target_id, 'state', NEW.state,
            'steps', NEW.steps::jsonb));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER operations_inserted AFTER INSERT ON operations
    FOR EACH ROW EXECUTE FUNCTION carve_operations_trigger();
CREATE TRIGGER operations_updated AFTER UPDATE OF state, steps, error ON operations
    FOR EACH ROW EXECUTE FUNCTION carve_operations_trigger();

-- SFTP accounts
CREATE FUNCTION carve_sftp_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    tenant TEXT := CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END;
BEGIN
    PERFORM carve_bump(tenant, NULL);
    IF TG_OP <> 'UPDATE' OR OLD.used_bytes IS DISTINCT FROM NEW.used_bytes
       OR OLD.used_files IS DISTINCT FROM NEW.used_files THEN
        PERFORM carve_event(tenant, 'usage', tenant, jsonb_build_object('tenant_id', tenant));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER sftp_accounts_changed AFTER INSERT OR DELETE ON sftp_accounts
    FOR EACH ROW EXECUTE FUNCTION carve_sftp_trigger();
CREATE TRIGGER sftp_accounts_usage AFTER UPDATE OF used_bytes, used_files ON sftp_accounts
    FOR EACH ROW EXECUTE FUNCTION carve_sftp_trigger();

-- Quotas
CREATE FUNCTION carve_quotas_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM carve_bump(CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END, NULL);
    RETURN NULL;
END $$;
CREATE TRIGGER quotas_changed AFTER INSERT OR UPDATE OR DELETE ON quotas
    FOR EACH ROW EXECUTE FUNCTION carve_quotas_trigger();

-- Plans and image names: every tenant's pages show them.
CREATE FUNCTION carve_catalogue_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE view_versions SET version = version + 1;
    RETURN NULL;
END $$;
CREATE TRIGGER plans_changed AFTER INSERT OR DELETE ON plans
    FOR EACH ROW EXECUTE FUNCTION carve_catalogue_trigger();
CREATE TRIGGER images_renamed AFTER UPDATE OF name ON images
    FOR EACH ROW EXECUTE FUNCTION carve_catalogue_trigger();

-- Pools
CREATE FUNCTION carve_pools_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM carve_event(OLD.tenant_id, 'pool', OLD.id, jsonb_build_object('id', OLD.id,
            'name', OLD.name, 'deleted', true));
    ELSE
        PERFORM carve_event(NEW.tenant_id, 'pool', NEW.id, jsonb_build_object('id', NEW.id,
            'name', NEW.name, 'deleted', false));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER pools_changed AFTER INSERT OR UPDATE OR DELETE ON pools
    FOR EACH ROW EXECUTE FUNCTION carve_pools_trigger();

CREATE FUNCTION carve_pool_members_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    p pools%ROWTYPE;
    member JSONB;
BEGIN
    IF TG_OP = 'DELETE' THEN
        SELECT * INTO p FROM pools WHERE id = OLD.pool_id;
        member := jsonb_build_object('vm_id', OLD.vm_id, 'state', 'gone');
    ELSE
        IF TG_OP = 'UPDATE' AND NOT (OLD.state IS DISTINCT FROM NEW.state
            OR OLD.leaving IS DISTINCT FROM NEW.leaving OR OLD.weight IS DISTINCT FROM NEW.weight
            OR OLD.port IS DISTINCT FROM NEW.port) THEN
            RETURN NULL;
        END IF;
        SELECT * INTO p FROM pools WHERE id = NEW.pool_id;
        member := jsonb_build_object('vm_id', NEW.vm_id, 'state', NEW.state);
    END IF;
    IF FOUND THEN
        PERFORM carve_event(p.tenant_id, 'pool', p.id, jsonb_build_object('id', p.id,
            'name', p.name, 'deleted', false, 'member', member));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER pool_members_changed AFTER INSERT OR DELETE ON pool_members
    FOR EACH ROW EXECUTE FUNCTION carve_pool_members_trigger();
CREATE TRIGGER pool_members_updated AFTER UPDATE OF state, leaving, weight, port ON pool_members
    FOR EACH ROW EXECUTE FUNCTION carve_pool_members_trigger();

CREATE FUNCTION carve_scale_groups_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    p pools%ROWTYPE;
BEGIN
    IF TG_OP = 'UPDATE' AND NOT (OLD.desired IS DISTINCT FROM NEW.desired
        OR OLD.min_size IS DISTINCT FROM NEW.min_size OR OLD.max_size IS DISTINCT FROM NEW.max_size
        OR OLD.template_version IS DISTINCT FROM NEW.template_version
        OR OLD.refresh IS DISTINCT FROM NEW.refresh OR OLD.shortfall IS DISTINCT FROM NEW.shortfall
        OR OLD.deleting IS DISTINCT FROM NEW.deleting) THEN
        RETURN NULL;
    END IF;
    SELECT * INTO p FROM pools
    WHERE id = CASE WHEN TG_OP = 'DELETE' THEN OLD.pool_id ELSE NEW.pool_id END;
    IF FOUND THEN
        PERFORM carve_event(p.tenant_id, 'pool', p.id, jsonb_build_object('id', p.id,
            'name', p.name, 'deleted', false));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER scale_groups_changed AFTER INSERT OR DELETE ON scale_groups
    FOR EACH ROW EXECUTE FUNCTION carve_scale_groups_trigger();
CREATE TRIGGER scale_groups_updated AFTER UPDATE OF desired, min_size, max_size, template_version,
    refresh, shortfall, deleting ON scale_groups
    FOR EACH ROW EXECUTE FUNCTION carve_scale_groups_trigger();

-- One writer at a time, as on SQLite: every statement that writes a table whose triggers bump
-- view_versions or add events, or whose rows placement and limits are checked against (hosts,
-- scale group members, SSH keys), first takes the advisory lock that carve's write
-- transactions take (`db::begin_write`), before it locks any row. Taking it first, always, means writers
-- queue instead of deadlocking on rows and the '*' version row, and events get their ids in
-- the order their transactions commit, so a tailer never passes over one still in flight.
CREATE FUNCTION carve_write_lock() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(109270183339264);
    RETURN NULL;
END $$;
DO $$
DECLARE
    t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenants', 'vms', 'port_forwards', 'operations', 'sftp_accounts',
        'quotas', 'plans', 'images', 'pools', 'pool_members', 'scale_groups',
        'scale_group_members', 'hosts', 'user_ssh_keys'] LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE INSERT OR UPDATE OR DELETE ON %I
            FOR EACH STATEMENT EXECUTE FUNCTION carve_write_lock()', t || '_write_lock', t);
    END LOOP;
END $$;
