-- Tenancy: per-tenant quotas, browser sessions, the audit log and login throttling.

ALTER TABLE users ADD COLUMN updated_at TEXT;

-- A tenant without a row here has the configured default quota.
CREATE TABLE quotas (
    tenant_id       TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    max_vms         INTEGER NOT NULL,
    max_vcpus       INTEGER NOT NULL,
    max_memory_mib  INTEGER NOT NULL,
    max_disk_gib    INTEGER NOT NULL,
    max_sftp_bytes  INTEGER NOT NULL,
    max_sftp_files  INTEGER NOT NULL,
    updated_at      TEXT NOT NULL
);

-- Only a SHA-256 digest of the session cookie is stored.
CREATE TABLE sessions (
    id_hash       BLOB PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE INDEX sessions_expiry ON sessions(expires_at);

CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL,
    actor_id   TEXT,
    actor      TEXT NOT NULL,
    tenant_id  TEXT,
    action     TEXT NOT NULL,
    target     TEXT,
    outcome    TEXT NOT NULL,
    status     INTEGER,
    client     TEXT
);
CREATE INDEX audit_log_tenant ON audit_log(tenant_id, id);

-- Failed logins per account ("account:<email>") and per client ("client:<address>").
CREATE TABLE login_failures (
    key               TEXT PRIMARY KEY,
    failures          INTEGER NOT NULL,
    window_started_at TEXT NOT NULL
);

CREATE INDEX api_tokens_expiry ON api_tokens(expires_at);
