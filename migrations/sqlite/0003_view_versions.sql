-- A version per tenant (and '*' for everything) that every change to a VM or its forwards
-- bumps, by trigger, so no write path can forget. Readers compare it to decide whether a
-- rendered VM list is still current, whichever carve process made the change.

CREATE TABLE view_versions (
    scope    TEXT PRIMARY KEY,
    version  INTEGER NOT NULL DEFAULT 0
);
INSERT INTO view_versions (scope) VALUES ('*');
INSERT INTO view_versions (scope) SELECT id FROM tenants;

CREATE TRIGGER view_versions_tenant AFTER INSERT ON tenants BEGIN
    INSERT OR IGNORE INTO view_versions (scope) VALUES (NEW.id);
END;
CREATE TRIGGER view_versions_tenant_gone AFTER DELETE ON tenants BEGIN
    DELETE FROM view_versions WHERE scope = OLD.id;
END;

CREATE TRIGGER view_versions_vm_insert AFTER INSERT ON vms BEGIN
    UPDATE view_versions SET version = version + 1 WHERE scope IN ('*', NEW.tenant_id);
END;
CREATE TRIGGER view_versions_vm_update AFTER UPDATE ON vms BEGIN
    UPDATE view_versions SET version = version + 1 WHERE scope IN ('*', NEW.tenant_id, OLD.tenant_id);
END;
CREATE TRIGGER view_versions_vm_delete AFTER DELETE ON vms BEGIN
    UPDATE view_versions SET version = version + 1 WHERE scope IN ('*', OLD.tenant_id);
END;
CREATE TRIGGER view_versions_forward_insert AFTER INSERT ON port_forwards BEGIN
    UPDATE view_versions SET version = version + 1
    WHERE scope = '*' OR scope = (SELECT tenant_id FROM vms WHERE id = NEW.vm_id);
END;
CREATE TRIGGER view_versions_forward_delete AFTER DELETE ON port_forwards BEGIN
    UPDATE view_versions SET version = version + 1
    WHERE scope = '*' OR scope = (SELECT tenant_id FROM vms WHERE id = OLD.vm_id);
END;
