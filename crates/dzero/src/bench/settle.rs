//! `dzero bench settle`: cutoff and settlement for many merchants holding many pay-ins, while
//! pay-ins keep arriving. Set-up (not timed) records the pay-ins of day D through the engine
//! into SQLite. Timed: the 01:00 cutoff of D+1 for every merchant, the channel's money for D
//! arriving (every lot funded), and the 05:00 settlement run that pays every merchant — all
//! on a test clock, while a steady load of single pay-ins measures their latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use domain::{
    BankAccount, Command, Cycle, Date, FeeSchedule, MerchantTerms, NewChannel,
    NewChannelSettlement, NewMerchant, NewPayment, SettlementTerms,
};
use engine::{Engine, EngineConfig, TestClock};
use ledger::{Amount, Currency, Timestamp};
use store::SqliteStore;

#[derive(Clone, Debug, clap::Args)]
pub struct SettleArgs {
    /// Merchants settled.
    #[arg(long, default_value_t = 100_000)]
    pub merchants: u64,
    /// Pay-ins recorded on day D before the cutoff.
    #[arg(long, default_value_t = 10_000_000)]
    pub payins: u64,
    /// Single pay-ins per second sent during the timed part, to measure their latency.
    #[arg(long, default_value_t = 2_000)]
    pub load_per_sec: u64,
    /// Data directory; a fresh temporary one when absent.
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
}

const DAY: &str = "2026-11-24";
/// Commands per submission while loading.
const LOAD_CHUNK: usize = 4_096;

fn at(day: Date, minute: u16) -> Timestamp {
    day.at_minute(minute)
}

fn payin(n: u64, merchants: u64, paid_at: Timestamp, prefix: &str) -> Command {
    Command::RecordPayment(NewPayment {
        channel_id: "C1".into(),
        merchant_id: format!("M{}", n % merchants),
        channel_trade_no: format!("{prefix}{n}"),
        merchant_order_no: format!("O{n}"),
        amount: Amount::from_minor(10_000 + (n % 90_000) as i64),
        currency: Currency::CNY,
        paid_at,
        store_id: None,
    })
}

fn applied(results: &[domain::CommandResult]) -> anyhow::Result<()> {
    if let Some(error) = results.iter().find_map(|r| r.as_ref().err()) {
        bail!("refused: {error:?}");
    }
    Ok(())
}

/// Waits until the engine has done every piece of scheduled work due at `to`.
fn settle_clock(engine: &Engine, to: Timestamp) -> anyhow::Result<()> {
    while engine.query_blocking(move |p| p.has_due_work(to))? {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

pub fn run(args: &SettleArgs) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let (store, _reader) = SqliteStore::open(&dir).context("opening the store")?;
    let day = Date::parse(DAY).context("bench date")?;
    let clock = Arc::new(TestClock::starting_at(at(day, 9 * 60)));
    let engine = Engine::start(store, EngineConfig::default(), clock.clone())?;

    // Set-up: calendar, channel, merchants, pay-ins of day D.
    let started = Instant::now();
    let mut setup: Vec<Command> = crate::calendars::parse_json(crate::calendars::BUNDLED_CN)?
        .into_iter()
        .map(|(calendar_id, year)| Command::LoadCalendarYear { calendar_id, year })
        .collect();
    setup.push(Command::CreateChannel(NewChannel {
        id: "C1".into(),
        name: "Channel one".into(),
        currency: Currency::CNY,
        cost: FeeSchedule {
            rate_ppm: 2_500,
            ..FeeSchedule::default()
        },
        settlement_cycle: Cycle::T1,
        payout_cost: Amount::from_minor(100),
    }));
    applied(&engine.submit_blocking(setup)?)?;
    let terms = MerchantTerms {
        settlement: SettlementTerms {
            cycle: Cycle::T1,
            payout_fee: Amount::from_minor(200),
            ..SettlementTerms::default()
        },
        bank_account: Some(BankAccount {
            holder: "merchant".into(),
            number: "6222000000000001".into(),
            bank: "bench".into(),
        }),
        ..MerchantTerms::with_fee(FeeSchedule {
            rate_ppm: 3_800,
            ..FeeSchedule::default()
        })
    };
    let merchants: Vec<Command> = (0..args.merchants)
        .map(|m| {
            Command::CreateMerchant(NewMerchant {
                id: format!("M{m}"),
                name: format!("Merchant {m}"),
                currency: Currency::CNY,
                terms: terms.clone(),
            })
        })
        .collect();
    for chunk in merchants.chunks(LOAD_CHUNK) {
        applied(&engine.submit_blocking(chunk.to_vec())?)?;
    }
    let next = Arc::new(AtomicU64::new(0));
    let paid_at = at(day, 9 * 60);
    let loaders: Vec<_> = (0..2)
        .map(|_| {
            let (engine, next, total, merchants) = (
                engine.clone(),
                Arc::clone(&next),
                args.payins,
                args.merchants,
            );
            std::thread::spawn(move || -> anyhow::Result<()> {
                loop {
                    let start = next.fetch_add(LOAD_CHUNK as u64, Ordering::Relaxed);
                    if start >= total {
                        return Ok(());
                    }
                    let end = (start + LOAD_CHUNK as u64).min(total);
                    let chunk = (start..end)
                        .map(|n| payin(n, merchants, paid_at, "T"))
                        .collect();
                    applied(&engine.submit_blocking(chunk)?)?;
                    if end % 1_000_000 < LOAD_CHUNK as u64 {
                        eprintln!("  {end} pay-ins loaded");
                    }
                }
            })
        })
        .collect();
    for loader in loaders {
        loader
            .join()
            .map_err(|_| anyhow::anyhow!("loader panicked"))??;
    }
    let expected: i64 = engine.query_blocking(|p| {
        p.merchants()
            .iter()
            .flat_map(|m| p.unsettled_lots(&m.id))
            .map(|lot| lot.expected_from_channel.minor())
            .sum()
    })?;
    eprintln!(
        "set-up: {} merchants, {} pay-ins in {:.1} s",
        args.merchants,
        args.payins,
        started.elapsed().as_secs_f64()
    );

    // A steady load of single pay-ins during the timed part, timed one by one.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (engine, stop, merchants, rate) = (
            engine.clone(),
            Arc::clone(&stop),
            args.merchants,
            args.load_per_sec.max(1),
        );
        std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let interval = Duration::from_secs_f64(1.0 / rate as f64);
                let mut tasks = Vec::new();
                let mut scheduled = Instant::now();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep_until(scheduled.into()).await;
                    let engine = engine.clone();
                    let command = payin(n, merchants, paid_at, "LIVE");
                    let start = scheduled;
                    tasks.push(tokio::spawn(async move {
                        let reply = engine.submit(vec![command], None).await;
                        (start.elapsed(), reply.is_ok())
                    }));
                    n += 1;
                    scheduled += interval;
                }
                let mut latencies = Vec::new();
                for task in tasks {
                    let (latency, ok) = task.await?;
                    if !ok {
                        bail!("a live pay-in failed");
                    }
                    latencies.push(latency);
                }
                Ok(latencies)
            })
        })
    };
    std::thread::sleep(Duration::from_millis(500));

    let timed = Instant::now();
    let cutoff = at(day.plus_days(1), 60);
    clock.advance_to(cutoff);
    settle_clock(&engine, cutoff)?;
    let cutoff_done = timed.elapsed();
    let funded = engine.submit_blocking(vec![Command::RecordChannelSettlement(
        NewChannelSettlement {
            channel_id: "C1".into(),
            business_date: day,
            amount: Amount::from_minor(expected),
            bank_reference: "BENCH".into(),
        },
    )])?;
    applied(&funded)?;
    // The lots become funded over the next ticks: wait until every one is.
    settle_clock(&engine, cutoff)?;
    let funds_done = timed.elapsed();
    let run = at(day.plus_days(1), 5 * 60);
    clock.advance_to(run);
    settle_clock(&engine, run)?;
    let elapsed = timed.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut latencies = load
        .join()
        .map_err(|_| anyhow::anyhow!("load thread panicked"))??;

    let payouts = engine.query_blocking(|p| p.payouts().len())?;
    let settled: i64 = engine.query_blocking(|p| {
        p.payouts()
            .iter()
            .map(|po| po.amount.minor() + po.fee.minor())
            .sum()
    })?;
    let claims_left: i64 = engine.query_blocking(|p| {
        p.merchants()
            .iter()
            .filter_map(|m| p.merchant_balances(&m.id, Timestamp(0)))
            .map(|b| b.available.minor())
            .sum()
    })?;
    let healthy = engine.query_blocking(|p| p.check_invariants())?;
    engine.shutdown();
    if let Err(broken) = healthy {
        bail!("invariant broken after settlement: {broken}");
    }
    if payouts as u64 != args.merchants {
        bail!("{payouts} payouts for {} merchants", args.merchants);
    }
    if claims_left != 0 {
        bail!("{claims_left} of funded claims left unpaid");
    }
    latencies.sort();
    let p99 = latencies
        .get(latencies.len() * 99 / 100)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3);
    eprintln!(
        "timed: cutoff {:.2} s, funds arrival {:.2} s, settlement run {:.2} s; {payouts} payouts of {:.2} yuan in all; {} live pay-ins, p99 {p99:.1} ms",
        cutoff_done.as_secs_f64(),
        (funds_done - cutoff_done).as_secs_f64(),
        (elapsed - funds_done).as_secs_f64(),
        settled as f64 / 100.0,
        latencies.len(),
    );
    println!(
        "settle_seconds={:.2} payin_p99_ms={p99:.1}",
        elapsed.as_secs_f64()
    );
    Ok(())
}
