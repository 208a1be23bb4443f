//! This process's lease on driving a scale group: taken or renewed at each pass, taken over at
//! once from a holder that died on this machine, else when the holder's lease runs out.

use std::time::Duration;

use chrono::Utc;

use crate::db::scale_group_leases as leases;
use crate::domain::ids::PoolId;
use crate::provision::Provisioner;
use crate::provision::owner::Owner;

/// How long a lease lasts without renewal (each pass renews it).
const LEASE: Duration = Duration::from_secs(10);

/// Takes or renews the lease on driving the group of `pool`; false if another live process
/// holds it.
pub async fn take(p: &Provisioner, pool: &PoolId) -> Result<bool, sqlx::Error> {
    let now_ms = Utc::now().timestamp_millis();
    let until_ms = now_ms + LEASE.as_millis() as i64;
    if leases::take_lease(&p.db, pool, &p.owner.id, now_ms, until_ms).await? {
        return Ok(true);
    }
    match leases::lease_holder(&p.db, pool).await? {
        Some(dead) if Owner::is_dead(&dead) => {
            leases::take_lease_from(&p.db, pool, &dead, &p.owner.id, until_ms).await
        }
        _ => Ok(false),
    }
}
