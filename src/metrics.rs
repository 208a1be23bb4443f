//! Prometheus metrics: HTTP requests counted in this process by route and status, and
//! gauges read from the database at scrape time (VMs by state, operations by kind and
//! outcome), so every carve process behind a balancer reports the same fleet.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use crate::app::AppState;
use crate::db;

/// Upper bounds of the request duration histogram, in seconds.
const BUCKETS: [f64; 9] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

/// One (method, route, status) series.
#[derive(Default)]
struct Series {
    count: u64,
    sum_secs: f64,
    buckets: [u64; BUCKETS.len()],
}

/// HTTP request counters of this process.
#[derive(Default)]
pub struct HttpMetrics {
    series: Mutex<BTreeMap<(String, String, u16), Series>>,
}

impl HttpMetrics {
    fn record(&self, method: &str, route: &str, status: u16, secs: f64) {
        let mut map = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let s = map
            .entry((method.to_string(), route.to_string(), status))
            .or_default();
        s.count += 1;
        s.sum_secs += secs;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                s.buckets[i] += 1;
            }
        }
    }
}

/// Middleware: counts each request under its route pattern (never the raw path, so ids do
/// not explode the series).
pub async fn track(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    // Known methods only: any other method string would make a new series.
    let method = match *req.method() {
        Method::GET
        | Method::HEAD
        | Method::POST
        | Method::PUT
        | Method::PATCH
        | Method::DELETE
        | Method::OPTIONS => req.method().as_str().to_string(),
        _ => "other".to_string(),
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(req).await;
    app.metrics.record(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text.
pub async fn render(app: &AppState) -> anyhow::Result<String> {
    let mut out = String::new();
    writeln!(
        out,
        "# HELP carve_http_requests_total HTTP requests answered by this process."
    )?;
    writeln!(out, "# TYPE carve_http_requests_total counter")?;
    let mut hist = String::new();
    writeln!(
        hist,
        "# HELP carve_http_request_duration_seconds Time to answer HTTP requests."
    )?;
    writeln!(hist, "# TYPE carve_http_request_duration_seconds histogram")?;
    {
        let map = app.metrics.series.lock().unwrap_or_else(|p| p.into_inner());
        for ((method, route, status), s) in map.iter() {
            let labels = format!(
                "method=\"{}\",route=\"{}\",status=\"{status}\"",
                label(method),
                label(route)
            );
            writeln!(out, "carve_http_requests_total{{{labels}}} {}", s.count)?;
            for (i, bound) in BUCKETS.iter().enumerate() {
                writeln!(
                    hist,
                    "carve_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {}",
                    s.buckets[i]
                )?;
            }
            writeln!(
                hist,
                "carve_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            )?;
            writeln!(
                hist,
                "carve_http_request_duration_seconds_sum{{{labels}}} {}",
                s.sum_secs
            )?;
            writeln!(
                hist,
                "carve_http_request_duration_seconds_count{{{labels}}} {}",
                s.count
            )?;
        }
    }
    out.push_str(&hist);
    writeln!(
        out,
        "# HELP carve_vms Live VMs by state (from the database)."
    )?;
    writeln!(out, "# TYPE carve_vms gauge")?;
    for (state, n) in db::vms::count_by_state(&app.db).await? {
        writeln!(out, "carve_vms{{state=\"{}\"}} {n}", label(&state))?;
    }
    writeln!(
        out,
        "# HELP carve_operations Operations by kind and state (from the database)."
    )?;
    writeln!(out, "# TYPE carve_operations gauge")?;
    for (kind, state, n) in db::operations::count_by_kind_and_state(&app.db).await? {
        writeln!(
            out,
            "carve_operations{{kind=\"{}\",state=\"{}\"}} {n}",
            label(&kind),
            label(&state)
        )?;
    }
    writeln!(
        out,
        "# HELP carve_unmanaged_domains libvirt domains on managed hosts that carve does not manage."
    )?;
    writeln!(out, "# TYPE carve_unmanaged_domains gauge")?;
    let unmanaged: usize = db::hosts::list(&app.db)
        .await?
        .iter()
        .map(|h| h.unmanaged().len())
        .sum();
    writeln!(out, "carve_unmanaged_domains {unmanaged}")?;
    writeln!(
        out,
        "# HELP carve_password_checks_total argon2 password checks run by this process (logins and password changes: panel, API, SFTP)."
    )?;
    writeln!(out, "# TYPE carve_password_checks_total counter")?;
    writeln!(
        out,
        "carve_password_checks_total {}",
        app.hasher.verifications()
    )?;
    if let Some(balancer) = &app.balancer {
        crate::lb::stats::render(balancer, &mut out);
    }
    if let Some(rss) = resident_bytes() {
        writeln!(
            out,
            "# HELP process_resident_memory_bytes Resident memory of this process."
        )?;
        writeln!(out, "# TYPE process_resident_memory_bytes gauge")?;
        writeln!(out, "process_resident_memory_bytes {rss}")?;
    }
    Ok(out)
}

/// This process's resident set size, from /proc/self/statm.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}
