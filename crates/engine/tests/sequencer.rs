//! The sequencer against real SQLite: durable results, recovery after restart, batching,
//! idempotency keys, and fail-stop when storage fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use domain::{Command, FeeSchedule, NewChannel, NewMerchant, NewPayment, Outcome};
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
        }),
        Command::CreateMerchant(NewMerchant {
            id: "M1".into(),
            name: "Merchant one".into(),
            currency: Currency::CNY,
            fee: FeeSchedule {
                rate_ppm: 3_800,
                ..FeeSchedule::default()
            },
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
    })
}

fn pending_claims(engine: &Engine) -> i64 {
    engine
        .query_blocking(|p| p.merchant_balances("M1").unwrap().pending.minor())
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
