//! The live feed behind `/events` and `/api/v1/events`: one task per process tails the
//! database's change feed (written by triggers, so changes made by any carve process on the
//! database arrive) and fans it out to subscribers, each seeing only what its user may see.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::Stream;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};

use crate::auth::Principal;
use crate::config::QuotaConfig;
use crate::db::events::EventRow;
use crate::db::{self, Db, Scope};
use crate::domain::ids::{TenantId, UserId};
use crate::error::AppError;

/// How often the tailer looks for new rows when the database cannot announce them (SQLite).
const TAIL_INTERVAL: Duration = Duration::from_millis(50);
/// How often it looks anyway when the database announces them (PostgreSQL `NOTIFY`).
const TAIL_FALLBACK: Duration = Duration::from_secs(1);
/// Most rows read at once (by the tailer or a resuming subscriber).
const BATCH: i64 = 1000;
/// Events kept in the table: one day, and at most this many.
const KEEP_EVENTS: i64 = 200_000;

/// One change as subscribers see it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Resumes the stream (`Last-Event-ID`).
    pub id: i64,
    /// `vm`, `operation`, `usage` or `pool`; `reset` when the events since the client's last one
    /// are no longer kept (it should reload what it shows).
    pub kind: String,
    /// The id of what changed.
    pub subject: String,
    pub tenant_id: String,
    /// What changed: for `vm` its id, name, state and whether it is deleted; for `operation`
    /// its id, kind, target, state and steps; for `usage` the tenant's usage and quota; for
    /// `pool` its id, name, whether it is deleted, and the member that changed.
    pub data: serde_json::Value,
}

/// The fan-out of one process.
pub struct Feed {
    db: Db,
    quota: QuotaConfig,
    tx: broadcast::Sender<Arc<Event>>,
    streams: Arc<Semaphore>,
    /// Streams each user holds, and the most one may hold.
    per_user: Arc<Mutex<HashMap<UserId, usize>>>,
    max_per_user: usize,
    /// The newest event sent to subscribers.
    position: AtomicI64,
}

/// A held stream: its place in the process's and its user's bounds, given back on drop.
pub struct StreamSlot {
    _permit: OwnedSemaphorePermit,
    per_user: Arc<Mutex<HashMap<UserId, usize>>>,
    user: UserId,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut held = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.user);
            }
        }
    }
}

impl Feed {
    /// The newest event sent to subscribers: everything up to it is in the database, so a
    /// page read after this call shows it, and a stream resumed from it misses nothing.
    pub fn position(&self) -> i64 {
        self.position.load(Ordering::Acquire)
    }

    /// A feed allowing `max_streams` subscribers at once, `max_per_user` of them one user's,
    /// starting after the event `position` (the newest in the database).
    pub fn new(
        db: Db,
        quota: QuotaConfig,
        max_streams: usize,
        max_per_user: usize,
        position: i64,
    ) -> Arc<Self> {
        let (tx, _) = broadcast::channel(4096);
        Arc::new(Self {
            db,
            quota,
            tx,
            streams: Arc::new(Semaphore::new(max_streams)),
            per_user: Arc::new(Mutex::new(HashMap::new())),
            max_per_user,
            position: AtomicI64::new(position),
        })
    }

    /// A slot for another long-lived stream of `user` (event streams and the panel's live
    /// console count alike), or 429 when the process or the user holds as many as allowed.
    pub fn stream_permit(&self, user: &UserId) -> Result<StreamSlot, AppError> {
        let permit =
            self.streams
                .clone()
                .try_acquire_owned()
                .map_err(|_| AppError::TooManyRequests {
                    detail:
                        "this carve process holds as many live streams as it allows; retry shortly"
                            .into(),
                    retry_after_secs: 5,
                })?;
        let mut held = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        let n = held.entry(user.clone()).or_insert(0);
        if *n >= self.max_per_user {
            return Err(AppError::TooManyRequests {
                detail: format!(
                    "you have {} live streams open, the most allowed; close some pages or tabs",
                    self.max_per_user
                ),
                retry_after_secs: 5,
            });
        }
        *n += 1;
        Ok(StreamSlot {
            _permit: permit,
            per_user: self.per_user.clone(),
            user: user.clone(),
        })
    }

    /// Tails the events table forever, from the position it was made with.
    pub async fn run(self: Arc<Self>) {
        let mut last = self.position();
        let mut purged_at = tokio::time::Instant::now();
        let mut changes = db::events::ChangeWait::new(&self.db).await;
        let pause = if changes.notified() {
            TAIL_FALLBACK
        } else {
            TAIL_INTERVAL
        };
        loop {
            match db::events::after(&self.db, last, None, BATCH).await {
                Ok(rows) if !rows.is_empty() => {
                    last = rows.last().map_or(last, |r| r.id);
                    let full = rows.len() as i64 == BATCH;
                    for event in enrich(&self.db, &self.quota, rows).await {
                        let _ = self.tx.send(Arc::new(event));
                    }
                    self.position.store(last, Ordering::Release);
                    if full {
                        continue;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the event feed"),
            }
            if purged_at.elapsed() > Duration::from_secs(60) {
                purged_at = tokio::time::Instant::now();
                if let Err(e) =
                    db::events::purge(&self.db, chrono::Duration::days(1), KEEP_EVENTS).await
                {
                    tracing::warn!(error = %e, "cannot trim the event feed");
                }
            }
            changes.wait(pause).await;
        }
    }

    /// A stream of what `actor` may see, starting after `last_event_id` when the client
    /// resumes (events since then are replayed from the database), else from now. Ends after
    /// `lifetime`, when the client reconnects and its credentials are checked again.
    pub async fn subscribe(
        &self,
        actor: &Principal,
        last_event_id: Option<i64>,
        lifetime: Duration,
    ) -> Result<impl Stream<Item = Arc<Event>> + Send + 'static, AppError> {
        let permit = self.stream_permit(&actor.user_id)?;
        let mut state = Subscription {
            db: self.db.clone(),
            quota: self.quota.clone(),
            rx: self.tx.subscribe(),
            scope: actor.scope(),
            pending: VecDeque::new(),
            last_sent: 0,
            more: false,
            deadline: tokio::time::Instant::now() + lifetime,
            _permit: permit,
        };
        if let Some(after) = last_event_id {
            let first = db::events::first_id(&self.db).await?;
            if first > after.saturating_add(1) {
                // Events the client missed were already removed: it must reload what it shows.
                state.pending.push_back(Arc::new(Event {
                    id: first - 1,
                    kind: "reset".into(),
                    subject: String::new(),
                    tenant_id: String::new(),
                    data: serde_json::json!({"reason": "events since your last one were removed; reload"}),
                }));
            }
            state.replay(after.max(first - 1)).await?;
        }
        Ok(futures_util::stream::unfold(state, |mut s| async move {
            s.next().await.map(|e| (e, s))
        }))
    }
}

/// Turns rows into events, adding each tenant's usage and quota to `usage` events.
async fn enrich(db: &Db, quota: &QuotaConfig, rows: Vec<EventRow>) -> Vec<Event> {
    let mut usage: HashMap<TenantId, serde_json::Value> = HashMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let data = if row.kind == "usage" {
            if !usage.contains_key(&row.tenant_id) {
                let value = usage_of(db, quota, &row.tenant_id).await;
                usage.insert(row.tenant_id.clone(), value);
            }
            usage[&row.tenant_id].clone()
        } else {
            serde_json::from_str(&row.data).unwrap_or(serde_json::Value::Null)
        };
        out.push(Event {
            id: row.id,
            kind: row.kind,
            subject: row.subject,
            tenant_id: row.tenant_id.to_string(),
            data,
        });
    }
    out
}

/// The tenant's usage and quota as event data (only the tenant when they cannot be read).
async fn usage_of(db: &Db, quota: &QuotaConfig, tenant: &TenantId) -> serde_json::Value {
    let read = async {
        let mut conn = db.acquire().await?;
        let limits = crate::quota::quota_of(&mut conn, quota, tenant).await?;
        let usage = db::quotas::usage(&mut conn, tenant).await?;
        Ok::<_, sqlx::Error>(
            serde_json::json!({"tenant_id": tenant, "usage": usage, "quota": limits}),
        )
    };
    read.await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read usage for the event feed");
        serde_json::json!({ "tenant_id": tenant })
    })
}

/// One subscriber's position in the feed.
struct Subscription {
    db: Db,
    quota: QuotaConfig,
    rx: broadcast::Receiver<Arc<Event>>,
    scope: Scope,
    /// Events read from the table, to send before the channel's.
    pending: VecDeque<Arc<Event>>,
    /// The newest event sent (or skipped as not visible while replaying).
    last_sent: i64,
    /// The last replay filled a whole batch: more rows wait in the table.
    more: bool,
    deadline: tokio::time::Instant,
    _permit: StreamSlot,
}

impl Subscription {
    /// Queues the visible events after `after` from the table.
    async fn replay(&mut self, after: i64) -> Result<(), AppError> {
        let tenant = match &self.scope {
            Scope::All => None,
            Scope::Tenant(t) => Some(t.clone()),
        };
        let rows = db::events::after(&self.db, after, tenant.as_ref(), BATCH).await?;
        self.more = rows.len() as i64 == BATCH;
        self.last_sent = self.last_sent.max(after);
        for event in enrich(&self.db, &self.quota, rows).await {
            self.pending.push_back(Arc::new(event));
        }
        Ok(())
    }

    /// Whether this subscriber may see the event.
    fn visible(&self, e: &Event) -> bool {
        match &self.scope {
            Scope::All => true,
            Scope::Tenant(t) => t.as_str() == e.tenant_id,
        }
    }

    /// The next event, or `None` when the stream's lifetime is over.
    async fn next(&mut self) -> Option<Arc<Event>> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                if e.id > self.last_sent || e.kind == "reset" {
                    self.last_sent = e.id;
                    return Some(e);
                }
                continue;
            }
            if self.more {
                let from = self.last_sent;
                self.replay(from).await.ok()?;
                continue;
            }
            match tokio::time::timeout_at(self.deadline, self.rx.recv()).await {
                Err(_) => return None,
                Ok(Ok(e)) => {
                    if e.id > self.last_sent && self.visible(&e) {
                        self.last_sent = e.id;
                        return Some(e);
                    }
                }
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                    // Too slow for the channel: catch up from the table instead.
                    let from = self.last_sent;
                    self.replay(from).await.ok()?;
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => return None,
            }
        }
    }
}
