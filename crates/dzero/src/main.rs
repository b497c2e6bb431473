//! The `dzero` command: run the server, run benchmarks.

use clap::{Parser, Subcommand};

mod bench;

/// dzero: a payment-platform core (ledger, clearing, settlement, advance payouts).
#[derive(Debug, Parser)]
#[command(name = "dzero", version)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Run a benchmark; the last line printed is its figure.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Durable pay-ins per second through the engine into SQLite.
    Payins(bench::payins::PayinsArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Commands::Bench(BenchCommand::Payins(args)) => bench::payins::run(&args),
    }
}
