//! The application: state shared by handlers, and `Application::build`, which opens the
//! database, connects to libvirt, registers the host and images, and binds the listeners
//! (port 0 picks a free port; the bound addresses are exposed for tests).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

use crate::auth::PasswordHasher;
use crate::config::Config;
use crate::db::{self, Db};
use crate::hypervisor::libvirt::Libvirt;
use crate::hypervisor::{Hv, storage};
use crate::metrics::HttpMetrics;
use crate::provision::owner::Owner;
use crate::provision::{self, Provisioner, Settings, reconciler};
use crate::sftp::SftpServer;
use crate::sftp::quota::Ledger;

/// Everything handlers share.
pub struct App {
    pub config: Config,
    pub db: Db,
    pub prov: Arc<Provisioner>,
    pub metrics: HttpMetrics,
    pub hasher: PasswordHasher,
    /// SFTP usage of the accounts this process serves.
    pub sftp_ledger: Arc<crate::sftp::quota::Ledger>,
    /// The OpenAPI document, rendered once.
    pub openapi_json: String,
    /// Live changes for event streams.
    pub feed: Arc<crate::feed::Feed>,
    /// Where the SFTP server listens (the configured address, its port bound).
    pub sftp_addr: SocketAddr,
    /// Wakes this process's reconciler for a pass now.
    pub reconcile_now: Arc<tokio::sync::Notify>,
    /// Rendered dashboard content by scope, tagged with its view version.
    pub dashboard_cache: crate::view_cache::ViewCache<Arc<str>>,
    /// The load balancer this process runs (`lb.embedded`), for its metrics.
    pub balancer: Option<Arc<crate::lb::Balancer>>,
    /// VM consoles: tickets and the open ones.
    pub consoles: crate::console::Consoles,
}

/// The state handed to handlers.
pub type AppState = Arc<App>;

/// A built application whose listeners are bound but not yet serving.
pub struct Application {
    state: AppState,
    http: TcpListener,
    http_addr: SocketAddr,
    sftp: SftpServer,
    sftp_addr: SocketAddr,
    /// The pools' control loop, when this process runs the balancer.
    lb: Option<crate::lb::control::Control>,
}

/// Creates a directory (and parents) traversable, not listable, by other users.
fn create_private_dir(path: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o001 == 0 {
        std::fs::set_permissions(
            path,
            std::fs::Permissions::from_mode((mode & 0o7777) | 0o711),
        )?;
    }
    Ok(())
}

/// Raises this process's open-file limit to its hard maximum: every SFTP handle, VM console
/// and HTTP connection is a file descriptor, and the default soft limit (1024) is low.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let Some(max) = limit.maximum
        && limit.current.is_some_and(|c| c < max)
    {
        let raised = rustix::process::Rlimit {
            current: Some(max),
            maximum: Some(max),
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
    }
}

/// Opens the database and applies migrations.
pub async fn open_database(config: &Config) -> anyhow::Result<Db> {
    create_private_dir(&config.data_dir)?;
    let url = config.database_url();
    let db = db::connect(&url)
        .await
        .with_context(|| format!("opening the database {}", db::redacted(&url)))?;
    db::migrate(&db)
        .await
        .context("applying database migrations")?;
    Ok(db)
}

impl Application {
    /// Builds the application from its configuration.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        raise_open_file_limit();
        let settings = Settings::from_config(&config);
        create_private_dir(&settings.vm_root)?;
        storage::check_traversable(&settings.vm_root).map_err(anyhow::Error::msg)?;
        let db = open_database(&config).await?;
        let uri = config.libvirt.uri.clone();
        let libvirt = tokio::task::spawn_blocking(move || Libvirt::connect(&uri))
            .await?
            .map_err(|e| {
                anyhow::anyhow!(
                    "{e} (is libvirtd running? scripts/setup-host.sh installs and starts it)"
                )
            })?;
        let hv = Hv::new(Arc::new(libvirt));
        provision::images::register_all(&db, &settings.image_dir).await?;
        let host = provision::host::register_local(&db, &hv, &config, &settings).await?;
        create_private_dir(&settings.scratch)?;
        let reconcile_now = Arc::new(tokio::sync::Notify::new());
        let prov = Arc::new(Provisioner {
            db: db.clone(),
            fleet: provision::fleet::Fleet::new(
                &host.id,
                &host.libvirt_uri,
                hv,
                db.clone(),
                Owner::current().id,
            ),
            settings,
            owner: Owner::current(),
            local_host: host.id,
            list_cache: Default::default(),
            reconcile_now: reconcile_now.clone(),
            root_password_hashes: Default::default(),
            uploads: provision::custom_images::Uploads::from_config(&config),
        });
        provision::custom_images::sweep(&prov).await;

        let openapi_json = crate::api::router()
            .into_openapi()
            .to_pretty_json()
            .context("rendering the OpenAPI document")?;
        let http = TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("binding http.listen = {}", config.http.listen))?;
        let http_addr = http.local_addr()?;
        let hasher =
            PasswordHasher::new(config.auth.concurrent_hashes, config.auth.max_queued_hashes);
        let sftp_ledger = Arc::new(Ledger::new(db.clone(), config.quota.clone()));
        let sftp =
            SftpServer::build(&config, db.clone(), hasher.clone(), sftp_ledger.clone()).await?;
        let sftp_addr = sftp.local_addr()?;
        let feed = crate::feed::Feed::new(
            db.clone(),
            config.quota.clone(),
            config.http.max_event_streams,
            config.http.max_event_streams_per_user,
            db::events::last_id(&db).await?,
        );
        let lb = config
            .lb
            .embedded
            .then(|| crate::lb::control::Control::new(db.clone(), &config));
        let state = Arc::new(App {
            balancer: lb.as_ref().map(|c| c.balancer()),
            consoles: crate::console::Consoles::new(
                std::time::Duration::from_secs(config.console.idle_timeout_secs),
                config.console.max_open,
                config.console.max_open_per_user,
            ),
            feed,
            sftp_addr,
            reconcile_now,
            dashboard_cache: Default::default(),
            config,
            db,
            prov,
            metrics: HttpMetrics::default(),
            hasher,
            sftp_ledger,
            openapi_json,
        });
        Ok(Self {
            state,
            http,
            http_addr,
            sftp,
            sftp_addr,
            lb,
        })
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound SFTP address.
    pub fn sftp_addr(&self) -> SocketAddr {
        self.sftp_addr
    }

    /// The shared state (tests use it to reach the database and provisioner).
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serves until `shutdown` completes; the reconciler runs alongside.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let reconciler = tokio::spawn(reconciler::run_forever(self.state.prov.clone()));
        let housekeeping = tokio::spawn(housekeeping(self.state.clone()));
        let feed = tokio::spawn(self.state.feed.clone().run());
        let sampler = tokio::spawn(crate::provision::stats::run_forever(
            self.state.prov.clone(),
        ));
        let scaler = tokio::spawn(crate::scaling::controller::run_forever(
            self.state.prov.clone(),
        ));
        let sftp = tokio::spawn(self.sftp.run());
        let lb = self.lb.map(|c| tokio::spawn(c.run()));
        let router = router(self.state.clone());
        tracing::info!(http = %self.http_addr, sftp = %self.sftp_addr, "carve is serving");
        let http_config = self.state.config.http.clone();
        let served = crate::http_server::serve(self.http, router, &http_config, shutdown).await;
        reconciler.abort();
        housekeeping.abort();
        feed.abort();
        sampler.abort();
        scaler.abort();
        sftp.abort();
        if let Some(lb) = lb {
            lb.abort();
        }
        if let Some(balancer) = &self.state.balancer {
            // Listeners close; open connections finish on their own.
            balancer.apply(&[]).await;
        }
        served.context("serving HTTP")
    }
}

/// Every ten minutes: removes expired sessions and tokens, login-failure counters whose
/// window has ended, and audit entries past the retention.
async fn housekeeping(app: AppState) {
    let auth = &app.config.auth;
    let window = chrono::Duration::seconds(auth.window_secs as i64);
    let keep = chrono::Duration::days(auth.audit_retention_days.min(100_000) as i64);
    let max_entries = auth.audit_max_entries.min(i64::MAX as u64) as i64;
    loop {
        match db::sessions::purge_expired(&app.db).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "expired sessions and tokens removed"),
            Err(e) => tracing::warn!(error = %e, "cannot remove expired sessions"),
        }
        if let Err(e) = db::login_failures::purge(&app.db, window).await {
            tracing::warn!(error = %e, "cannot remove old login-failure counters");
        }
        match db::audit::purge(&app.db, keep, max_entries).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "audit entries past retention removed"),
            Err(e) => tracing::warn!(error = %e, "cannot trim the audit log"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(600)).await;
    }
}

/// Every HTTP route: the API (authenticated and audited), the panel, health and metrics.
pub fn router(state: AppState) -> Router {
    let (api, _) = crate::api::router().split_for_parts();
    let api = api.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        crate::api::authenticate,
    ));
    let max_body = state.config.http.max_body_bytes;
    api.merge(crate::web::router(state.clone()))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            deadline,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Answers 408 to a request not answered within `http.request_timeout_secs`. An image upload
/// (API or panel) is exempt: it may take longer, and is bounded by its own size limit and idle
/// timeout. A refused upload may leave its body unread, so its answer closes the connection
/// (else the client could send its next request on a connection the server is dropping).
async fn deadline(
    State(app): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    if req.method() == axum::http::Method::POST
        && (path == "/api/v1/images" || path == "/admin/images")
    {
        let mut response = next.run(req).await;
        if response.status().is_client_error() || response.status().is_server_error() {
            response.headers_mut().insert(
                header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        return response;
    }
    let limit = std::time::Duration::from_secs(app.config.http.request_timeout_secs);
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => StatusCode::REQUEST_TIMEOUT.into_response(),
    }
}

/// The OpenAPI document.
async fn openapi(State(app): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        app.openapi_json.clone(),
    )
        .into_response()
}

/// Liveness and readiness: the database and libvirt answer.
async fn healthz(State(app): State<AppState>) -> Response {
    let database = app.db.ping().await.is_ok();
    let libvirt = match app.prov.hv_of(&app.prov.local_host).await {
        Ok(hv) => hv.call(|h| h.node()).await.is_ok(),
        Err(_) => false,
    };
    let status = if database && libvirt {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let body = serde_json::json!({
        "status": word(database && libvirt),
        "database": word(database),
        "libvirt": word(libvirt),
    });
    (status, axum::Json(body)).into_response()
}

/// Prometheus exposition.
async fn metrics(State(app): State<AppState>) -> Response {
    match crate::metrics::render(&app).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => crate::error::AppError::Internal(e).into_response(),
    }
}
