//! The command line: `serve`, `migrate`, and `admin` commands for bootstrapping.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::app::{Application, open_database};
use crate::auth::{PasswordHasher, Role, new_token};
use crate::config::Config;
use crate::db;
use crate::domain::ids::TenantId;
use crate::domain::names::ResourceName;
use crate::error::AppError;
use crate::tenancy::accounts::{CreateUser, add_user};

/// carve: self-hosted VPS hosting on libvirt.
#[derive(Debug, Parser)]
#[command(name = "carve", version, about)]
struct Cli {
    /// TOML configuration file; every key is optional (see README).
    #[arg(long, global = true, env = "CARVE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API, panel, SFTP server and reconciler.
    Serve,
    /// Run only the load balancer of the stored pools (set `lb.embedded = false` for
    /// `carve serve` then).
    Lb,
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Bootstrap users and tokens.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Move the database between engines.
    #[command(subcommand)]
    Db(DbCommand),
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Copy every table of a stopped installation's database into an empty one (SQLite to
    /// PostgreSQL, or back) and check the counts; then point `database_url` at the copy. Give
    /// the PostgreSQL password in PGPASSWORD or ~/.pgpass, not in the URL: a command line is
    /// visible to every user of the machine.
    Copy {
        /// The database to read, e.g. `sqlite:///var/lib/carve/carve.db`.
        #[arg(long)]
        from: String,
        /// The empty database to fill, e.g. `postgres://carve@db.example/carve`.
        #[arg(long)]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create a user; the password is read from the first line of standard input.
    CreateUser {
        #[arg(long)]
        email: String,
        /// `admin` or `customer`.
        #[arg(long, default_value = "customer")]
        role: String,
        /// Tenant id (customers must have one; admins may).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Create an API token for a user and print it (it is shown only this once).
    CreateToken {
        #[arg(long)]
        email: String,
        /// A name to recognise the token by.
        #[arg(long)]
        name: String,
        /// Days until the token expires (never, if left out).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("carve: {e}");
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("carve: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("carve: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let app = Application::build(config).await?;
            app.run_until_stopped(shutdown_signal()).await
        }
        Command::Lb => {
            let db = open_database(&config).await?;
            let control = crate::lb::control::Control::new(db, &config);
            tracing::info!("carve lb is serving the stored pools");
            tokio::select! {
                _ = control.run() => {}
                _ = shutdown_signal() => {}
            }
            Ok(())
        }
        Command::Migrate => {
            open_database(&config).await?;
            println!(
                "database is up to date: {}",
                db::redacted(&config.database_url())
            );
            Ok(())
        }
        Command::Db(DbCommand::Copy { from, to }) => copy_database(&from, &to).await,
        Command::Admin(AdminCommand::CreateUser {
            email,
            role,
            tenant,
        }) => create_user(&config, &email, &role, tenant.as_deref()).await,
        Command::Admin(AdminCommand::CreateToken {
            email,
            name,
            expires_in_days,
        }) => create_token(&config, &email, &name, expires_in_days).await,
    }
}

/// `carve db copy`: opens both databases (the source must exist), copies, prints the counts.
async fn copy_database(from: &str, to: &str) -> anyhow::Result<()> {
    if !db::is_postgres_url(from) {
        let path = from
            .strip_prefix("sqlite://")
            .unwrap_or(from)
            .split('?')
            .next()
            .unwrap_or_default();
        anyhow::ensure!(
            std::path::Path::new(path).is_file(),
            "--from: no SQLite database at {path}"
        );
    }
    let source = db::connect(from)
        .await
        .with_context(|| format!("--from: cannot open {}", db::redacted(from)))?;
    let target = db::connect(to)
        .await
        .with_context(|| format!("--to: cannot open {}", db::redacted(to)))?;
    let counts = db::copy::copy(&source, &target).await?;
    for (table, rows) in &counts {
        println!("{table:>20}  {rows}");
    }
    println!(
        "copied {} tables, {} rows, from {} to {}; the counts match",
        counts.len(),
        counts.values().sum::<i64>(),
        db::redacted(from),
        db::redacted(to)
    );
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

async fn create_user(
    config: &Config,
    email: &str,
    role: &str,
    tenant: Option<&str>,
) -> anyhow::Result<()> {
    let role =
        Role::parse(role).with_context(|| format!("--role {role:?}: use admin or customer"))?;
    let tenant_id = match tenant {
        Some(t) => Some(t.to_string()),
        None if role == Role::Customer => Some(TenantId::default_tenant().to_string()),
        None => None,
    };
    let mut password = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut password)
        .context("reading the password from stdin")?;
    let password = password.trim_end_matches(['\r', '\n']).to_string();
    let db = open_database(config).await?;
    let req = CreateUser {
        email: email.to_string(),
        password,
        role,
        tenant_id,
    };
    // The same checks and hashing as an admin's request through the API.
    match add_user(&db, &PasswordHasher::new(1, 0), req).await {
        Ok(id) => {
            println!("created {} {email} ({id})", role.as_str());
            Ok(())
        }
        Err(AppError::Invalid(list)) => {
            let what: Vec<String> = list
                .iter()
                .map(|e| format!("--{}: {}", e.field, e.message))
                .collect();
            anyhow::bail!(
                "{}",
                what.join("; ")
                    .replace("--password", "the password on stdin")
            )
        }
        Err(AppError::NotFound { id, .. }) => anyhow::bail!("--tenant: no tenant has id {id}"),
        Err(e) => anyhow::bail!("{e}"),
    }
}

async fn create_token(
    config: &Config,
    email: &str,
    name: &str,
    days: Option<u32>,
) -> anyhow::Result<()> {
    ResourceName::parse(name, "--name").map_err(|e| anyhow::anyhow!("{e}"))?;
    let db = open_database(config).await?;
    let user = db::users::find_by_email(&db, email)
        .await?
        .with_context(|| format!("no user has email {email}"))?;
    let (secret, digest) = new_token();
    let expires = days.map(|d| db::now() + chrono::Duration::days(i64::from(d)));
    db::tokens::insert(&db, &user.id, name, &digest, expires).await?;
    println!("{secret}");
    Ok(())
}
