//! The interactive console of a VM: one-time tickets minted by an authenticated request, and
//! attaching to the VM's serial console through its pty on this host, shared by its viewers
//! with one writer at a time. The browser never learns the host or the libvirt URI.

pub mod hub;
pub mod pty;
pub mod tickets;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::auth::Principal;
use crate::domain::ids::{TenantId, UserId, VmId};
use crate::error::AppError;
use crate::provision::Provisioner;
use hub::{Hub, Viewer};
use tickets::{TICKET_TTL, Ticket, Tickets};

/// Bytes of the console log a new viewer gets first, so the screen is not blank.
const TAIL_BYTES: u64 = 4096;

/// The consoles this process serves.
pub struct Consoles {
    tickets: Tickets,
    hubs: Mutex<HashMap<VmId, Weak<Hub>>>,
    /// A console nobody types into for this long is closed.
    pub idle: Duration,
    max_viewers: usize,
    max_per_user: usize,
    viewers: Arc<AtomicUsize>,
    per_user: Arc<Mutex<HashMap<UserId, usize>>>,
}

/// A ticket just minted.
#[derive(Debug)]
pub struct Minted {
    pub ticket: String,
    pub expires_at: DateTime<Utc>,
    pub vm_id: VmId,
}

/// What attaching found.
pub enum Attach {
    /// The VM runs: its console, live.
    Live(Attached),
    /// The VM does not run: only the end of its log.
    Stopped {
        tail: Vec<u8>,
        principal: Principal,
        tenant_id: TenantId,
    },
}

/// A viewer attached to a live console.
pub struct Attached {
    pub viewer: Viewer,
    /// The end of the console log, to show first.
    pub tail: Vec<u8>,
    /// Who minted the ticket.
    pub principal: Principal,
    /// The VM's tenant (its audit entries go there, also when an admin looks).
    pub tenant_id: TenantId,
    _slot: Slot,
}

/// One viewer counted against the bounds (all, and its user's) until dropped.
struct Slot {
    open: Arc<AtomicUsize>,
    per_user: Arc<Mutex<HashMap<UserId, usize>>>,
    user: UserId,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        let mut per_user = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                per_user.remove(&self.user);
            }
        }
    }
}

impl Consoles {
    /// Consoles closed after `idle` without typing, at most `max_viewers` open at once and
    /// `max_per_user` per user.
    pub fn new(idle: Duration, max_viewers: usize, max_per_user: usize) -> Self {
        Self {
            tickets: Tickets::default(),
            hubs: Mutex::new(HashMap::new()),
            idle,
            max_viewers,
            max_per_user,
            viewers: Arc::new(AtomicUsize::new(0)),
            per_user: Default::default(),
        }
    }

    /// A one-time ticket for `actor` to open the console of VM `id` (another tenant's VM is
    /// not found); `write`: to type, taking over from whoever types now.
    pub async fn mint(
        &self,
        p: &Provisioner,
        actor: &Principal,
        id: &str,
        write: bool,
    ) -> Result<Minted, AppError> {
        let vm = crate::provision::vms::load(p, &actor.scope(), id).await?;
        let ticket = self
            .tickets
            .mint(Ticket {
                vm_id: vm.id.clone(),
                principal: actor.clone(),
                write,
            })
            .ok_or_else(|| AppError::TooManyRequests {
                detail: "too many console tickets are outstanding; retry in a few seconds".into(),
                retry_after_secs: TICKET_TTL.as_secs(),
            })?;
        Ok(Minted {
            ticket,
            expires_at: Utc::now() + TICKET_TTL,
            vm_id: vm.id,
        })
    }

    /// Redeems `ticket` and attaches to VM `id`'s console.
    pub async fn attach(
        &self,
        p: &Provisioner,
        id: &str,
        ticket: &str,
    ) -> Result<Attach, AppError> {
        let refused = || {
            AppError::Forbidden(format!(
                "this console ticket is unknown, used or expired; mint a new one with POST /api/v1/vms/{id}/console/tickets and connect within {} s",
                TICKET_TTL.as_secs()
            ))
        };
        let vm_id = VmId::parse(id).ok_or_else(refused)?;
        let ticket = self.tickets.redeem(ticket, &vm_id).ok_or_else(refused)?;
        // Still the principal's to see (a VM deleted or moved since is not found).
        let vm = crate::provision::vms::load(p, &ticket.principal.scope(), id).await?;
        let host = p.host(&vm.host_id).await?;
        if host.row.libvirt_uri != p.settings.libvirt_uri {
            return Err(AppError::Conflict(format!(
                "the interactive console reaches VMs on the machine carve runs on, and this VM runs on host {}; its console log (GET /api/v1/vms/{id}/console) works wherever it runs",
                host.row.name
            )));
        }
        let tail = host
            .store
            .read_console(&vm.id, None, TAIL_BYTES)
            .await
            .map(|(_, _, bytes)| bytes)
            .unwrap_or_default();
        let slot = self.take_slot(&ticket.principal)?;
        let hub = match self.live_hub(&vm.id) {
            Some(hub) => hub,
            None => {
                let domain = vm.domain_name.clone();
                let Some(path) = host.hv.call(move |h| h.serial_pty(&domain)).await? else {
                    return Ok(Attach::Stopped {
                        tail,
                        principal: ticket.principal,
                        tenant_id: vm.tenant_id,
                    });
                };
                let pty = pty::Pty::open(&path).map_err(|e| {
                    AppError::Internal(anyhow::Error::new(e).context("opening the VM's console"))
                })?;
                // The pty is still this VM's: had it stopped between the look-up and the open,
                // another VM could have been given the same /dev/pts number.
                let domain = vm.domain_name.clone();
                if host
                    .hv
                    .call(move |h| h.serial_pty(&domain))
                    .await?
                    .as_deref()
                    != Some(path.as_str())
                {
                    return Ok(Attach::Stopped {
                        tail,
                        principal: ticket.principal,
                        tenant_id: vm.tenant_id,
                    });
                }
                let mut hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
                // Another viewer may have opened it meanwhile: one hub per VM.
                match hubs
                    .get(&vm.id)
                    .and_then(Weak::upgrade)
                    .filter(|h| h.ended().is_none())
                {
                    Some(hub) => hub,
                    None => {
                        let hub = Hub::start(pty);
                        hubs.retain(|_, h| h.strong_count() > 0);
                        hubs.insert(vm.id.clone(), Arc::downgrade(&hub));
                        hub
                    }
                }
            }
        };
        Ok(Attach::Live(Attached {
            viewer: hub.join(ticket.write),
            tail,
            principal: ticket.principal,
            tenant_id: vm.tenant_id,
            _slot: slot,
        }))
    }

    /// The VM's console if viewers hold it open and the VM has not stopped since.
    fn live_hub(&self, vm: &VmId) -> Option<Arc<Hub>> {
        let hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
        hubs.get(vm)
            .and_then(Weak::upgrade)
            .filter(|h| h.ended().is_none())
    }

    fn take_slot(&self, user: &Principal) -> Result<Slot, AppError> {
        {
            let mut per_user = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
            let mine = per_user.entry(user.user_id.clone()).or_insert(0);
            if *mine >= self.max_per_user {
                return Err(AppError::TooManyRequests {
                    detail: format!(
                        "you have {} consoles open, the most one user may; close one first",
                        self.max_per_user
                    ),
                    retry_after_secs: 10,
                });
            }
            *mine += 1;
        }
        let open = self.viewers.fetch_add(1, Ordering::AcqRel);
        let slot = Slot {
            open: self.viewers.clone(),
            per_user: self.per_user.clone(),
            user: user.user_id.clone(),
        };
        if open >= self.max_viewers {
            return Err(AppError::TooManyRequests {
                detail: format!(
                    "{} consoles are open, the most this server allows; close one or retry later",
                    self.max_viewers
                ),
                retry_after_secs: 10,
            });
        }
        Ok(slot)
    }
}
