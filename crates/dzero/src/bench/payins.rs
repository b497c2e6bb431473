//! `dzero bench payins`: durable pay-ins through the engine into SQLite, one hot channel and
//! many merchants, many concurrent submitters (as an HTTP server would have).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use domain::{Command, FeeSchedule, NewChannel, NewMerchant, NewPayment, Outcome};
use engine::{Engine, EngineConfig, SystemClock};
use ledger::{Amount, Currency, Timestamp};
use store::SqliteStore;

/// What to run.
#[derive(Clone, Debug, clap::Args)]
pub struct PayinsArgs {
    /// Pay-ins to record.
    #[arg(long, default_value_t = 1_000_000)]
    pub payins: u64,
    /// Merchants the pay-ins are spread over.
    #[arg(long, default_value_t = 10_000)]
    pub merchants: u64,
    /// Concurrent submitters, each waiting for its durable answer before the next pay-in.
    #[arg(long, default_value_t = 8_192)]
    pub concurrency: u64,
    /// Largest batch the engine commits at once.
    #[arg(long, default_value_t = EngineConfig::default().batch_commands_max)]
    pub batch_commands_max: usize,
    /// Data directory; a fresh temporary one when absent.
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
}

pub fn run(args: &PayinsArgs) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let (store, _reader) = SqliteStore::open(&dir).context("opening the store")?;
    let config = EngineConfig {
        batch_commands_max: args.batch_commands_max,
        queue_depth_max: (args.concurrency as usize).max(1) * 2,
        ..EngineConfig::default()
    };
    let engine = Engine::start(store, config, Arc::new(SystemClock))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(setup(&engine, args.merchants))?;
    eprintln!(
        "bench payins: {} pay-ins over {} merchants, {} concurrent submitters, data in {}",
        args.payins,
        args.merchants,
        args.concurrency,
        dir.display()
    );
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let failures = runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..args.concurrency {
            let engine = engine.clone();
            let next = Arc::clone(&next);
            let (total, merchants) = (args.payins, args.merchants);
            tasks.push(tokio::spawn(async move {
                let mut failures = 0u64;
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return failures;
                    }
                    let reply = engine.submit(vec![payin(n, merchants)], None).await;
                    match reply {
                        Ok(engine::SubmissionReply::Applied(results))
                            if matches!(results[..], [Ok(Outcome::PaymentRecorded(_))]) => {}
                        _ => failures += 1,
                    }
                }
            }));
        }
        let mut failures = 0;
        for task in tasks {
            failures += task.await.unwrap_or(1);
        }
        failures
    });
    let elapsed = started.elapsed();
    if failures > 0 {
        bail!("{failures} pay-ins failed");
    }
    let recorded = engine.query_blocking(|p| p.payment_count())?;
    if recorded != args.payins {
        bail!("{recorded} pay-ins recorded, {} expected", args.payins);
    }
    let metrics = engine.metrics();
    engine.shutdown();
    let rate = args.payins as f64 / elapsed.as_secs_f64();
    eprintln!(
        "{} pay-ins in {:.2} s, {} commits, mean batch {:.0}, mean commit {:.2} ms",
        args.payins,
        elapsed.as_secs_f64(),
        metrics.batches_committed,
        metrics.commands_committed as f64 / metrics.batches_committed.max(1) as f64,
        metrics.commit_latency_us.sum as f64 / metrics.commit_latency_us.count.max(1) as f64 / 1e3,
    );
    println!("payins_per_sec={}", rate.round() as u64);
    Ok(())
}

async fn setup(engine: &Engine, merchants: u64) -> anyhow::Result<()> {
    let rate = |ppm| FeeSchedule {
        rate_ppm: ppm,
        ..FeeSchedule::default()
    };
    let mut commands = vec![Command::CreateChannel(NewChannel {
        id: "C1".into(),
        name: "Hot channel".into(),
        currency: Currency::CNY,
        cost: rate(2_500),
        settlement_cycle: domain::Cycle::T1,
        payout_cost: ledger::Amount::ZERO,
    })];
    commands.extend((0..merchants).map(|m| {
        Command::CreateMerchant(NewMerchant {
            id: format!("M{m}"),
            name: format!("Merchant {m}"),
            currency: Currency::CNY,
            terms: domain::MerchantTerms::with_fee(rate(3_800)),
        })
    }));
    for chunk in commands.chunks(4_096) {
        let reply = engine.submit(chunk.to_vec(), None).await?;
        let engine::SubmissionReply::Applied(results) = reply else {
            bail!("set-up was not applied");
        };
        if let Some(error) = results.iter().find_map(|r| r.as_ref().err()) {
            bail!("set-up refused: {error:?}");
        }
    }
    Ok(())
}

fn payin(n: u64, merchants: u64) -> Command {
    Command::RecordPayment(NewPayment {
        channel_id: "C1".into(),
        merchant_id: format!("M{}", n % merchants),
        channel_trade_no: format!("T{n}"),
        merchant_order_no: format!("O{n}"),
        amount: Amount::from_minor(1_000 + (n % 100_000) as i64),
        currency: Currency::CNY,
        paid_at: Timestamp(1_754_000_000_000_000),
        store_id: None,
    })
}
