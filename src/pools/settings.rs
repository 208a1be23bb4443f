//! A pool's settings as requested: checked all at once (every problem named), and the listen
//! port chosen from the configured range inside the write transaction.

use std::collections::HashSet;
use std::net::SocketAddr;

use crate::config::LbConfig;
use crate::db::pools::PoolRow;
use crate::db::{self, WriteTx};
use crate::domain::Invalid;
use crate::domain::names::ResourceName;
use crate::domain::pool::{CheckKind, PoolAlgorithm, PoolProtocol};
use crate::error::AppError;

/// Longest health-check path accepted.
pub const MAX_PATH: usize = 256;
/// Longest sticky cookie name accepted.
pub const MAX_COOKIE: usize = 64;
/// Longest drain accepted, in seconds.
pub const MAX_DRAIN_S: u32 = 3600;
/// Longest interval between checks, in seconds.
pub const MAX_INTERVAL_S: u32 = 3600;
/// Longest check timeout, in seconds.
pub const MAX_TIMEOUT_S: u32 = 60;
/// Most consecutive results `rise` and `fall` may ask for.
pub const MAX_RISE_FALL: u32 = 100;

/// A health check as requested; absent fields take defaults (http: `GET /` answering 200,
/// every 2 s, 1 s timeout, rise 2, fall 3).
#[derive(Debug, Clone, Default)]
pub struct HealthCheckInput {
    pub kind: Option<CheckKind>,
    pub path: Option<String>,
    pub expect_status: Option<u16>,
    pub interval_s: Option<u32>,
    pub timeout_s: Option<u32>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
}

/// A request to create a pool.
#[derive(Debug, Clone)]
pub struct CreatePool {
    pub name: String,
    pub protocol: PoolProtocol,
    /// `address:port`; the address must be the configured one. None: a free port is chosen.
    pub listen: Option<String>,
    pub algorithm: Option<PoolAlgorithm>,
    pub health_check: Option<HealthCheckInput>,
    pub drain_timeout_s: Option<u32>,
    pub sticky_cookie: Option<String>,
    pub proxy_protocol: Option<bool>,
    /// Owning tenant (admins only).
    pub tenant_id: Option<String>,
}

/// A change to a pool; absent fields stay. A `health_check` given is taken as a whole.
#[derive(Debug, Clone, Default)]
pub struct UpdatePool {
    pub name: Option<String>,
    pub algorithm: Option<PoolAlgorithm>,
    pub health_check: Option<HealthCheckInput>,
    pub drain_timeout_s: Option<u32>,
    /// `Some(None)`: no sticky cookie any more.
    pub sticky_cookie: Option<Option<String>>,
    pub proxy_protocol: Option<bool>,
}

/// A checked health check.
#[derive(Debug, Clone)]
pub struct CheckedHealth {
    pub kind: CheckKind,
    pub path: Option<String>,
    pub expect_status: Option<u16>,
    pub interval_s: u32,
    pub timeout_s: u32,
    pub rise: u32,
    pub fall: u32,
}

/// Checked settings of a new pool.
pub struct CheckedPool {
    pub name: ResourceName,
    pub algorithm: PoolAlgorithm,
    pub check: CheckedHealth,
    pub drain_timeout_s: u32,
    pub sticky_cookie: Option<String>,
    pub proxy_protocol: bool,
}

/// Checks every field of a create request that needs no database.
pub fn check_create(req: &CreatePool) -> Result<CheckedPool, AppError> {
    let mut errors = Vec::new();
    let name = ResourceName::parse(&req.name, "name")
        .map_err(|e| errors.push(e))
        .ok();
    let check = check_health(
        req.protocol,
        req.health_check.clone().unwrap_or_default(),
        &mut errors,
    );
    let drain_timeout_s = req.drain_timeout_s.unwrap_or(30);
    check_drain(drain_timeout_s, &mut errors);
    let sticky_cookie = check_cookie(req.protocol, req.sticky_cookie.as_deref(), &mut errors);
    let proxy_protocol = req.proxy_protocol.unwrap_or(false);
    check_proxy(req.protocol, proxy_protocol, &mut errors);
    match (name, check) {
        (Some(name), Some(check)) if errors.is_empty() => Ok(CheckedPool {
            name,
            algorithm: req.algorithm.unwrap_or(PoolAlgorithm::RoundRobin),
            check,
            drain_timeout_s,
            sticky_cookie,
            proxy_protocol,
        }),
        _ => Err(AppError::Invalid(errors)),
    }
}

/// Applies a change to a stored pool; returns the (new) name for error messages.
pub fn apply_update(p: &mut PoolRow, req: UpdatePool) -> Result<ResourceName, AppError> {
    let mut errors = Vec::new();
    let name = ResourceName::parse(req.name.as_deref().unwrap_or(&p.name), "name")
        .map_err(|e| errors.push(e))
        .ok();
    if let Some(a) = req.algorithm {
        p.algorithm = a;
    }
    if let Some(h) = req.health_check
        && let Some(c) = check_health(p.protocol, h, &mut errors)
    {
        p.check_kind = c.kind;
        p.check_path = c.path;
        p.check_expect_status = c.expect_status.map(i64::from);
        p.check_interval_s = i64::from(c.interval_s);
        p.check_timeout_s = i64::from(c.timeout_s);
        p.check_rise = i64::from(c.rise);
        p.check_fall = i64::from(c.fall);
    }
    if let Some(d) = req.drain_timeout_s {
        check_drain(d, &mut errors);
        p.drain_timeout_s = i64::from(d);
    }
    if let Some(c) = req.sticky_cookie {
        p.sticky_cookie = check_cookie(p.protocol, c.as_deref(), &mut errors);
    }
    if let Some(v) = req.proxy_protocol {
        check_proxy(p.protocol, v, &mut errors);
        p.proxy_protocol = v;
    }
    match name {
        Some(name) if errors.is_empty() => {
            p.name = name.as_str().to_string();
            Ok(name)
        }
        _ => Err(AppError::Invalid(errors)),
    }
}

/// Checks a health check, filling in defaults.
fn check_health(
    protocol: PoolProtocol,
    h: HealthCheckInput,
    errors: &mut Vec<Invalid>,
) -> Option<CheckedHealth> {
    let before = errors.len();
    let kind = h.kind.unwrap_or(match protocol {
        PoolProtocol::Http => CheckKind::Http,
        PoolProtocol::Tcp => CheckKind::Tcp,
    });
    let (path, expect_status) = match kind {
        CheckKind::Http => {
            let path = h.path.unwrap_or_else(|| "/".into());
            if !path.starts_with('/')
                || path.len() > MAX_PATH
                || path.chars().any(|c| !c.is_ascii_graphic())
            {
                errors.push(Invalid::new(
                    "health_check.path",
                    format!("must start with '/' and be 1 to {MAX_PATH} printable ASCII characters without spaces"),
                ));
            }
            let status = h.expect_status.unwrap_or(200);
            if !(100..=599).contains(&status) {
                errors.push(Invalid::new(
                    "health_check.expect_status",
                    format!("{status} is not an HTTP status: use 100 to 599"),
                ));
            }
            (Some(path), Some(status))
        }
        CheckKind::Tcp => {
            if h.path.is_some() || h.expect_status.is_some() {
                errors.push(Invalid::new(
                    "health_check.path",
                    "a tcp check only connects: leave path and expect_status out, or use kind http",
                ));
            }
            (None, None)
        }
    };
    let interval_s = h.interval_s.unwrap_or(2);
    if !(1..=MAX_INTERVAL_S).contains(&interval_s) {
        errors.push(Invalid::new(
            "health_check.interval_s",
            format!("must be 1 to {MAX_INTERVAL_S} seconds (got {interval_s})"),
        ));
    }
    let timeout_s = h.timeout_s.unwrap_or(1);
    if !(1..=MAX_TIMEOUT_S).contains(&timeout_s) {
        errors.push(Invalid::new(
            "health_check.timeout_s",
            format!("must be 1 to {MAX_TIMEOUT_S} seconds (got {timeout_s})"),
        ));
    }
    let rise = h.rise.unwrap_or(2);
    let fall = h.fall.unwrap_or(3);
    for (field, v) in [("health_check.rise", rise), ("health_check.fall", fall)] {
        if !(1..=MAX_RISE_FALL).contains(&v) {
            errors.push(Invalid::new(
                field,
                format!("must be 1 to {MAX_RISE_FALL} consecutive checks (got {v})"),
            ));
        }
    }
    (errors.len() == before).then_some(CheckedHealth {
        kind,
        path,
        expect_status,
        interval_s,
        timeout_s,
        rise,
        fall,
    })
}

fn check_drain(seconds: u32, errors: &mut Vec<Invalid>) {
    if seconds > MAX_DRAIN_S {
        errors.push(Invalid::new(
            "drain_timeout_s",
            format!("must be 0 to {MAX_DRAIN_S} seconds (got {seconds})"),
        ));
    }
}

/// Checks a sticky cookie name (HTTP pools only): a cookie token of letters, digits, `_`, `-`.
fn check_cookie(
    protocol: PoolProtocol,
    name: Option<&str>,
    errors: &mut Vec<Invalid>,
) -> Option<String> {
    let name = name?;
    if protocol != PoolProtocol::Http {
        errors.push(Invalid::new(
            "sticky_cookie",
            "only http pools can keep clients on a member by cookie; leave sticky_cookie out",
        ));
        return None;
    }
    if name.is_empty()
        || name.len() > MAX_COOKIE
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        errors.push(Invalid::new(
            "sticky_cookie",
            format!("must be 1 to {MAX_COOKIE} letters, digits, '_' or '-'"),
        ));
        return None;
    }
    Some(name.to_string())
}

fn check_proxy(protocol: PoolProtocol, on: bool, errors: &mut Vec<Invalid>) {
    if on && protocol != PoolProtocol::Tcp {
        errors.push(Invalid::new(
            "proxy_protocol",
            "the PROXY protocol header is for tcp pools; http pools send X-Forwarded-For",
        ));
    }
}

/// The listen port: the one asked (checked against the range, other pools and programs on
/// the host) or the lowest free one in the range. Runs inside the write transaction, so two
/// creates cannot take the same port.
pub async fn listen_port(
    tx: &mut WriteTx,
    lb: &LbConfig,
    asked: Option<&str>,
) -> Result<u16, AppError> {
    let taken: HashSet<i64> = db::pools::listen_ports(&mut *tx)
        .await?
        .into_iter()
        .collect();
    let range = lb.ports;
    let Some(asked) = asked else {
        return (range.first..=range.last)
            .find(|p| !taken.contains(&i64::from(*p)) && bindable(lb, *p))
            .ok_or_else(|| {
                AppError::Conflict(format!(
                    "no free pool port is left in lb.ports {}; delete a pool or widen the range",
                    String::from(range)
                ))
            });
    };
    let addr: SocketAddr = asked.parse().map_err(|_| {
        AppError::invalid(
            "listen",
            format!(
                "{asked:?} is not address:port; use e.g. \"{}:{}\", or leave listen out for a free port",
                lb.listen_address, range.first
            ),
        )
    })?;
    if addr.ip() != lb.listen_address {
        return Err(AppError::invalid(
            "listen",
            format!(
                "pools listen on {} on this carve; use \"{}:{}\"",
                lb.listen_address,
                lb.listen_address,
                addr.port()
            ),
        ));
    }
    let port = addr.port();
    if port < range.first || port > range.last {
        return Err(AppError::Conflict(format!(
            "port {port} is outside the pool port range {}; pick one inside it or leave listen out",
            String::from(range)
        )));
    }
    if taken.contains(&i64::from(port)) {
        return Err(AppError::Conflict(format!(
            "port {port} is taken by another pool; pick another or leave listen out"
        )));
    }
    if !bindable(lb, port) {
        return Err(AppError::Conflict(format!(
            "port {port} is in use by another program on the host; pick another or leave listen out"
        )));
    }
    Ok(port)
}

/// Whether nothing on the host listens on the port now.
fn bindable(lb: &LbConfig, port: u16) -> bool {
    std::net::TcpListener::bind((lb.listen_address, port)).is_ok()
}
