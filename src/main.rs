use cbtl_bff::{app, config::Settings, graphql, store, telemetry};
use clap::{Parser, Subcommand};
use std::{path::PathBuf, process::ExitCode};

/// GraphQL backend-for-frontend of the CBTL mobile ordering app.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// TOML settings file, read after the defaults and before the environment.
    #[arg(long, env = "CBTL_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Print the GraphQL SDL.
    PrintSchema,
    /// List the orders whose flow stopped for an operator, with the reason.
    Attention,
    /// Resume an order an operator has looked at: clears its attention mark, and the
    /// next sweep runs its step again from what the upstreams say is true.
    Resume {
        /// The order's id (`ord_…`).
        order_id: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::PrintSchema = command {
        print!("{}", graphql::sdl());
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(settings.log_format);
    let result = match command {
        Command::Migrate => migrate(&settings).await,
        Command::Attention => attention(&settings).await,
        Command::Resume { order_id } => resume(&settings, &order_id).await,
        Command::Serve | Command::PrintSchema => serve(settings).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A setting found wrong at start exits like one found wrong when loading.
        Err(e) if matches!(e.downcast_ref(), Some(app::StartError::Configuration(_))) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(settings: &Settings) -> Result<(), Box<dyn std::error::Error>> {
    let db = store::connect(&settings.database_url, &settings.database).await?;
    store::migrate(&db).await?;
    tracing::info!("migrations applied");
    Ok(())
}

async fn attention(settings: &Settings) -> Result<(), Box<dyn std::error::Error>> {
    let db = store::connect(&settings.database_url, &settings.database).await?;
    for order in store::orders::list_needing_attention(&db, 1_000).await? {
        println!(
            "{}\t{}\t{}\t{}",
            order.id,
            order.status,
            order.step,
            order.attention.unwrap_or_default()
        );
    }
    Ok(())
}

async fn resume(settings: &Settings, order_id: &str) -> Result<(), Box<dyn std::error::Error>> {
    let db = store::connect(&settings.database_url, &settings.database).await?;
    let id = cbtl_bff::domain::OrderId::parse(order_id)
        .ok_or_else(|| format!("{order_id:?} is not an order id"))?;
    if store::orders::resume(&db, &id, cbtl_bff::auth::now_ms()).await? {
        println!("{order_id} resumes at the next sweep");
        Ok(())
    } else {
        Err(format!("{order_id} is not waiting for an operator").into())
    }
}

async fn serve(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    // Listening for SIGTERM before anything starts: one sent while the service starts up
    // (or just after it logged that it listens) still shuts it down gracefully, instead of
    // killing it with its websockets unclosed.
    let signal = shutdown_signal();
    let application = app::build(settings).await?;
    application.run_until(signal).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Ctrl-C or SIGTERM (what orchestrators send) begins a graceful shutdown. SIGTERM's
/// handler is installed by this call, not by the future's first poll.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let terminate = async {
            match terminate.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => {},
            () = terminate => {},
        }
    }
}
