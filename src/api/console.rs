//! `/vms/{id}/console`: a one-time ticket, then the VM's serial console over a WebSocket.
//! Keystrokes go up as text frames; the guest's output comes down as binary frames; the
//! console's state comes down as small JSON text frames (`{"status":…,"message":…}`).

use std::time::Duration;

use axum::Json;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiJson, ApiQuery, Auth, ClientAddr, ReadErrors, WriteErrors};
use crate::app::AppState;
use crate::auth::Principal;
use crate::console::hub::{Ended, Seen};
use crate::console::{Attach, Attached};
use crate::error::AppError;

/// Longest text frame (keystrokes or a paste) accepted; a longer one ends the connection.
const MAX_FRAME: usize = 64 * 1024;
/// Output a viewer may leave unread in carve before it is given up on.
const MAX_UNSENT: usize = 256 * 1024;
/// How long a viewer may take to accept output before it is given up on.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Routes of the console.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(mint_ticket))
        .routes(routes!(console_ws))
}

/// Whether the console's holder may type.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleMode {
    /// Type (taking over from whoever types now) and watch.
    #[default]
    Write,
    /// Only watch.
    Read,
}

/// A request for a console ticket.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketRequest {
    #[serde(default)]
    pub mode: ConsoleMode,
}

/// A one-time console ticket.
#[derive(Debug, Serialize, ToSchema)]
pub struct TicketView {
    /// Pass as `ticket` to the WebSocket within 30 s; it works once.
    pub ticket: String,
    pub expires_at: DateTime<Utc>,
    /// The WebSocket's path and query (relative to this server: `ws://` or `wss://`).
    pub url: String,
    pub mode: ConsoleMode,
}

/// Mints a one-time ticket for the VM's console WebSocket, so that no token sits in a URL.
#[utoipa::path(post, path = "/vms/{id}/console/tickets", tag = "vms", security(("bearer" = [])),
    params(("id" = String, Path, description = "VM id")),
    request_body = TicketRequest,
    responses((status = 201, description = "A ticket valid for 30 s, once", body = TicketView), WriteErrors))]
async fn mint_ticket(
    State(app): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<TicketRequest>,
) -> Result<Response, AppError> {
    let write = req.mode == ConsoleMode::Write;
    let minted = app.consoles.mint(&app.prov, &actor, &id, write).await?;
    let url = format!(
        "/api/v1/vms/{}/console/ws?ticket={}",
        minted.vm_id, minted.ticket
    );
    Ok((
        StatusCode::CREATED,
        Json(TicketView {
            ticket: minted.ticket,
            expires_at: minted.expires_at,
            url,
            mode: req.mode,
        }),
    )
        .into_response())
}

/// The ticket that opens a console.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WsQuery {
    /// A ticket from `POST /vms/{id}/console/tickets`.
    pub ticket: String,
}

/// The VM's serial console as a WebSocket (authorized by a one-time ticket; the `Origin`
/// must be this server's own).
#[utoipa::path(get, path = "/vms/{id}/console/ws", tag = "vms", security(()),
    params(("id" = String, Path, description = "VM id"), WsQuery),
    responses((status = 101, description = "Switching to the WebSocket protocol"), ReadErrors))]
async fn console_ws(
    State(app): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<WsQuery>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    check_origin(&headers)?;
    // Checked before the ticket is used: a plain request does not burn it.
    let ws = ws.map_err(|e| {
        AppError::BadRequest(format!(
            "this endpoint speaks WebSocket only ({e}); connect with a WebSocket client"
        ))
    })?;
    let attach = app.consoles.attach(&app.prov, &id, &q.ticket).await?;
    let client = client.map(|c| c.to_string());
    // Small buffers: an idle console costs little, and a browser that does not read holds at
    // most MAX_UNSENT of output before its sends fail (and the connection ends).
    Ok(ws
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_UNSENT)
        .max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| async move {
            let (principal, tenant) = match &attach {
                Attach::Live(a) => (a.principal.clone(), a.tenant_id.to_string()),
                Attach::Stopped {
                    principal,
                    tenant_id,
                    ..
                } => (principal.clone(), tenant_id.to_string()),
            };
            let who = (&principal, tenant.as_str(), id.as_str(), client);
            audit(&app, who.clone(), "console opened").await;
            let why = bridge(&app, socket, attach).await;
            audit(&app, who, why).await;
        }))
}

/// The `Origin` must name this server (as the browser reached it, through a TLS proxy or
/// not): another site's page cannot open a console with a ticket it got hold of.
fn check_origin(headers: &HeaderMap) -> Result<(), AppError> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (Some(origin), Some(host))
            if origin == format!("http://{host}") || origin == format!("https://{host}") =>
        {
            Ok(())
        }
        (origin, host) => Err(AppError::Forbidden(format!(
            "the console opens only from this server's own pages: Origin {} is not http(s)://{}; from a terminal, pass it (websocat --origin http://{})",
            origin.unwrap_or("is missing and"),
            host.unwrap_or("this server"),
            host.unwrap_or("HOST:PORT")
        ))),
    }
}

/// A console state for the viewer.
fn status(state: &str, message: &str, writer: bool) -> Message {
    Message::Text(
        serde_json::json!({"status": state, "message": message, "writer": writer})
            .to_string()
            .into(),
    )
}

/// Carries the console both ways until either side ends; why it ended, for the audit log.
async fn bridge(app: &AppState, mut socket: WebSocket, attach: Attach) -> &'static str {
    let mut a: Attached = match attach {
        Attach::Stopped { tail, .. } => {
            let _ = send(&mut socket, Message::Binary(tail.into())).await;
            let _ = send(
                &mut socket,
                status(
                    "stopped",
                    "The VM is not running (or was started before consoles existed: stop and start it once). Start it, then reconnect.",
                    false,
                ),
            )
            .await;
            close(&mut socket, 1000, "VM stopped").await;
            return "console closed: VM stopped";
        }
        Attach::Live(a) => a,
    };
    let tail = std::mem::take(&mut a.tail);
    let writer = a.viewer.is_writer();
    let hello = if writer {
        "Connected. Press Enter for a login prompt."
    } else {
        "Connected, watching only: another viewer types."
    };
    if !send(&mut socket, Message::Binary(tail.into())).await
        || !send(&mut socket, status("connected", hello, writer)).await
    {
        return "console closed by the viewer";
    }
    let idle_limit = app.consoles.idle;
    let idle = tokio::time::sleep(idle_limit);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            frame = socket.recv() => match frame {
                Some(Ok(Message::Text(keys))) => {
                    idle.as_mut().reset(tokio::time::Instant::now() + idle_limit);
                    let bytes = bytes::Bytes::copy_from_slice(keys.as_bytes());
                    // A guest that takes no input for the send timeout ends this connection.
                    match tokio::time::timeout(SEND_TIMEOUT, a.viewer.type_in(bytes)).await {
                        Ok(true) => {}
                        Ok(false) => {
                            if !send(&mut socket, status("read_only", "This console only watches: another viewer types. Reconnect to take over.", false)).await {
                                return "console closed: viewer not reading";
                            }
                        }
                        Err(_) => {
                            close(&mut socket, 1011, "the guest takes no input").await;
                            return "console closed: guest takes no input";
                        }
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    close(&mut socket, 1003, "send keystrokes as text frames").await;
                    return "console closed: binary frame";
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => return "console closed by the viewer",
                Some(Err(_)) => return "console closed: bad frame",
            },
            seen = a.viewer.next() => match seen {
                Seen::Output(bytes) => {
                    if !send(&mut socket, Message::Binary(bytes)).await {
                        return "console closed: viewer not reading";
                    }
                }
                Seen::TakenOver => {
                    let _ = send(&mut socket, status("taken_over", "Another viewer took over typing; this console only watches now. Reconnect to type again.", false)).await;
                }
                Seen::TooSlow => {
                    let _ = send(&mut socket, status("too_slow", "This connection fell too far behind the console's output and was closed. Reconnect.", false)).await;
                    close(&mut socket, 1008, "too slow").await;
                    return "console closed: viewer too slow";
                }
                Seen::Ended(Ended::Stopped) => {
                    let _ = send(&mut socket, status("stopped", "The VM stopped. Start it, then reconnect.", false)).await;
                    close(&mut socket, 1000, "VM stopped").await;
                    return "console closed: VM stopped";
                }
            },
            _ = &mut idle => {
                let minutes = idle_limit.as_secs().div_ceil(60);
                let _ = send(&mut socket, status("idle", &format!("Closed after {minutes} min without typing. Reconnect to go on."), false)).await;
                close(&mut socket, 1000, "idle").await;
                return "console closed after idle";
            }
        }
    }
}

/// Sends `message` unless the viewer takes nothing for the send timeout; whether it went.
async fn send(socket: &mut WebSocket, message: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await,
        Ok(Ok(()))
    )
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = send(socket, Message::Close(Some(frame))).await;
}

/// Who used a console: the principal, the VM's tenant, the VM, the client's address.
type Who<'a> = (&'a Principal, &'a str, &'a str, Option<String>);

/// An audit entry about a VM's console, filed under the VM's tenant.
async fn audit(app: &AppState, (principal, tenant, vm, client): Who<'_>, action: &str) {
    crate::tenancy::audit::record(
        &app.db,
        &crate::tenancy::audit::NewEntry {
            actor_id: Some(principal.user_id.to_string()),
            actor: principal.email.clone(),
            tenant_id: Some(tenant.to_string()),
            action: action.to_string(),
            target: Some(vm.to_string()),
            outcome: crate::domain::outcome::Outcome::Succeeded,
            status: None,
            client,
        },
    )
    .await;
}
