-- Core schema: tenants, users and tokens, hosts, the catalogue (plans, images), VMs with their
-- port forwards, and operations. Every tenant-owned row carries tenant_id.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    suspended   INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL
);
-- Admins' VMs go here when no tenant is named.
INSERT INTO tenants (id, name, created_at) VALUES ('tn_0000000000000000', 'default', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE COLLATE NOCASE,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'customer')),
    tenant_id      TEXT REFERENCES tenants(id),
    password_hash  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    CHECK (role = 'admin' OR tenant_id IS NOT NULL)
);

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    token_hash    BLOB NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    expires_at    TEXT,
    last_used_at  TEXT
);
CREATE INDEX api_tokens_user ON api_tokens(user_id);

CREATE TABLE hosts (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    libvirt_uri          TEXT NOT NULL UNIQUE,
    domain_type          TEXT NOT NULL CHECK (domain_type IN ('kvm', 'qemu')),
    cpus                 INTEGER NOT NULL,
    memory_mib           INTEGER NOT NULL,
    disk_gib             INTEGER NOT NULL,
    cpu_overcommit       REAL NOT NULL,
    memory_overcommit    REAL NOT NULL,
    disk_overcommit      REAL NOT NULL,
    reserved_memory_mib  INTEGER NOT NULL,
    unmanaged_domains    TEXT NOT NULL DEFAULT '[]',
    refreshed_at         TEXT NOT NULL,
    created_at           TEXT NOT NULL
);

CREATE TABLE plans (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    vcpus       INTEGER NOT NULL CHECK (vcpus > 0),
    memory_mib  INTEGER NOT NULL CHECK (memory_mib > 0),
    disk_gib    INTEGER NOT NULL CHECK (disk_gib > 0),
    created_at  TEXT NOT NULL
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
    virtual_size_bytes  INTEGER NOT NULL,
    min_memory_mib      INTEGER NOT NULL,
    available           INTEGER NOT NULL DEFAULT 1,
    registered_at       TEXT NOT NULL
);

CREATE TABLE vms (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    name           TEXT NOT NULL,
    host_id        TEXT NOT NULL REFERENCES hosts(id),
    plan_id        TEXT NOT NULL,
    image_id       TEXT NOT NULL REFERENCES images(id),
    vcpus          INTEGER NOT NULL,
    memory_mib     INTEGER NOT NULL,
    disk_gib       INTEGER NOT NULL,
    state          TEXT NOT NULL,
    ssh_keys       TEXT NOT NULL DEFAULT '[]',
    user_data      TEXT,
    domain_name    TEXT NOT NULL UNIQUE,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    deleted_at     TEXT
);
CREATE UNIQUE INDEX vms_live_name ON vms(tenant_id, name) WHERE deleted_at IS NULL;
CREATE INDEX vms_host_live ON vms(host_id) WHERE deleted_at IS NULL;
CREATE INDEX vms_tenant_live ON vms(tenant_id) WHERE deleted_at IS NULL;

CREATE TABLE port_forwards (
    host_id     TEXT NOT NULL REFERENCES hosts(id),
    host_port   INTEGER NOT NULL,
    vm_id       TEXT NOT NULL REFERENCES vms(id),
    guest_port  INTEGER NOT NULL,
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
    heartbeat_at  TEXT,
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT
);
-- At most one unfinished operation per target: concurrent actions on one VM cannot interleave.
CREATE UNIQUE INDEX operations_one_active ON operations(target_id) WHERE state IN ('pending', 'running');
CREATE INDEX operations_tenant ON operations(tenant_id, created_at);
CREATE INDEX operations_unfinished ON operations(state) WHERE state IN ('pending', 'running');
