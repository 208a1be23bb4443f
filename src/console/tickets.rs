//! One-time console tickets: minted by an authenticated request for one VM and redeemed once
//! by the WebSocket within 30 s, so that no token ever sits in a URL for long. Only hashes of
//! tickets are kept, in memory, and their number is bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::auth::Principal;
use crate::domain::ids::VmId;

/// How long a ticket may wait to be used.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Most tickets outstanding at once (expired ones are swept first), and per user.
const MAX_OUTSTANDING: usize = 10_000;
const MAX_PER_USER: usize = 32;

/// What a ticket lets its bearer do.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub vm_id: VmId,
    /// Who minted it (the console acts as them).
    pub principal: Principal,
    /// Whether it may type (take over as the writer) or only watch.
    pub write: bool,
}

/// The tickets outstanding.
#[derive(Default)]
pub struct Tickets {
    outstanding: Mutex<HashMap<[u8; 32], (Ticket, Instant)>>,
}

impl Tickets {
    /// A new ticket for `ticket`; `None` when too many are outstanding.
    pub fn mint(&self, ticket: Ticket) -> Option<String> {
        let token = {
            use base64::Engine;
            use rand::RngCore;
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            format!(
                "ct_{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
            )
        };
        let mut map = self.lock();
        let now = Instant::now();
        let user = &ticket.principal.user_id;
        let mine = |map: &HashMap<[u8; 32], (Ticket, Instant)>| {
            map.values()
                .filter(|(t, expires)| &t.principal.user_id == user && *expires > now)
                .count()
        };
        if map.len() >= MAX_OUTSTANDING || mine(&map) >= MAX_PER_USER {
            map.retain(|_, (_, expires)| *expires > now);
            if map.len() >= MAX_OUTSTANDING || mine(&map) >= MAX_PER_USER {
                return None;
            }
        }
        map.insert(digest(&token), (ticket, Instant::now() + TICKET_TTL));
        Some(token)
    }

    /// The ticket `token` names for `vm`, used up now; `None` if unknown, used, expired or
    /// for another VM.
    pub fn redeem(&self, token: &str, vm: &VmId) -> Option<Ticket> {
        let (ticket, expires) = self.lock().remove(&digest(token))?;
        (expires > Instant::now() && &ticket.vm_id == vm).then_some(ticket)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Ticket, Instant)>> {
        self.outstanding.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::UserId;
    use crate::domain::role::Role;

    fn ticket(vm: &str) -> Ticket {
        Ticket {
            vm_id: VmId::parse(vm).unwrap(),
            principal: Principal {
                user_id: UserId::generate(),
                email: "admin@example.test".into(),
                role: Role::Admin,
                tenant_id: None,
                view_version: None,
            },
            write: true,
        }
    }

    #[test]
    fn a_ticket_works_once_and_only_for_its_vm() {
        let t = Tickets::default();
        let vm = "vm_0123456789abcdef";
        let token = t.mint(ticket(vm)).unwrap();
        assert!(
            t.redeem(&token, &VmId::parse("vm_0123456789abcdee").unwrap())
                .is_none()
        );
        let token = t.mint(ticket(vm)).unwrap();
        assert!(t.redeem(&token, &VmId::parse(vm).unwrap()).is_some());
        assert!(
            t.redeem(&token, &VmId::parse(vm).unwrap()).is_none(),
            "used up"
        );
        assert!(t.redeem("ct_forged", &VmId::parse(vm).unwrap()).is_none());
    }
}
