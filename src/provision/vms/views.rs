//! What clients send and see: requests, VM and operation views, and the names they show.

use super::*;

/// Largest user-data accepted, in bytes.
pub const MAX_USER_DATA: usize = 64 * 1024;
/// Most guest ports one VM may forward.
pub const MAX_PORTS: usize = 16;

/// A request to create a VM.
#[derive(Debug, Clone)]
pub struct CreateVm {
    /// The VM's name: a DNS label (lowercase letters, digits, '-'), unique in the tenant.
    pub name: String,
    /// Plan id or name.
    pub plan: String,
    /// Image id or name.
    pub image: String,
    /// OpenSSH public keys for the guest.
    pub ssh_keys: Vec<String>,
    /// cloud-init user-data; a script starting with `#!` runs at first boot.
    pub user_data: Option<String>,
    /// Root's password for the serial console (10 to 1024 characters); only a SHA-512
    /// crypt hash of it reaches the guest, and carve keeps neither.
    pub root_password: Option<crate::domain::secret::Secret>,
    /// Guest TCP ports to forward from the host (network mode `user`).
    pub ports: Vec<i64>,
    /// Load-balanced pool (id or name) to join once healthy.
    pub pool: Option<String>,
    /// The guest port the pool sends traffic to (needed when `ports` has several).
    pub pool_port: Option<u16>,
    /// Owning tenant (admins only; a customer's VMs go to its tenant).
    pub tenant_id: Option<String>,
    /// Labels the VM's host must have (e.g. `ssd`, `zone=a`).
    pub host_labels: Vec<String>,
}

/// A power action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmAction {
    Start,
    Stop,
    Reboot,
    ForceStop,
    /// Sets root's password (needs `root_password`); a running VM reboots to take it.
    ResetPassword,
    /// Replaces the disk with a fresh one of `image` (optionally with a new `root_password`);
    /// id, plan, forwards and pools stay.
    Reinstall,
}

/// A request to change a VM: today, its plan (resize).
#[derive(Debug, Clone)]
pub struct UpdateVm {
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
    /// What the guest's agent last reported (images with the QEMU guest agent; in the view
    /// of one VM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The guest's own view of itself, from its agent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GuestView {
    pub hostname: Option<String>,
    /// Its addresses with prefix length, e.g. `10.0.2.15/24`.
    pub addresses: Vec<String>,
    /// When the agent said so.
    pub at: DateTime<Utc>,
}

/// An operation as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OperationView {
    pub id: String,
    pub kind: OpKind,
    /// Kind of object acted on, e.g. `vm`.
    pub target_type: String,
    /// Id of the object acted on.
    pub target: String,
    pub tenant_id: String,
    pub state: OpState,
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
        // A refresh's error is the group's own account (cancelled, group deleted), no host's.
        if !actor.is_admin() && self.error.is_some() && self.kind != OpKind::Refresh {
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
            kind: o.kind,
            target_type: o.target_type.clone(),
            target: o.target_id.clone(),
            tenant_id: o.tenant_id.to_string(),
            state: o.state,
            steps: o.steps(),
            error: o.error.clone(),
            created_at: o.created_at,
            started_at: o.started_at,
            finished_at: o.finished_at,
        }
    }
}

/// Names of hosts and images, and where each host's forwards listen, for views.
pub(crate) struct Names {
    hosts: HashMap<String, String>,
    forward_addresses: HashMap<String, String>,
    images: HashMap<String, String>,
}

impl Names {
    pub(crate) async fn load(p: &Provisioner) -> Result<Self, AppError> {
        let hosts = db::hosts::list(&p.db).await?;
        let images = db::images::list(&p.db).await?;
        Ok(Self {
            forward_addresses: hosts
                .iter()
                .map(|h| (h.id.to_string(), p.settings.forwards_of(h).0.to_string()))
                .collect(),
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

    pub(crate) fn view(&self, p: &Provisioner, vm: &VmRow, forwards: &[Forward]) -> VmView {
        let address = self
            .forward_addresses
            .get(vm.host_id.as_str())
            .cloned()
            .unwrap_or_else(|| p.settings.network.forward_address.to_string());
        VmView {
            id: vm.id.to_string(),
            name: vm.name.clone(),
            tenant_id: vm.tenant_id.to_string(),
            state: vm.state,
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
            guest: None,
            created_at: vm.created_at,
            updated_at: vm.updated_at,
        }
    }
}
