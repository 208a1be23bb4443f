//! The live parts of a VM's page: its CPU and memory chart, and a stream of what its
//! serial console writes (and of new statistics samples) while the page is open.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::errors::WebError;
use super::form::Panel;
use crate::app::AppState;
use crate::auth::Principal;
use crate::provision::stats::{self, VmStats};
use crate::provision::vms as service;

/// The chart of a VM's last 15 minutes.
pub struct Chart {
    pub cpu: String,
    pub memory: String,
    pub summary: String,
}

impl Chart {
    /// Polylines (x 0..900 over 15 minutes, y 0..100 percent) and a sentence for screen readers.
    pub fn of(stats: &VmStats) -> Self {
        let start = chrono::Utc::now().timestamp() - stats::WINDOW_MINUTES * 60;
        let x = |p: &stats::StatsPoint| ((p.at.timestamp() - start) as f64).clamp(0.0, 900.0);
        let mut cpu = String::new();
        let mut memory = String::new();
        for p in &stats.points {
            if let Some(c) = p.cpu_percent {
                cpu.push_str(&format!("{:.0},{:.1} ", x(p), 100.0 - c));
            }
            if p.memory_total_mib > 0.0 {
                let m = p.memory_used_mib / p.memory_total_mib * 100.0;
                memory.push_str(&format!("{:.0},{:.1} ", x(p), 100.0 - m.clamp(0.0, 100.0)));
            }
        }
        let summary = match stats.points.last() {
            Some(p) => format!(
                "Now: CPU {}, memory {:.0} of {:.0} MiB.",
                p.cpu_percent
                    .map_or("not yet measured".to_string(), |c| format!("{c:.1} %")),
                p.memory_used_mib,
                p.memory_total_mib
            ),
            None => "No samples yet: carve samples running VMs every 10 seconds.".into(),
        };
        Self {
            cpu,
            memory,
            summary,
        }
    }
}

/// Where a live console stream starts.
#[derive(Debug, Deserialize)]
pub struct LiveQuery {
    /// Console bytes already shown.
    from: Option<u64>,
}

/// `GET /vms/{id}/live`: the console output as it is written (`console` events) and a
/// `stats` event when a new sample is recorded; ends after `http.event_stream_secs`.
pub async fn live(
    State(app): State<AppState>,
    Panel(user): Panel,
    Path(id): Path<String>,
    Query(q): Query<LiveQuery>,
    headers: axum::http::HeaderMap,
) -> Result<Response, WebError> {
    use axum::response::sse::{KeepAlive, Sse};
    let actor = user.principal.clone();
    service::get(&app.prov, &actor, &id).await?;
    let permit = app.feed.stream_permit(&actor.user_id)?;
    // A reconnecting browser says how far it got (each console event's id is its end).
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(app.config.http.event_stream_secs.max(1));
    let state = LiveState {
        app: app.clone(),
        actor,
        id,
        offset: resumed.or(q.from),
        last_slot: None,
        stats_checked: None,
        deadline,
        _permit: Arc::new(permit),
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        let event = s.next().await?;
        Some((Ok::<_, std::convert::Infallible>(event), s))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// One live console stream's position.
struct LiveState {
    app: AppState,
    actor: Principal,
    id: String,
    offset: Option<u64>,
    last_slot: Option<i64>,
    stats_checked: Option<tokio::time::Instant>,
    deadline: tokio::time::Instant,
    _permit: Arc<crate::feed::StreamSlot>,
}

impl LiveState {
    /// The next console text or statistics notice; `None` when the stream is over.
    async fn next(&mut self) -> Option<axum::response::sse::Event> {
        use axum::response::sse::Event;
        loop {
            if tokio::time::Instant::now() >= self.deadline {
                return None;
            }
            let chunk = service::console_since(
                &self.app.prov,
                &self.actor,
                &self.id,
                self.offset,
                64 * 1024,
            )
            .await
            .ok()?;
            let first = self.offset.is_none();
            self.offset = Some(chunk.end);
            if !chunk.text.is_empty() && !first {
                return Event::default()
                    .event("console")
                    .id(chunk.end.to_string())
                    .json_data(serde_json::json!({ "text": chunk.text }))
                    .ok();
            }
            let due = self
                .stats_checked
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(5));
            if !due {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            self.stats_checked = Some(tokio::time::Instant::now());
            let latest = stats::of_vm(&self.app.prov, &self.actor, &self.id)
                .await
                .ok()?
                .points
                .last()
                .map(|p| p.at.timestamp());
            if latest.is_some() && latest != self.last_slot {
                let announce = self.last_slot.is_some();
                self.last_slot = latest;
                if announce {
                    return Some(Event::default().event("stats").data("{}"));
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
