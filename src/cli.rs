//! What each subcommand does. `main` parses the flags and calls [`run`].

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::config::{ApiKeysCommand, Cli, Command, DatabaseArgs, ServeArgs};
use crate::delivery::DeliveryOptions;
use crate::domain::url_guard::TargetPolicy;
use crate::server::{self, Options};
use crate::storage::{self, DatabaseUrl, accounts};

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(db) => {
            let url = parse_url(&db)?;
            blocking(url, storage::migrate).await?;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::ApiKeys(cmd) => api_keys(cmd).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let url = parse_url(&args.database)?;
    let (db, bootstrap_key) = server::prepare(&url).await?;
    if let Some(key) = bootstrap_key {
        println!("{key}");
        eprintln!(
            "Created account `{}` with the API key above. It will not be shown again: store \
             it now (more keys: `interview-webhooks api-keys create --account NAME`).",
            server::BOOTSTRAP_ACCOUNT
        );
    }

    let grpc = TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("cannot listen for gRPC on {}", args.grpc_addr))?;
    let http = TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", args.http_addr))?;
    let options = Options {
        policy: TargetPolicy {
            allow_private: args.allow_private_webhook_targets,
        },
        delivery: DeliveryOptions {
            schedule: args.retry_schedule,
            connect_timeout: args.delivery_connect_timeout,
            timeout: args.delivery_timeout,
            concurrency: usize::from(args.delivery_concurrency),
            retention: args.delivery_retention,
            ..DeliveryOptions::default()
        },
    };
    server::run(db, options, grpc, http, server::signal()).await
}

async fn api_keys(cmd: ApiKeysCommand) -> anyhow::Result<()> {
    match cmd {
        ApiKeysCommand::Create { account, database } => {
            let account = account.trim().to_owned();
            anyhow::ensure!(!account.is_empty(), "--account must not be empty");
            let key = blocking(parse_url(&database)?, move |conn| {
                storage::migrate(conn)?;
                Ok(accounts::create_key(conn, &account, storage::now_ms())?)
            })
            .await?;
            println!("{key}");
        }
        ApiKeysCommand::List { account, database } => {
            let keys = blocking(parse_url(&database)?, move |conn| {
                storage::migrate(conn)?;
                Ok(accounts::list_keys(conn, account.as_deref())?)
            })
            .await?;
            let time = |ms: i64| crate::pb::timestamp(ms).to_string();
            println!("{:<18} {:<24} {:<26} status", "id", "account", "created");
            for k in keys {
                let status = match k.revoked_at {
                    Some(at) => format!("revoked {}", time(at)),
                    None => "active".to_owned(),
                };
                let created = time(k.created_at);
                println!("{:<18} {:<24} {created:<26} {status}", k.id, k.account);
            }
        }
        ApiKeysCommand::Revoke { key, database } => {
            // Accept the whole key as well as its id, so a leaked key can be pasted as is.
            let id = crate::domain::api_key::parse(&key)
                .map(|k| k.id.to_owned())
                .unwrap_or(key);
            let revoked = blocking(parse_url(&database)?, move |conn| {
                Ok(accounts::revoke_key(conn, &id, storage::now_ms())?)
            })
            .await?;
            anyhow::ensure!(revoked, "no active API key with that id");
            eprintln!("revoked; running servers stop accepting it within 10 seconds");
        }
    }
    Ok(())
}

fn parse_url(db: &DatabaseArgs) -> anyhow::Result<DatabaseUrl> {
    DatabaseUrl::parse(&db.database_url).map_err(|e| anyhow::anyhow!("--database-url: {e}"))
}

/// Runs `f` on a fresh connection off the async threads.
async fn blocking<T, F>(url: DatabaseUrl, f: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut storage::DbConnection) -> anyhow::Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let mut conn = url
            .connect()
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", url.redacted()))?;
        f(&mut conn)
    })
    .await?
}
