//! `/events`: live changes (VM states, operation progress, usage, pools) as server-sent events.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Auth, ReadErrors};
use crate::app::AppState;
use crate::error::AppError;
use crate::request::{event_stream, last_event_id};

/// One server-sent event as it travels: `id`, `event` (its kind) and `data` (the change as
/// JSON text: `id`, `kind`, `subject`, `tenant_id` and `data`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SseEvent {
    /// Send back as `Last-Event-ID` to resume after this event.
    pub id: String,
    /// `vm`, `operation`, `usage`, `pool`, or `reset` (reload: events were missed for good).
    pub event: String,
    /// The change, as JSON text.
    pub data: String,
}

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// Stream the changes the caller may see: VM state changes (`vm`), operation progress
/// (`operation`), tenant usage (`usage`) and pools and their members' states (`pool`). Each event's `id` resumes the stream: send it
/// back as `Last-Event-ID` (or `?last_event_id=`) and nothing in between is lost. The stream
/// ends after `http.event_stream_secs`; reconnect to go on.
#[utoipa::path(get, path = "/events", tag = "events", security(("bearer" = [])),
    params(("last_event_id" = Option<i64>, Query, description = "Resume after this event id")),
    responses((status = 200, description = "Server-sent events", body = SseEvent, content_type = "text/event-stream"),
        (status = 429, description = "This process holds as many streams as it allows", body = super::Problem, content_type = "application/problem+json"),
        ReadErrors))]
async fn events(
    State(app): State<AppState>,
    Auth(actor): Auth,
    headers: HeaderMap,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
) -> Result<Response, AppError> {
    let lifetime = std::time::Duration::from_secs(app.config.http.event_stream_secs.max(1));
    let stream = app
        .feed
        .subscribe(&actor, last_event_id(&headers, uri.query()), lifetime)
        .await?;
    Ok(event_stream(stream))
}
