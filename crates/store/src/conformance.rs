//! The behaviour every storage backend must show, as plain functions over a [`Backend`].
//!
//! A backend's test module calls [`run_all`] (or the functions one by one) with a backend that
//! opens a fresh, empty database; `open` may be called again to reopen the same database, which
//! is how durability across restarts is checked.

// This is test-support code: a failed expectation is the report.
#![allow(clippy::expect_used)]

use domain::{
    Command, FeeSchedule, NewChannel, NewMerchant, NewPayment, Outcome, PaymentId, Platform,
};
use ledger::{Amount, Currency, Timestamp};

use crate::{
    ApiKeyRecord, BatchWrite, IdempotencyRecord, PaymentPage, PaymentQuery, Store, StoreRead,
    StoreResult, load_platform,
};

/// A storage backend under test.
pub trait Backend {
    type Writer: Store;
    type Reader: StoreRead;
    /// Opens the backend's database: empty the first time, the same database afterwards.
    fn open(&self) -> StoreResult<(Self::Writer, Self::Reader)>;
}

const T0: Timestamp = Timestamp(1_754_000_000_000_000);

/// Runs every conformance check, each against a fresh backend from `fresh`.
pub fn run_all<B: Backend>(fresh: impl Fn() -> B) {
    empty_store_loads_nothing(&fresh());
    committed_batches_survive_reopen_and_rebuild_identical_state(&fresh());
    reads_find_payments_and_walk_account_history(&fresh());
    failed_commit_writes_nothing(&fresh());
    idempotency_records_round_trip_and_respect_the_horizon(&fresh());
    api_keys_are_unique_by_id(&fresh());
    devices_and_sessions_survive_reopen(&fresh());
}

fn payin(trade: &str, merchant: &str, amount: i64) -> Command {
    Command::RecordPayment(NewPayment {
        channel_id: "C1".into(),
        merchant_id: merchant.into(),
        channel_trade_no: trade.into(),
        merchant_order_no: format!("order-{trade}"),
        amount: Amount::from_minor(amount),
        currency: Currency::CNY,
        paid_at: T0,
        store_id: None,
    })
}

/// Applies commands at `now` and commits their effects as one batch.
fn apply_and_commit(
    platform: &mut Platform,
    store: &mut impl Store,
    now: Timestamp,
    commands: &[Command],
) {
    let mut inputs = Vec::new();
    for command in commands {
        let result = platform.apply(now, command);
        assert!(result.is_ok(), "{command:?}: {result:?}");
        inputs.extend(crate::log_entry(command, &result, platform.ops(), now));
    }
    let effects = platform.take_effects();
    store
        .commit(BatchWrite {
            effects: &effects,
            inputs: &inputs,
            idempotency: &[],
        })
        .expect("commit succeeds");
}

fn setup_commands() -> Vec<Command> {
    let rate = |ppm| FeeSchedule {
        rate_ppm: ppm,
        ..FeeSchedule::default()
    };
    vec![
        Command::CreateChannel(NewChannel {
            id: "C1".into(),
            name: "Channel one".into(),
            currency: Currency::CNY,
            cost: rate(2_500),
            settlement_cycle: domain::Cycle::T1,
            payout_cost: ledger::Amount::ZERO,
        }),
        Command::CreateMerchant(NewMerchant {
            id: "M1".into(),
            name: "Merchant one".into(),
            currency: Currency::CNY,
            terms: domain::MerchantTerms::with_fee(rate(3_800)),
        }),
        Command::CreateMerchant(NewMerchant {
            id: "M2".into(),
            name: "Merchant two".into(),
            currency: Currency::CNY,
            terms: domain::MerchantTerms::with_fee(rate(6_000)),
        }),
    ]
}

/// A fresh database holds nothing and loads into an empty platform.
pub fn empty_store_loads_nothing(backend: &impl Backend) {
    let (mut store, reader) = backend.open().expect("open");
    let (platform, keys) = load_platform(&mut store, Timestamp(0)).expect("load");
    assert_eq!(platform.ledger().accounts().len(), 0);
    assert_eq!(platform.payment_count(), 0);
    assert!(keys.is_empty());
    assert_eq!(reader.payment(PaymentId(1)).expect("read"), None);
    assert_eq!(reader.api_key_count().expect("count"), 0);
}

/// What was committed is there after a reopen, and loading it rebuilds the same balances,
/// journal position and trade index.
pub fn committed_batches_survive_reopen_and_rebuild_identical_state(backend: &impl Backend) {
    let mut platform = Platform::new();
    {
        let (mut store, _reader) = backend.open().expect("open");
        apply_and_commit(&mut platform, &mut store, T0, &setup_commands());
        for batch in 0..3 {
            let commands: Vec<Command> = (0..50)
                .map(|i| {
                    let merchant = if i % 3 == 0 { "M2" } else { "M1" };
                    payin(&format!("T{batch}-{i}"), merchant, 10_000 + i * 7)
                })
                .collect();
            apply_and_commit(
                &mut platform,
                &mut store,
                T0.plus_seconds(batch + 1),
                &commands,
            );
        }
    }
    let (mut store, _reader) = backend.open().expect("reopen");
    let (mut rebuilt, _) = load_platform(&mut store, Timestamp(0)).expect("load");
    assert_eq!(rebuilt.ledger().accounts(), platform.ledger().accounts());
    assert_eq!(rebuilt.ledger().last_seq(), platform.ledger().last_seq());
    assert_eq!(rebuilt.payment_count(), 150);
    assert_eq!(rebuilt.channels(), platform.channels());
    assert_eq!(rebuilt.merchants(), platform.merchants());
    assert!(
        rebuilt
            .ledger()
            .trial_balance()
            .iter()
            .all(|l| l.balanced())
    );
    // The trade index came back: a retry is recognised, a conflicting report refused.
    let original = stored_payment(backend, PaymentId(2));
    assert_eq!(
        rebuilt.apply(T0, &payin("T0-1", "M1", 10_007)),
        Ok(Outcome::PaymentExists(original))
    );
    assert!(rebuilt.apply(T0, &payin("T0-1", "M1", 1)).is_err());
}

/// Devices, sessions and their refresh-token history are rebuilt from the input log: a token
/// rotated away before a restart is still recognised as reused after it.
pub fn devices_and_sessions_survive_reopen(backend: &impl Backend) {
    use auth::{DeviceCommand, DeviceOutcome, DirectoryCommand};
    let mut platform = Platform::new();
    {
        let (mut store, _reader) = backend.open().expect("open");
        let mut commands = setup_commands();
        commands.extend([
            Command::Directory(DirectoryCommand::CreateMaster {
                merchant_id: "M1".into(),
                user_id: "boss".into(),
                username: "boss".into(),
                password_hash: "$argon2id$hash".into(),
            }),
            Command::Device(DeviceCommand::Register {
                user_id: "boss".into(),
                device_id: "d1".into(),
                thumbprint: "jkt-d1".into(),
                install_id: "i1".into(),
                name: "phone".into(),
            }),
            Command::Device(DeviceCommand::StartSession {
                user_id: "boss".into(),
                device_id: "d1".into(),
                session_id: "s1".into(),
                refresh_hash: [1; 32],
            }),
            Command::Device(DeviceCommand::Rotate {
                session_id: "s1".into(),
                presented_hash: [1; 32],
                new_hash: [2; 32],
            }),
        ]);
        apply_and_commit(&mut platform, &mut store, T0, &commands);
    }
    let (mut store, reader) = backend.open().expect("reopen");
    let (mut rebuilt, _) = load_platform(&mut store, Timestamp(0)).expect("load");
    // The device changes were audited, stored, and rebuilt identically by the replay.
    let stored = reader.audit(0, 100).expect("audit");
    let actions: Vec<&str> = stored.iter().map(|e| e.record.action.as_str()).collect();
    assert_eq!(
        actions,
        ["user_created", "device_registered", "session_started"]
    );
    assert_eq!(stored.as_slice(), rebuilt.directory().audit());
    assert_eq!(auth::verify_chain(&stored), Ok(3));
    assert_eq!(
        rebuilt.devices().device("d1"),
        platform.devices().device("d1")
    );
    assert_eq!(
        rebuilt.devices().session("s1"),
        platform.devices().session("s1")
    );
    assert!(
        rebuilt
            .devices()
            .live_session(rebuilt.directory(), "s1", "jkt-d1", T0.micros())
            .is_ok()
    );
    let replayed = rebuilt.apply(
        T0,
        &Command::Device(DeviceCommand::Rotate {
            session_id: "s1".into(),
            presented_hash: [1; 32],
            new_hash: [3; 32],
        }),
    );
    assert_eq!(
        replayed,
        Ok(Outcome::Device(DeviceOutcome::RefreshReused {
            session_id: "s1".into()
        }))
    );
}

fn stored_payment(backend: &impl Backend, id: PaymentId) -> domain::Payment {
    let (_, reader) = backend.open().expect("open");
    reader.payment(id).expect("read").expect("stored")
}

/// Payments are found by id and by the order-query filters, newest first with cursor paging;
/// an account's history is walked newest first.
pub fn reads_find_payments_and_walk_account_history(backend: &impl Backend) {
    let (mut store, reader) = backend.open().expect("open");
    let mut platform = Platform::new();
    apply_and_commit(&mut platform, &mut store, T0, &setup_commands());
    let commands: Vec<Command> = (0..10)
        .map(|i| payin(&format!("T{i}"), if i < 6 { "M1" } else { "M2" }, 1_000 + i))
        .collect();
    apply_and_commit(&mut platform, &mut store, T0.plus_seconds(10), &commands);

    let first = reader.payment(PaymentId(1)).expect("read").expect("exists");
    assert_eq!(first.channel_trade_no, "T0");
    assert_eq!(
        first.merchant_claim.minor() + first.merchant_fee.minor(),
        1_000
    );

    let query = |q: PaymentQuery| reader.payments(&q).expect("query");
    let ids = |page: &PaymentPage| page.payments.iter().map(|p| p.id.0).collect::<Vec<_>>();
    let everything = PaymentQuery {
        start: PaymentId(platform.payment_count()),
        merchant_id: None,
        merchant_order_no: None,
        channel_id: None,
        from: None,
        to: None,
        stores: None,
        limit: 100,
        scan_rows_max: 1_000,
    };
    let m1_head = platform
        .merchant_last_payment("M1")
        .expect("M1 has payments");
    let m1 = query(PaymentQuery {
        start: m1_head,
        merchant_id: Some("M1".into()),
        limit: 4,
        ..everything.clone()
    });
    assert_eq!(ids(&m1), [6, 5, 4, 3]);
    assert_eq!(m1.next_start, Some(PaymentId(2)));
    let next = query(PaymentQuery {
        start: PaymentId(2),
        merchant_id: Some("M1".into()),
        limit: 4,
        ..everything.clone()
    });
    assert_eq!(ids(&next), [2, 1]);
    assert_eq!(next.next_start, None);
    let m2 = query(PaymentQuery {
        start: platform
            .merchant_last_payment("M2")
            .expect("M2 has payments"),
        merchant_id: Some("M2".into()),
        ..everything.clone()
    });
    assert_eq!(
        ids(&m2),
        [10, 9, 8, 7],
        "the chain holds only M2's payments"
    );
    let by_order = query(PaymentQuery {
        start: platform
            .merchant_last_payment("M2")
            .expect("M2 has payments"),
        merchant_id: Some("M2".into()),
        merchant_order_no: Some("order-T7".into()),
        ..everything.clone()
    });
    assert_eq!(by_order.payments.len(), 1);
    assert_eq!(by_order.payments[0].channel_trade_no, "T7");
    let window = query(PaymentQuery {
        from: Some(T0.plus_seconds(10)),
        to: Some(T0.plus_seconds(11)),
        ..everything.clone()
    });
    assert_eq!(window.payments.len(), 10);
    assert_eq!(
        window.next_start, None,
        "older payments are before the window"
    );
    let before_window = query(PaymentQuery {
        to: Some(T0.plus_seconds(10)),
        ..everything.clone()
    });
    assert!(before_window.payments.is_empty());
    let bounded = query(PaymentQuery {
        merchant_order_no: Some("no such order".into()),
        merchant_id: Some("M1".into()),
        start: m1_head,
        scan_rows_max: 3,
        ..everything.clone()
    });
    assert!(bounded.payments.is_empty());
    assert_eq!(
        bounded.next_start,
        Some(PaymentId(3)),
        "continue after 3 rows scanned"
    );
    let foreign_start = reader.payments(&PaymentQuery {
        start: PaymentId(8),
        merchant_id: Some("M1".into()),
        ..everything.clone()
    });
    assert!(
        foreign_start.is_err(),
        "a start outside the merchant's chain is refused"
    );

    let claims = platform.merchant("M1").expect("merchant").accounts.pending;
    let last = platform.ledger().account(claims).expect("account").last_seq;
    let history = reader.account_history(claims, last, 100).expect("history");
    assert_eq!(history.len(), 6, "one claim posting per M1 payment");
    assert!(history.windows(2).all(|w| w[0].seq > w[1].seq));
    let total: i64 = history.iter().map(|t| t.amount.minor()).sum();
    let balance = platform
        .merchant_balances("M1", T0)
        .expect("balances")
        .pending;
    assert_eq!(total, balance.minor());
    assert_eq!(
        reader.transfer(history[0].seq).expect("read"),
        Some(history[0])
    );
}

/// A batch that cannot be written leaves nothing behind.
pub fn failed_commit_writes_nothing(backend: &impl Backend) {
    let (mut store, reader) = backend.open().expect("open");
    let mut platform = Platform::new();
    apply_and_commit(&mut platform, &mut store, T0, &setup_commands());
    let record = IdempotencyRecord {
        key: "k1".into(),
        request_hash: [7; 32],
        status: 201,
        body: b"{}".to_vec(),
        created_at: T0,
    };
    let empty = domain::Effects::default();
    store
        .commit(BatchWrite {
            effects: &empty,
            inputs: &[],
            idempotency: std::slice::from_ref(&record),
        })
        .expect("first use of the key");
    assert!(platform.apply(T0, &payin("X1", "M1", 500)).is_ok());
    let effects = platform.take_effects();
    let refused = store.commit(BatchWrite {
        effects: &effects,
        inputs: &[],
        idempotency: std::slice::from_ref(&record),
    });
    assert!(
        refused.is_err(),
        "a duplicate key must fail the whole batch"
    );
    assert_eq!(reader.payment(PaymentId(1)).expect("read"), None);
    let (reloaded, _) = load_platform(&mut store, Timestamp(0)).expect("load");
    assert_eq!(reloaded.payment_count(), 0);
}

/// Stored responses come back byte for byte; loading skips records older than the horizon.
pub fn idempotency_records_round_trip_and_respect_the_horizon(backend: &impl Backend) {
    let (mut store, reader) = backend.open().expect("open");
    let old = IdempotencyRecord {
        key: "key-old".into(),
        request_hash: [1; 32],
        status: 201,
        body: br#"{"id":"pay_1"}"#.to_vec(),
        created_at: T0,
    };
    let new = IdempotencyRecord {
        key: "key-new".into(),
        request_hash: [2; 32],
        status: 422,
        body: br#"{"error":{"code":"unknown_merchant"}}"#.to_vec(),
        created_at: T0.plus_seconds(100),
    };
    let empty = domain::Effects::default();
    store
        .commit(BatchWrite {
            effects: &empty,
            inputs: &[],
            idempotency: &[old.clone(), new.clone()],
        })
        .expect("commit");
    assert_eq!(reader.idempotency("key-old").expect("read"), Some(old));
    assert_eq!(reader.idempotency("key-new").expect("read"), Some(new));
    assert_eq!(reader.idempotency("absent").expect("read"), None);
    let (_, keys) = load_platform(&mut store, T0.plus_seconds(50)).expect("load");
    assert_eq!(
        keys,
        vec![("key-new".to_string(), [2; 32], T0.plus_seconds(100))]
    );
}

/// API keys are stored by id, never twice.
pub fn api_keys_are_unique_by_id(backend: &impl Backend) {
    let (_store, reader) = backend.open().expect("open");
    let key = ApiKeyRecord {
        id: "key_admin".into(),
        secret_hash: [9; 32],
        scopes: vec!["admin".into(), "payments:write".into()],
        created_at: T0,
    };
    assert!(reader.insert_api_key(&key).expect("insert"));
    assert!(
        !reader
            .insert_api_key(&ApiKeyRecord {
                secret_hash: [8; 32],
                ..key.clone()
            })
            .expect("insert")
    );
    assert_eq!(reader.api_key("key_admin").expect("read"), Some(key));
    assert_eq!(reader.api_key_count().expect("count"), 1);
}
