//! Counters of the data plane, per member and per pool, kept in atomics (no lock on the
//! request path) and rendered for Prometheus.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Balancer;
use super::member::Member;

/// Upper bounds of the member answer-time histogram, in seconds.
pub const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// What one member did.
#[derive(Debug, Default)]
pub struct MemberStats {
    /// Requests (HTTP) or connections (TCP) sent to the member.
    pub sent: AtomicU64,
    /// Answers by status class: 1xx to 5xx.
    pub answers: [AtomicU64; 5],
    /// Requests or connections the member failed (no connection, no answer, timeout).
    pub failed: AtomicU64,
    /// Time to the answer's head, as a histogram (cumulative at render time).
    pub latency: [AtomicU64; BUCKETS.len()],
    pub latency_count: AtomicU64,
    pub latency_sum_micros: AtomicU64,
}

impl MemberStats {
    /// Counts a request or connection sent to the member.
    pub fn sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request or connection the member failed.
    pub fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an answer with `status` that took `took` to start.
    pub fn answered(&self, status: u16, took: Duration) {
        if let Some(class) = (status / 100).checked_sub(1).filter(|c| *c < 5) {
            self.answers[usize::from(class)].fetch_add(1, Ordering::Relaxed);
        }
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.latency[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(
            took.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }
}

/// What one pool did.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Client connections accepted.
    pub accepted: AtomicU64,
    /// Client connections closed at once because the pool held `max_connections`.
    pub refused: AtomicU64,
    /// Client connections open now.
    pub open: AtomicU64,
    /// Requests or connections answered 503 (or closed) because no member was healthy.
    pub unavailable: AtomicU64,
}

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A metric family: name, type, help, and how to read its value from a `T`.
type Family<T> = (&'static str, &'static str, &'static str, fn(&T) -> u64);

/// Writes one metric family's header.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Appends the balancer's metrics in Prometheus text format.
pub fn render(balancer: &Balancer, out: &mut String) {
    let pools = balancer.pools();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let pool_counters: [Family<PoolStats>; 4] = [
        (
            "carve_pool_connections_total",
            "counter",
            "Client connections a pool accepted.",
            |s| s.accepted.load(Ordering::Relaxed),
        ),
        (
            "carve_pool_connections_refused_total",
            "counter",
            "Client connections closed at once because the pool was full.",
            |s| s.refused.load(Ordering::Relaxed),
        ),
        (
            "carve_pool_open_connections",
            "gauge",
            "Client connections open now.",
            |s| s.open.load(Ordering::Relaxed),
        ),
        (
            "carve_pool_unavailable_total",
            "counter",
            "Requests or connections turned away because no member was healthy.",
            |s| s.unavailable.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, counter) in pool_counters {
        family(out, name, kind, help);
        for p in &pools {
            let _ = writeln!(
                out,
                "{name}{{pool=\"{}\"}} {}",
                label(&p.id),
                counter(&p.stats)
            );
        }
    }
    let members: Vec<_> = pools
        .iter()
        .flat_map(|p| {
            p.members()
                .iter()
                .map(|m| (p.id.clone(), m.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let labels =
        |pool: &str, m: &Member| format!("pool=\"{}\",member=\"{}\"", label(pool), label(&m.id));
    family(
        out,
        "carve_pool_member_up",
        "gauge",
        "1 for the member's current state (joining, healthy, unhealthy, draining).",
    );
    for (pool, m) in &members {
        let _ = writeln!(
            out,
            "carve_pool_member_up{{{},state=\"{}\"}} 1",
            labels(pool, m),
            m.state().as_str()
        );
    }
    let member_values: [Family<Member>; 3] = [
        (
            "carve_pool_member_active",
            "gauge",
            "Requests or connections open on the member now.",
            |m| m.active() as u64,
        ),
        (
            "carve_pool_member_sent_total",
            "counter",
            "Requests (HTTP) or connections (TCP) sent to the member.",
            |m| m.stats.sent.load(Ordering::Relaxed),
        ),
        (
            "carve_pool_member_failed_total",
            "counter",
            "Requests or connections the member failed.",
            |m| m.stats.failed.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, value) in member_values {
        family(out, name, kind, help);
        for (pool, m) in &members {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(pool, m), value(m));
        }
    }
    family(
        out,
        "carve_pool_member_responses_total",
        "counter",
        "HTTP answers of the member by status class.",
    );
    for (pool, m) in &members {
        for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            let _ = writeln!(
                out,
                "carve_pool_member_responses_total{{{},class=\"{class}\"}} {}",
                labels(pool, m),
                load(&m.stats.answers[i])
            );
        }
    }
    family(
        out,
        "carve_pool_member_response_seconds",
        "histogram",
        "Time until the member's answer began.",
    );
    for (pool, m) in &members {
        let l = labels(pool, m);
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += load(&m.stats.latency[i]);
            let _ = writeln!(
                out,
                "carve_pool_member_response_seconds_bucket{{{l},le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = load(&m.stats.latency_count);
        let _ = writeln!(
            out,
            "carve_pool_member_response_seconds_bucket{{{l},le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "carve_pool_member_response_seconds_sum{{{l}}} {}",
            load(&m.stats.latency_sum_micros) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "carve_pool_member_response_seconds_count{{{l}}} {count}"
        );
    }
}
