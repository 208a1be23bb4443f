-- SFTP accounts: argon2id password hashes and/or public keys, a home per account, and the
-- bytes and files each uses (the tenant's quota covers the sum).
CREATE TABLE sftp_accounts (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    username       TEXT NOT NULL UNIQUE,
    password_hash  TEXT,
    public_keys    TEXT NOT NULL DEFAULT '[]',
    enabled        INTEGER NOT NULL DEFAULT 1,
    used_bytes     INTEGER NOT NULL DEFAULT 0,
    used_files     INTEGER NOT NULL DEFAULT 0,
    scanned_at     TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX sftp_accounts_tenant ON sftp_accounts(tenant_id);
