-- SFTP quota reservations: each carve process serving SFTP holds, per tenant, bytes and files
-- it may still charge without asking the database. A grant is decided in one write
-- transaction against max - used - every reservation, so any number of processes hold the
-- quota to the byte. Rows are emptied at every flush (a few seconds); a row whose lease ran
-- out belongs to a dead process and is dropped.
CREATE TABLE sftp_reservations (
    owner       TEXT NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    bytes       INTEGER NOT NULL DEFAULT 0,
    files       INTEGER NOT NULL DEFAULT 0,
    expires_at  TEXT NOT NULL,
    PRIMARY KEY (owner, tenant_id)
);
