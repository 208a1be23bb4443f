//! Multi-tenancy: tenants and users, password logins with throttling, API tokens, quotas and
//! the audit log.

pub mod accounts;
pub mod audit;
pub mod login;
pub mod principal;
pub mod sessions;
pub mod ssh_keys;
pub mod tokens;
