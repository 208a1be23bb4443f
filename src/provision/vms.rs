//! VM service functions shared by the REST API and the panel: validate, check capacity and
//! reserve in one write transaction, record the operation, hand it to a worker.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{OpKind, OpState, Provisioner, VmState};
use crate::auth::Principal;
use crate::db::operations::{OperationFilter, OperationRow, Step};
use crate::db::page::{Page, PageRequest};
use crate::db::ports::{AllocateError, Forward};
use crate::db::quotas::Usage;
use crate::db::vms::{NewVm, VmRow};
use crate::db::{self, Scope, WriteTx};
use crate::domain::Invalid;
use crate::domain::capacity::{self, Shortfall};
use crate::domain::ids::{OperationId, VmId};
use crate::domain::names::VmName;
use crate::domain::sizes::Resources;
use crate::domain::ssh::{self, SshPublicKey};
use crate::error::AppError;
use crate::hypervisor::PowerState;
use crate::quota::check_quota;

mod actions;
mod create;
mod list;
mod views;

pub use actions::*;
pub use create::*;
pub use list::*;
pub use views::*;

/// One operation, if the actor may see it.
pub async fn operation(
    p: &Provisioner,
    actor: &Principal,
    id: &str,
) -> Result<OperationView, AppError> {
    let op_id = OperationId::parse(id).ok_or_else(|| AppError::not_found("operation", id))?;
    let op = db::operations::get(&p.db, &actor.scope(), &op_id)
        .await?
        .ok_or_else(|| AppError::not_found("operation", id))?;
    Ok(OperationView::from(&op).for_viewer(actor))
}

/// One page of the operations the actor may see that pass the filter, newest first.
pub async fn operations(
    p: &Provisioner,
    actor: &Principal,
    filter: &OperationFilter<'_>,
    page: &PageRequest,
) -> Result<Page<OperationView>, AppError> {
    Ok(db::operations::page(&p.db, &actor.scope(), filter, page)
        .await?
        .map(|o| OperationView::from(&o).for_viewer(actor)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use crate::domain::ids::{TenantId, UserId};

    fn principal(role: Role) -> Principal {
        Principal {
            user_id: UserId::generate(),
            email: "someone@example.com".into(),
            role,
            tenant_id: Some(TenantId::default_tenant()),
            view_version: None,
        }
    }

    #[test]
    fn customers_see_a_reference_instead_of_host_detail() {
        let failed = OperationView {
            id: "op_0123456789abcdef".into(),
            kind: OpKind::Create,
            target_type: "vm".into(),
            target: "vm_0123456789abcdef".into(),
            tenant_id: TenantId::default_tenant().to_string(),
            state: OpState::Failed,
            steps: Vec::new(),
            error: Some(
                "step \"make disk\" failed: qemu-img: /var/lib/carve/vms/x: No space".into(),
            ),
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
        };
        let customer = failed.clone().for_viewer(&principal(Role::Customer));
        let shown = customer.error.unwrap();
        assert!(
            !shown.contains("/var/lib") && !shown.contains("qemu-img"),
            "{shown}"
        );
        assert!(shown.contains("op_0123456789abcdef"), "{shown}");
        let admin = failed.clone().for_viewer(&principal(Role::Admin));
        assert_eq!(admin.error, failed.error);
    }
}
