//! The sequencer against real SQLite: durable results, recovery after restart, batching,
//! idempotency keys, and fail-stop when storage fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use domain::{
    Command, Cycle, FeeSchedule, MerchantTerms, NewChannel, NewMerchant, NewPayment, Outcome,
};
use engine::{Clock, Engine, EngineConfig, EngineError, Idempotency, SubmissionReply, SystemClock};
use ledger::{Amount, Currency, Timestamp};
use store::{BatchWrite, Recovery, SqliteStore, Store, StoreError, StoreRead, StoreResult};

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

fn start(dir: &std::path::Path) -> (Engine, store::SqliteReader) {
    let (store, reader) = SqliteStore::open(dir).unwrap();
    (
        Engine::start(store, EngineConfig::default(), clock()).unwrap(),
        reader,
    )
}

fn setup() -> Vec<Command> {
    vec![
        Command::CreateChannel(NewChannel {
            id: "C1".into(),
            name: "Channel one".into(),
            currency: Currency::CNY,
            cost: FeeSchedule {
                rate_ppm: 2_500,
                ..FeeSchedule::default()
            },
            settlement_cycle: Cycle::T1,
            payout_cost: Amount::from_minor(100),
        }),
        Command::CreateMerchant(NewMerchant {
            id: "M1".into(),
            name: "Merchant one".into(),
            currency: Currency::CNY,
            terms: MerchantTerms::with_fee(FeeSchedule {
                rate_ppm: 3_800,
                ..FeeSchedule::default()
            }),
        }),
    ]
}

fn payin(trade: &str, amount: i64) -> Command {
    Command::RecordPayment(NewPayment {
        channel_id: "C1".into(),
        merchant_id: "M1".into(),
        channel_trade_no: trade.into(),
        merchant_order_no: trade.into(),
        amount: Amount::from_minor(amount),
        currency: Currency::CNY,
        paid_at: Timestamp(1),
        store_id: None,
    })
}

fn pending_claims(engine: &Engine) -> i64 {
    engine
        .query_blocking(|p| {
            p.merchant_balances("M1", Timestamp(0))
                .unwrap()
                .pending
                .minor()
        })
        .unwrap()
}

#[test]
fn acknowledged_payins_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, reader) = start(dir.path());
    engine.submit_blocking(setup()).unwrap();
    let results = engine
        .submit_blocking(vec![payin("T1", 1_000_000), payin("T2", 500)])
        .unwrap();
    assert!(
        matches!(&results[0], Ok(Outcome::PaymentRecorded(p)) if p.merchant_claim.minor() == 996_200)
    );
    assert!(reader.payment(domain::PaymentId(2)).unwrap().is_some());
    let before = pending_claims(&engine);
    engine.shutdown();

    let (engine, _) = start(dir.path());
    assert_eq!(pending_claims(&engine), before);
    // The trade index came back too: a retry is recognised.
    let retry = engine
        .submit_blocking(vec![payin("T1", 1_000_000)])
        .unwrap();
    assert!(matches!(retry[0], Ok(Outcome::PaymentExists(_))));
    engine.shutdown();
}

#[test]
fn concurrent_submissions_are_grouped_into_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = start(dir.path());
    engine.submit_blocking(setup()).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    let results = engine
                        .submit_blocking(vec![payin(&format!("T{t}-{i}"), 100 + i)])
                        .unwrap();
                    assert!(results[0].is_ok());
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let metrics = engine.metrics();
    assert_eq!(metrics.commands_committed, 2 + 1_600);
    assert!(
        metrics.batches_committed < 1_600,
        "1,600 concurrent pay-ins took {} commits",
        metrics.batches_committed
    );
    assert_eq!(metrics.queue_depth, 0);
    assert_eq!(engine.query_blocking(|p| p.payment_count()).unwrap(), 1_600);
    engine.shutdown();
}

fn keyed(key: &str, hash: u8) -> Idempotency {
    Idempotency {
        key: key.into(),
        request_hash: [hash; 32],
        render: Box::new(|results| (201, format!("{} results", results.len()).into_bytes())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_replay_or_conflict_even_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, reader) = start(dir.path());
    engine.submit(setup(), None).await.unwrap();
    let first = engine
        .submit(vec![payin("T1", 100)], Some(keyed("k1", 1)))
        .await
        .unwrap();
    assert!(matches!(first, SubmissionReply::Applied(_)));
    let stored = reader.idempotency("k1").unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.body.as_slice()),
        (201, &b"1 results"[..])
    );
    let again = engine
        .submit(vec![payin("T1", 100)], Some(keyed("k1", 1)))
        .await
        .unwrap();
    assert!(matches!(again, SubmissionReply::Replay));
    let other = engine
        .submit(vec![payin("T9", 100)], Some(keyed("k1", 2)))
        .await
        .unwrap();
    assert!(matches!(other, SubmissionReply::KeyConflict));
    engine.shutdown();

    let (engine, _) = start(dir.path());
    let after = engine
        .submit(vec![payin("T9", 100)], Some(keyed("k1", 2)))
        .await
        .unwrap();
    assert!(matches!(after, SubmissionReply::KeyConflict));
    assert_eq!(engine.query(|p| p.payment_count()).await.unwrap(), 1);
    engine.shutdown();
}

/// A store that fails every commit after the first `healthy` ones.
struct FailingStore {
    inner: SqliteStore,
    healthy: usize,
    commits: Arc<AtomicUsize>,
}

impl Store for FailingStore {
    fn load(&mut self, recovery: &mut dyn Recovery, since: Timestamp) -> StoreResult<()> {
        self.inner.load(recovery, since)
    }
    fn commit(&mut self, batch: BatchWrite<'_>) -> StoreResult<()> {
        if self.commits.fetch_add(1, Ordering::SeqCst) >= self.healthy {
            return Err(StoreError::Database("disk on fire".into()));
        }
        self.inner.commit(batch)
    }
}

#[test]
fn a_failed_commit_stops_the_engine_and_answers_nobody_with_success() {
    let dir = tempfile::tempdir().unwrap();
    let (inner, reader) = SqliteStore::open(dir.path()).unwrap();
    let store = FailingStore {
        inner,
        healthy: 1,
        commits: Arc::new(AtomicUsize::new(0)),
    };
    let engine = Engine::start(store, EngineConfig::default(), clock()).unwrap();
    engine.submit_blocking(setup()).unwrap();
    assert_eq!(
        engine.submit_blocking(vec![payin("T1", 100)]).unwrap_err(),
        EngineError::Stopped
    );
    assert!(engine.is_stopped());
    assert_eq!(
        engine.submit_blocking(vec![payin("T2", 100)]).unwrap_err(),
        EngineError::Stopped
    );
    assert!(reader.payment(domain::PaymentId(1)).unwrap().is_none());
    drop(engine);

    // Restarting on the real store shows only what was acknowledged.
    let (engine, _) = start(dir.path());
    assert_eq!(engine.query_blocking(|p| p.payment_count()).unwrap(), 0);
    assert_eq!(pending_claims(&engine), 0);
    engine.shutdown();
}

fn local(day: &str, hour: u16) -> Timestamp {
    domain::Date::parse(day).unwrap().at_minute(hour * 60)
}

/// Moves the test clock and waits until the sequencer has done all work due by then.
fn move_clock(engine: &Engine, clock: &engine::TestClock, to: Timestamp) {
    assert!(clock.advance_to(to));
    while engine.query_blocking(move |p| p.has_due_work(to)).unwrap() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Everything a restart must reproduce: operations, payouts, lots and balances.
fn state_of(engine: &Engine) -> String {
    engine
        .query_blocking(|p| {
            format!(
                "{} {:?} {:?} {:?} {:?}",
                p.ops(),
                p.payouts(),
                p.merchant_lots("M1"),
                p.merchant_balances("M1", Timestamp(0)),
                p.ledger().trial_balance()
            )
        })
        .unwrap()
}

#[test]
fn scheduled_work_fires_on_the_clock_catches_up_after_downtime_and_replays_identically() {
    use domain::{
        AdvanceTerms, BankAccount, CalendarYear, FunderKind, FunderLine, NewChannelSettlement,
        NewFunder, PayoutKind, PayoutRequest, PayoutResult,
    };
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(engine::TestClock::starting_at(local("2026-11-24", 9)));
    let start_engine = || {
        let (store, _) = SqliteStore::open(dir.path()).unwrap();
        let config = EngineConfig {
            idle_tick_ms: 5,
            ..EngineConfig::default()
        };
        Engine::start(store, config, clock.clone()).unwrap()
    };
    let engine = start_engine();
    let mut terms = MerchantTerms::with_fee(FeeSchedule {
        rate_ppm: 3_800,
        ..FeeSchedule::default()
    });
    terms.advance = AdvanceTerms {
        enabled: true,
        rate_ppm: 500,
        fixed_fee: Amount::from_minor(200),
        ..AdvanceTerms::default()
    };
    terms.bank_account = Some(BankAccount {
        holder: "M1".into(),
        number: "1".into(),
        bank: "b".into(),
    });
    let mut commands = setup();
    commands[1] = Command::CreateMerchant(NewMerchant {
        id: "M1".into(),
        name: "Merchant one".into(),
        currency: Currency::CNY,
        terms,
    });
    commands.push(Command::LoadCalendarYear {
        calendar_id: "cn".into(),
        year: CalendarYear {
            year: 2026,
            holidays: Default::default(),
            workdays: Default::default(),
            source: "test".into(),
        },
    });
    commands.push(Command::CreateFunder(NewFunder {
        id: "position".into(),
        name: "Position".into(),
        kind: FunderKind::Position,
        line: FunderLine::Overnight,
        limit: Amount::from_minor(100_000_000),
        reset_minute: 0,
        cost_rate_ppm_per_day: 0,
        priority: 1,
    }));
    commands.push(payin("T1", 10_038_145));
    assert!(
        engine
            .submit_blocking(commands)
            .unwrap()
            .iter()
            .all(Result::is_ok)
    );

    move_clock(&engine, &clock, local("2026-11-25", 2));
    let advance = engine
        .submit_blocking(vec![Command::RequestPayout(PayoutRequest {
            request_id: "adv".into(),
            merchant_id: "M1".into(),
            amount: Amount::from_minor(6_000_000),
            kind: PayoutKind::Advance,
        })])
        .unwrap();
    let Ok(Outcome::Payout { payout, .. }) = &advance[0] else {
        panic!("advance refused: {advance:?}");
    };
    let id = payout.id;
    engine
        .submit_blocking(vec![
            Command::MarkPayoutSent(id),
            Command::ResolvePayout {
                payout: id,
                result: PayoutResult::Succeeded,
            },
        ])
        .unwrap();
    move_clock(&engine, &clock, local("2026-11-25", 11));
    let funded = engine
        .submit_blocking(vec![Command::RecordChannelSettlement(
            NewChannelSettlement {
                channel_id: "C1".into(),
                business_date: domain::Date::parse("2026-11-24").unwrap(),
                amount: Amount::from_minor(10_038_145 - 25_095),
                bank_reference: "B1".into(),
            },
        )])
        .unwrap();
    assert!(funded[0].is_ok(), "{funded:?}");
    move_clock(&engine, &clock, local("2026-11-25", 12));
    engine.shutdown();

    // The server is down over the next 05:00 run; on restart it catches up, in order.
    assert!(clock.advance_to(local("2026-11-26", 6)));
    let engine = start_engine();
    while engine
        .query_blocking(|p| p.has_due_work(local("2026-11-26", 6)))
        .unwrap()
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let payouts = engine.query_blocking(|p| p.payouts().len()).unwrap();
    assert_eq!(
        payouts, 2,
        "the missed 05:00 run paid the rest after restart"
    );
    let before = state_of(&engine);
    engine.shutdown();

    let engine = start_engine();
    assert_eq!(state_of(&engine), before);
    engine.shutdown();
}
