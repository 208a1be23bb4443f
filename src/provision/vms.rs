//! VM service functions shared by the REST API and the panel: validate, check capacity and
//! reserve in one write transaction, record the operation, hand it to a worker.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{OpKind, Provisioner, VmState};
use crate::auth::Principal;
use crate::db::operations::{OperationRow, Step};
use crate::db::page::{Page, PageRequest};
use crate::db::ports::{AllocateError, Forward};
use crate::db::quotas::Usage;
use crate::db::vms::{NewVm, VmRow};
use crate::db::{self, Scope, WriteTx};
use crate::domain::Invalid;
use crate::domain::capacity::{self, Shortfall};
use crate::domain::ids::{HostId, OperationId, TenantId, VmId};
use crate::domain::names::VmName;
use crate::domain::sizes::Resources;
use crate::domain::ssh::{self, SshPublicKey};
use crate::error::AppError;
use crate::hypervisor::PowerState;
use crate::hypervisor::storage::VmFiles;
use crate::tenancy::accounts::check_quota;

/// Largest user-data accepted, in bytes.
pub const MAX_USER_DATA: usize = 64 * 1024;
/// Most guest ports one VM may forward.
pub const MAX_PORTS: usize = 16;

/// A request to create a VM.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVmRequest {
    /// The VM's name: a DNS label (lowercase letters, digits, '-'), unique in the tenant.
    #[schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// Plan id or name.
    pub plan: String,
    /// Image id or name.
    pub image: String,
    /// OpenSSH public keys for the guest.
    #[serde(default)]
    #[schema(max_items = 32)]
    pub ssh_keys: Vec<String>,
    /// cloud-init user-data; a script starting with `#!` runs at first boot.
    #[serde(default)]
    #[schema(max_length = 65536)]
    pub user_data: Option<String>,
    /// Guest TCP ports to forward from the host (network mode `user`).
    #[serde(default)]
    #[schema(max_items = 16, value_type = Vec<u16>)]
    pub ports: Vec<i64>,
    /// Load-balanced pool to join.
    #[serde(default)]
    pub pool: Option<String>,
    /// Owning tenant (admins only; a customer's VMs go to its tenant).
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// A power action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmAction {
    Start,
    Stop,
    Reboot,
    ForceStop,
}

/// A request to run a power action.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    pub action: VmAction,
}

/// A request to change a VM: today, its plan (resize).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateVmRequest {
    /// Plan id or name to resize to; the disk grows, never shrinks.
    pub plan: Option<String>,
}

/// A guest port reachable from the host.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ForwardView {
    pub guest_port: u16,
    pub host_address: String,
    pub host_port: u16,
}

/// A VM as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VmView {
    pub id: String,
    pub name: String,
    pub tenant_id: String,
    pub state: VmState,
    /// Host id.
    pub host: String,
    pub host_name: String,
    /// Plan id the VM was made or last resized with.
    pub plan: String,
    /// Image id.
    pub image: String,
    pub image_name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub ssh_keys: Vec<String>,
    pub forwards: Vec<ForwardView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An operation as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OperationView {
    pub id: String,
    pub kind: String,
    /// Kind of object acted on, e.g. `vm`.
    pub target_type: String,
    /// Id of the object acted on.
    pub target: String,
    pub tenant_id: String,
    /// `pending`, `running`, `succeeded` or `failed`.
    pub state: String,
    pub steps: Vec<Step>,
    /// What went wrong, for a failed operation: the detail for admins; for customers a plain
    /// message with a reference (the operation id) their provider can look up.
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl OperationView {
    /// The view as `actor` may see it: host paths and tool output stay with admins.
    pub fn for_viewer(mut self, actor: &Principal) -> Self {
        if !actor.is_admin() && self.error.is_some() {
            self.error = Some(format!(
                "the {} operation failed on the host; try again, or quote reference {} to your provider",
                self.kind, self.id
            ));
        }
        self
    }
}

impl From<&OperationRow> for OperationView {
    fn from(o: &OperationRow) -> Self {
        Self {
            id: o.id.to_string(),
            kind: o.kind.clone(),
            target_type: o.target_type.clone(),
            target: o.target_id.clone(),
            tenant_id: o.tenant_id.to_string(),
            state: o.state.clone(),
            steps: o.steps(),
            error: o.error.clone(),
            created_at: o.created_at,
            started_at: o.started_at,
            finished_at: o.finished_at,
        }
    }
}

/// Names of hosts and images, for views.
struct Names {
    hosts: HashMap<String, String>,
    images: HashMap<String, String>,
}

impl Names {
    async fn load(p: &Provisioner) -> Result<Self, AppError> {
        let hosts = db::hosts::list(&p.db).await?;
        let images = db::images::list(&p.db).await?;
        Ok(Self {
            hosts: hosts
                .into_iter()
                .map(|h| (h.id.to_string(), h.name))
                .collect(),
            images: images
                .into_iter()
                .map(|i| (i.id.to_string(), i.name))
                .collect(),
        })
    }

    fn view(&self, p: &Provisioner, vm: &VmRow, forwards: &[Forward]) -> VmView {
        let address = p.settings.network.forward_address.to_string();
        VmView {
            id: vm.id.to_string(),
            name: vm.name.clone(),
            tenant_id: vm.tenant_id.to_string(),
            state: VmState::parse(&vm.state).unwrap_or(VmState::Missing),
            host: vm.host_id.to_string(),
            host_name: self
                .hosts
                .get(vm.host_id.as_str())
                .cloned()
                .unwrap_or_default(),
            plan: vm.plan_id.clone(),
            image: vm.image_id.to_string(),
            image_name: self
                .images
                .get(vm.image_id.as_str())
                .cloned()
                .unwrap_or_default(),
            vcpus: vm.vcpus as u32,
            memory_mib: vm.memory_mib as u64,
            disk_gib: vm.disk_gib as u64,
            ssh_keys: vm.ssh_keys(),
            forwards: forwards
                .iter()
                .map(|f| ForwardView {
                    guest_port: f.guest_port as u16,
                    host_address: address.clone(),
                    host_port: f.host_port as u16,
                })
                .collect(),
            created_at: vm.created_at,
            updated_at: vm.updated_at,
        }
    }
}

/// The VM with this id if the actor may see it; otherwise (or if the id is malformed) 404.
async fn load(p: &Provisioner, scope: &Scope, id: &str) -> Result<VmRow, AppError> {
    let vm_id = VmId::parse(id).ok_or_else(|| AppError::not_found("vm", id))?;
    db::vms::get(&p.db, scope, &vm_id)
        .await?
        .ok_or_else(|| AppError::not_found("vm", id))
}

/// One VM's view.
pub async fn get(p: &Provisioner, actor: &Principal, id: &str) -> Result<VmView, AppError> {
    let vm = load(p, &actor.scope(), id).await?;
    let forwards = db::ports::for_vm(&p.db, &vm.id).await?;
    Ok(Names::load(p).await?.view(p, &vm, &forwards))
}

/// Every VM the actor may see, newest first.
pub async fn list(
    p: &Provisioner,
    actor: &Principal,
    page: &PageRequest,
) -> Result<Page<VmView>, AppError> {
    let vms = db::vms::page(&p.db, &actor.scope(), page).await?;
    let ids: Vec<VmId> = vms.items.iter().map(|v| v.id.clone()).collect();
    let mut forwards: HashMap<VmId, Vec<Forward>> = HashMap::new();
    for (vm, guest_port, host_port) in db::ports::for_vms(&p.db, &ids).await? {
        forwards.entry(vm).or_default().push(Forward {
            guest_port,
            host_port,
        });
    }
    let names = Names::load(p).await?;
    Ok(vms.map(|vm| {
        names.view(
            p,
            &vm,
            forwards.get(&vm.id).map(Vec::as_slice).unwrap_or(&[]),
        )
    }))
}

/// Most rendered lists kept; past it the cache starts over.
const LIST_CACHE_ENTRIES: usize = 4096;

/// A rendered page of the VM list and the cursor of the next.
type RenderedPage = (axum::body::Bytes, Option<String>);

/// Rendered VM list pages by scope and page, each tagged with the view version it was
/// rendered at. An entry is used only when the version the caller's credentials were read
/// with (from the database, in the same query) is the same, so a change made by any process
/// is seen at once.
#[derive(Default)]
pub struct ListCache {
    entries: std::sync::Mutex<HashMap<String, (i64, RenderedPage)>>,
}

impl ListCache {
    fn get(&self, key: &str, version: i64) -> Option<RenderedPage> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(v, _)| *v == version)
            .map(|(_, page)| page.clone())
    }

    fn put(&self, key: String, version: i64, page: RenderedPage) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= LIST_CACHE_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (version, page));
    }
}

/// One page of the VMs the actor may see, as the JSON the API answers with, and the next
/// cursor; served from the cache when nothing the actor may see has changed since it was
/// rendered.
pub async fn list_json(
    p: &Provisioner,
    actor: &Principal,
    page: &PageRequest,
) -> Result<RenderedPage, AppError> {
    let scope = match actor.scope() {
        Scope::All => "*".to_string(),
        Scope::Tenant(t) => t.to_string(),
    };
    let key = format!("{scope}|{}|{:?}", page.limit, page.after);
    if let Some(version) = actor.view_version
        && let Some(hit) = p.list_cache.get(&key, version)
    {
        return Ok(hit);
    }
    let views = list(p, actor, page).await?;
    let body =
        axum::body::Bytes::from(serde_json::to_vec(&views.items).map_err(anyhow::Error::from)?);
    let rendered = (body, views.next);
    if let Some(version) = actor.view_version {
        p.list_cache.put(key, version, rendered.clone());
    }
    Ok(rendered)
}

/// Checked fields of a create request.
struct CheckedCreate {
    name: VmName,
    ssh_keys: Vec<String>,
    user_data: Option<String>,
    ports: Vec<u16>,
}

/// Checks every field that needs no database, collecting all the problems at once.
fn check_create_fields(p: &Provisioner, req: &CreateVmRequest) -> Result<CheckedCreate, AppError> {
    let mut errors: Vec<Invalid> = Vec::new();
    let name = VmName::parse(&req.name).map_err(|e| errors.push(e)).ok();
    if req.ssh_keys.len() > ssh::MAX_KEYS {
        errors.push(Invalid::new(
            "ssh_keys",
            format!("at most {} keys", ssh::MAX_KEYS),
        ));
    }
    let ssh_keys: Vec<String> = req
        .ssh_keys
        .iter()
        .filter_map(|k| SshPublicKey::parse(k).map_err(|e| errors.push(e)).ok())
        .map(|k| k.as_str().to_string())
        .collect();
    if let Some(ud) = &req.user_data {
        if ud.len() > MAX_USER_DATA {
            errors.push(Invalid::new(
                "user_data",
                format!(
                    "is {} bytes; at most {MAX_USER_DATA} are accepted",
                    ud.len()
                ),
            ));
        }
        if ud.contains('\0') {
            errors.push(Invalid::new("user_data", "may not contain NUL characters"));
        }
    }
    let mut ports = Vec::new();
    let mut seen = BTreeSet::new();
    for &port in &req.ports {
        match u16::try_from(port) {
            Ok(p) if p > 0 && seen.insert(p) => ports.push(p),
            Ok(p) if p > 0 => {
                errors.push(Invalid::new("ports", format!("port {p} is listed twice")))
            }
            _ => errors.push(Invalid::new(
                "ports",
                format!("{port} is not a TCP port: use 1 to 65535"),
            )),
        }
    }
    if req.ports.len() > MAX_PORTS {
        errors.push(Invalid::new(
            "ports",
            format!("at most {MAX_PORTS} ports may be forwarded"),
        ));
    }
    if !req.ports.is_empty() && p.settings.network.mode == crate::config::NetworkMode::Bridge {
        errors.push(Invalid::new(
            "ports",
            "port forwards exist only in network mode \"user\"; bridged guests are reachable directly",
        ));
    }
    if req.pool.is_some() {
        errors.push(Invalid::new(
            "pool",
            "load-balanced pools are not available on this carve yet; leave pool out",
        ));
    }
    match name {
        Some(name) if errors.is_empty() => Ok(CheckedCreate {
            name,
            ssh_keys,
            user_data: req.user_data.clone().filter(|s| !s.is_empty()),
            ports,
        }),
        _ => Err(AppError::Invalid(errors)),
    }
}

/// The tenant a new VM belongs to: the customer's own, or for admins the one named (or the
/// default tenant).
async fn owning_tenant(
    p: &Provisioner,
    actor: &Principal,
    requested: Option<&str>,
) -> Result<TenantId, AppError> {
    if !actor.is_admin() {
        if requested.is_some() {
            return Err(AppError::invalid(
                "tenant_id",
                "only admins choose the tenant; leave tenant_id out",
            ));
        }
        return actor
            .tenant_id
            .clone()
            .ok_or_else(|| AppError::Forbidden("your account has no tenant".into()));
    }
    let Some(raw) = requested else {
        return Ok(TenantId::default_tenant());
    };
    let unknown = || AppError::invalid("tenant_id", format!("no tenant has id {raw:?}"));
    let id = TenantId::parse(raw).ok_or_else(unknown)?;
    let tenant = db::tenants::get(&p.db, &id).await?.ok_or_else(unknown)?;
    if tenant.suspended {
        return Err(AppError::Conflict(format!(
            "tenant {id} is suspended; reinstate it before creating VMs"
        )));
    }
    Ok(id)
}

/// Picks the host with the most free memory that fits `need`, inside the write transaction;
/// if none fits, the shortfall of the roomiest host.
async fn place(tx: &mut WriteTx, need: Resources) -> Result<HostId, AppError> {
    let hosts = db::hosts::list(&mut **tx).await?;
    let mut best: Option<(u64, HostId)> = None;
    let mut short: Option<Shortfall> = None;
    for host in hosts {
        let total = capacity::sellable(host.physical(), host.overcommit());
        let used = db::hosts::allocated(tx, &host.id).await?;
        match capacity::check_fits(&host.name, total, used, need) {
            Ok(()) => {
                let free = total.memory_mib.saturating_sub(used.memory_mib);
                if best.as_ref().is_none_or(|(f, _)| free > *f) {
                    best = Some((free, host.id));
                }
            }
            Err(e) => short = Some(e),
        }
    }
    match (best, short) {
        (Some((_, id)), _) => Ok(id),
        (None, Some(e)) => Err(e.into()),
        (None, None) => Err(AppError::Conflict(
            "no host is registered; start carve serve against libvirt first".into(),
        )),
    }
}

/// Creates a VM: answers at once with the VM (state `creating`) and its operation.
pub async fn create(
    p: &Arc<Provisioner>,
    actor: &Principal,
    req: CreateVmRequest,
) -> Result<(VmView, OperationView), AppError> {
    let checked = check_create_fields(p, &req)?;
    let tenant = owning_tenant(p, actor, req.tenant_id.as_deref()).await?;
    let plan = db::plans::find(&p.db, &req.plan).await?.ok_or_else(|| {
        AppError::invalid(
            "plan",
            format!(
                "no plan is named {:?}; GET /api/v1/plans lists them",
                req.plan
            ),
        )
    })?;
    let image = db::images::find(&p.db, &req.image)
        .await?
        .filter(|i| i.available)
        .ok_or_else(|| {
            AppError::invalid(
                "image",
                format!(
                    "no image is named {:?}; GET /api/v1/images lists them",
                    req.image
                ),
            )
        })?;
    let need = plan.resources();
    let image_gib = (image.virtual_size_bytes as u64).div_ceil(1 << 30);
    if need.disk_gib < image_gib {
        return Err(AppError::invalid(
            "plan",
            format!(
                "plan {} has a {} GiB disk but image {} needs {image_gib} GiB",
                plan.name, need.disk_gib, image.name
            ),
        ));
    }
    if (need.memory_mib as i64) < image.min_memory_mib {
        return Err(AppError::invalid(
            "plan",
            format!(
                "plan {} has {} MiB of memory but image {} needs {} MiB",
                plan.name, need.memory_mib, image.name, image.min_memory_mib
            ),
        ));
    }

    let vm_id = VmId::generate();
    let domain_name = format!("carve-{vm_id}");
    let mut tx = db::begin_write(&p.db).await?;
    let wanted = Usage {
        vms: 1,
        vcpus: i64::from(need.vcpus),
        memory_mib: need.memory_mib as i64,
        disk_gib: need.disk_gib as i64,
        ..Usage::default()
    };
    check_quota(&mut tx, &p.settings.default_quota, &tenant, wanted).await?;
    let host_id = place(&mut tx, need).await?;
    let inserted = db::vms::insert(
        &mut tx,
        NewVm {
            id: &vm_id,
            tenant_id: &tenant,
            name: checked.name.as_str(),
            host_id: &host_id,
            plan_id: &plan.id,
            image_id: &image.id,
            resources: need,
            ssh_keys: &checked.ssh_keys,
            user_data: checked.user_data.as_deref(),
            domain_name: &domain_name,
        },
    )
    .await;
    if let Err(e) = inserted {
        return Err(if db::is_unique_violation(&e) {
            AppError::Conflict(format!(
                "a VM named {} already exists in this tenant; choose another name or delete it first",
                checked.name
            ))
        } else {
            e.into()
        });
    }
    let address = p.settings.network.forward_address;
    db::ports::allocate(
        &mut tx,
        &host_id,
        &vm_id,
        &checked.ports,
        p.settings.network.forward_ports,
        address,
    )
    .await
    .map_err(|e| match e {
        AllocateError::Exhausted(_) => AppError::Conflict(e.to_string()),
        AllocateError::Db(e) => e.into(),
    })?;
    let op = db::operations::insert(
        &mut tx,
        &tenant,
        OpKind::Create.as_str(),
        "vm",
        vm_id.as_str(),
        &serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(vm = %vm_id, name = %checked.name, tenant = %tenant, plan = %plan.name, image = %image.name, "VM admitted");
    p.spawn_operation(op.id.clone(), None);
    let view = get(p, actor, vm_id.as_str()).await?;
    Ok((view, OperationView::from(&op)))
}

/// The live power state libvirt reports for a VM (None: no such domain).
async fn power_state(p: &Provisioner, vm: &VmRow) -> Result<Option<PowerState>, AppError> {
    let name = vm.domain_name.clone();
    Ok(p.hv.call(move |h| h.state(&name)).await?)
}

/// Records an operation on `vm` and sets its transitional state in one transaction; 409 if
/// another operation on it is unfinished.
pub(crate) async fn begin_operation(
    p: &Arc<Provisioner>,
    vm: &VmRow,
    kind: OpKind,
    state: VmState,
    params: serde_json::Value,
    reserve: Option<(&str, Resources)>,
) -> Result<OperationView, AppError> {
    let mut tx = db::begin_write(&p.db).await?;
    if let Some((plan_id, to)) = reserve {
        let from = vm.resources();
        let growth = Usage {
            vcpus: i64::from(to.vcpus) - i64::from(from.vcpus),
            memory_mib: to.memory_mib as i64 - from.memory_mib as i64,
            disk_gib: to.disk_gib as i64 - from.disk_gib as i64,
            ..Usage::default()
        };
        check_quota(&mut tx, &p.settings.default_quota, &vm.tenant_id, growth).await?;
        reserve_growth(&mut tx, vm, to).await?;
        db::vms::set_resources(&mut tx, &vm.id, plan_id, to).await?;
    }
    let op = db::operations::insert(
        &mut tx,
        &vm.tenant_id,
        kind.as_str(),
        "vm",
        vm.id.as_str(),
        &params,
    )
    .await;
    let op = match op {
        Ok(op) => op,
        Err(e) if db::is_unique_violation(&e) => {
            drop(tx);
            let busy = db::operations::list(&p.db, &Scope::All, Some(vm.id.as_str()), 1).await?;
            let what = busy
                .first()
                .map(|o| format!("operation {} ({})", o.id, o.kind))
                .unwrap_or_else(|| "another operation".into());
            return Err(AppError::Conflict(format!(
                "VM {} is busy with {what}; wait until it finishes (GET /api/v1/operations/{{id}}) and retry",
                vm.id
            )));
        }
        Err(e) => return Err(e.into()),
    };
    db::vms::set_state(&mut *tx, &vm.id, state.as_str()).await?;
    tx.commit().await?;
    tracing::info!(vm = %vm.id, op = %op.id, kind = kind.as_str(), "operation admitted");
    p.spawn_operation(op.id.clone(), None);
    Ok(OperationView::from(&op))
}

/// Starts, stops, reboots or powers off a VM.
pub async fn act(
    p: &Arc<Provisioner>,
    actor: &Principal,
    id: &str,
    action: VmAction,
) -> Result<OperationView, AppError> {
    let vm = load(p, &actor.scope(), id).await?;
    if matches!(
        VmState::parse(&vm.state),
        Some(VmState::Creating | VmState::Deleting)
    ) {
        return Err(AppError::Conflict(format!(
            "VM {} is {}; wait until that finishes",
            vm.id, vm.state
        )));
    }
    let live = power_state(p, &vm).await?;
    let active = live.is_some_and(PowerState::is_active);
    let (kind, state) = match action {
        VmAction::Start if active => {
            return Err(AppError::Conflict(format!(
                "VM {} is already running",
                vm.id
            )));
        }
        VmAction::Start => (OpKind::Start, VmState::Starting),
        VmAction::Stop | VmAction::ForceStop if !active => {
            return Err(AppError::Conflict(format!(
                "VM {} is already stopped",
                vm.id
            )));
        }
        VmAction::Stop => (OpKind::Stop, VmState::Stopping),
        VmAction::ForceStop => (OpKind::ForceStop, VmState::Stopping),
        VmAction::Reboot if live != Some(PowerState::Running) => {
            return Err(AppError::Conflict(format!(
                "VM {} is not running; start it instead",
                vm.id
            )));
        }
        VmAction::Reboot => (OpKind::Reboot, VmState::Rebooting),
    };
    begin_operation(p, &vm, kind, state, serde_json::json!({}), None).await
}

/// The sizes a resize moves between, kept in the operation so a failure can undo it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResizeParams {
    pub from_plan: String,
    pub from: Resources,
    pub to_plan: String,
    pub to: Resources,
    /// Whether the VM was running when the resize was asked for (it is started again).
    pub was_running: bool,
}

/// Resizes a VM to another plan: vCPUs and memory change, the disk grows (never shrinks).
/// A running VM is shut down, resized and started again.
pub async fn update(
    p: &Arc<Provisioner>,
    actor: &Principal,
    id: &str,
    req: UpdateVmRequest,
) -> Result<OperationView, AppError> {
    let vm = load(p, &actor.scope(), id).await?;
    let Some(plan_ref) = req.plan else {
        return Err(AppError::invalid(
            "plan",
            "nothing to change: send the plan to resize to",
        ));
    };
    let plan = db::plans::find(&p.db, &plan_ref).await?.ok_or_else(|| {
        AppError::invalid(
            "plan",
            format!("no plan is named {plan_ref:?}; GET /api/v1/plans lists them"),
        )
    })?;
    let from = vm.resources();
    let to = plan.resources();
    if to == from {
        return Err(AppError::invalid(
            "plan",
            format!("VM {} already has plan {}'s size", vm.id, plan.name),
        ));
    }
    if to.disk_gib < from.disk_gib {
        return Err(AppError::invalid(
            "plan",
            format!(
                "plan {} has a {} GiB disk, smaller than this VM's {} GiB; disks never shrink, so choose a plan with disk_gib >= {}",
                plan.name, to.disk_gib, from.disk_gib, from.disk_gib
            ),
        ));
    }
    if matches!(
        VmState::parse(&vm.state),
        Some(VmState::Creating | VmState::Deleting)
    ) {
        return Err(AppError::Conflict(format!(
            "VM {} is {}; wait until that finishes",
            vm.id, vm.state
        )));
    }
    let was_running = power_state(p, &vm)
        .await?
        .is_some_and(PowerState::is_active);
    let params = ResizeParams {
        from_plan: vm.plan_id.clone(),
        from,
        to_plan: plan.id.to_string(),
        to,
        was_running,
    };
    let params = serde_json::to_value(&params).map_err(anyhow::Error::from)?;
    begin_operation(
        p,
        &vm,
        OpKind::Resize,
        VmState::Resizing,
        params,
        Some((plan.id.as_str(), to)),
    )
    .await
}

/// Checks, under the write lock, that the VM's host can hold it at size `to` beside the other
/// VMs there.
async fn reserve_growth(tx: &mut WriteTx, vm: &VmRow, to: Resources) -> Result<(), AppError> {
    let host = db::hosts::list(&mut **tx)
        .await?
        .into_iter()
        .find(|h| h.id == vm.host_id);
    let Some(host) = host else {
        return Err(AppError::Conflict(format!(
            "the host of VM {} is not registered",
            vm.id
        )));
    };
    let used = db::hosts::allocated(tx, &host.id).await?;
    let from = vm.resources();
    let others = Resources {
        vcpus: used.vcpus.saturating_sub(from.vcpus),
        memory_mib: used.memory_mib.saturating_sub(from.memory_mib),
        disk_gib: used.disk_gib.saturating_sub(from.disk_gib),
    };
    capacity::check_fits(
        &host.name,
        capacity::sellable(host.physical(), host.overcommit()),
        others,
        to,
    )?;
    Ok(())
}

/// Deletes a VM: its domain, disk, seed and port reservations.
pub async fn delete(
    p: &Arc<Provisioner>,
    actor: &Principal,
    id: &str,
) -> Result<OperationView, AppError> {
    let vm = load(p, &actor.scope(), id).await?;
    begin_operation(
        p,
        &vm,
        OpKind::Delete,
        VmState::Deleting,
        serde_json::json!({}),
        None,
    )
    .await
}

/// The end of a VM's serial console output, at most `max_bytes`.
pub async fn console(
    p: &Provisioner,
    actor: &Principal,
    id: &str,
    max_bytes: u64,
) -> Result<String, AppError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let vm = load(p, &actor.scope(), id).await?;
    let files = VmFiles::new(&p.settings.vm_root, &vm.id);
    let mut file = match tokio::fs::File::open(&files.console).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context("reading the console log")
                .into());
        }
    };
    let len = file.metadata().await.map_err(anyhow::Error::from)?.len();
    let start = len.saturating_sub(max_bytes);
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(anyhow::Error::from)?;
    let mut bytes = Vec::with_capacity((len - start) as usize);
    file.read_to_end(&mut bytes)
        .await
        .map_err(anyhow::Error::from)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

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

/// One page of the operations the actor may see, newest first, optionally only those on one
/// target.
pub async fn operations(
    p: &Provisioner,
    actor: &Principal,
    target: Option<&str>,
    page: &PageRequest,
) -> Result<Page<OperationView>, AppError> {
    Ok(db::operations::page(&p.db, &actor.scope(), target, page)
        .await?
        .map(|o| OperationView::from(&o).for_viewer(actor)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use crate::domain::ids::UserId;

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
            kind: "create".into(),
            target_type: "vm".into(),
            target: "vm_0123456789abcdef".into(),
            tenant_id: TenantId::default_tenant().to_string(),
            state: "failed".into(),
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
