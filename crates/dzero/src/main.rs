//! The `dzero` command: run the server, run benchmarks.

use clap::{Parser, Subcommand};
use dzero::{bench, server};

/// dzero: a payment-platform core (ledger, clearing, settlement, advance payouts).
#[derive(Debug, Parser)]
#[command(name = "dzero", version)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Run the API server on the embedded SQLite store.
    Serve(server::ServeArgs),
    /// Run a benchmark; the last line printed is its figure.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Business calendars.
    #[command(subcommand)]
    Calendar(CalendarCommand),
    /// The audit chain of merchant users' actions.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check that no audit entry was changed, removed or reordered.
    Verify(dzero::secrets::VerifyArgs),
}

#[derive(Debug, Subcommand)]
enum CalendarCommand {
    /// Load (or replace) calendar years from a JSON or CSV file into a running server.
    Load(dzero::calendars::LoadArgs),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Durable pay-ins per second through the engine into SQLite.
    Payins(bench::payins::PayinsArgs),
    /// Single pay-in requests per second over loopback HTTP, and p99 latency at half that rate.
    Http(bench::http::HttpArgs),
    /// Resident memory per ledger account and per merchant.
    Accounts(bench::accounts::AccountsArgs),
    /// Cutoff, funds arrival and settlement for many merchants while pay-ins keep flowing.
    Settle(bench::settle::SettleArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Commands::Serve(args) => {
            init_logging();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(server::run(args))
        }
        Commands::Calendar(CalendarCommand::Load(args)) => {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(dzero::calendars::load(&args))
        }
        Commands::Audit(AuditCommand::Verify(args)) => dzero::secrets::verify_audit(&args),
        Commands::Bench(BenchCommand::Payins(args)) => bench::payins::run(&args),
        Commands::Bench(BenchCommand::Http(args)) => bench::http::run(&args),
        Commands::Bench(BenchCommand::Accounts(args)) => bench::accounts::run(&args),
        Commands::Bench(BenchCommand::Settle(args)) => bench::settle::run(&args),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}
