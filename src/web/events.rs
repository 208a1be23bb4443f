//! `/events`: the panel session's live feed (server-sent events), resumed with
//! `Last-Event-ID` after a reconnect.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::errors::WebError;
use super::session::MaybeSession;
use crate::app::AppState;
use crate::error::AppError;
use crate::request::{event_stream, last_event_id};

/// The signed-in user's event stream; 401 without a session.
pub async fn stream(
    State(app): State<AppState>,
    MaybeSession(user): MaybeSession,
    headers: HeaderMap,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
) -> Response {
    let Some(user) = user else {
        return WebError(AppError::Unauthorized(
            "sign in to follow live changes".into(),
        ))
        .into_response();
    };
    let lifetime = std::time::Duration::from_secs(app.config.http.event_stream_secs.max(1));
    match app
        .feed
        .subscribe(
            &user.principal,
            last_event_id(&headers, uri.query()),
            lifetime,
        )
        .await
    {
        Ok(s) => event_stream(s),
        Err(e) => WebError(e).into_response(),
    }
}
