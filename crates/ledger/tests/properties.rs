//! Property tests: for random batches of accounts and transfers (single-phase, pending, post,
//! void, linked chains, retries with reused ids, timeouts) the ledger's invariants always hold.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;

use ledger::{
    AccountFlags, AccountId, AccountKind, Amount, Currency, Event, Journal, Ledger, NewAccount,
    NewTransfer, Outcome, Timestamp, TransferFlags, TransferId,
};

const ACCOUNTS: u64 = 6;

fn currency_of(id: u64) -> Currency {
    // Accounts 1..=4 are CNY, the rest USD, so cross-currency attempts happen too.
    if id <= 4 {
        Currency::CNY
    } else {
        Currency::parse("USD").unwrap_or(Currency::CNY)
    }
}

fn account_event(id: u64, flag_choice: u8, limit: i64) -> Event {
    let flags = match flag_choice % 3 {
        0 => AccountFlags::NONE,
        1 => AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        _ => AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
    };
    Event::CreateAccount {
        account: NewAccount {
            id: AccountId(id),
            currency: currency_of(id),
            kind: AccountKind::ALL[(id % 5) as usize],
            flags,
            credit_limit: Amount::from_minor(limit),
            code: 0,
            user_data: id,
        },
        linked: false,
    }
}

fn transfer_event() -> impl Strategy<Value = Event> {
    (
        1u128..40,       // id: a small pool so that retries and conflicts happen
        0u64..=ACCOUNTS, // debit (0 = not found / take from pending)
        0u64..=ACCOUNTS, // credit
        -2i64..2_000,    // amount, including zero and negatives
        0u8..6,          // kind: plain, plain, pending, post, void, pending with timeout
        1u128..40,       // pending id
        any::<bool>(),   // linked
    )
        .prop_map(|(id, debit, credit, amount, kind, pending_id, linked)| {
            let mut t = NewTransfer::simple(id, debit, credit, amount);
            match kind {
                2 => t.flags = TransferFlags::PENDING,
                3 => {
                    t.flags = TransferFlags::POST_PENDING;
                    t.pending_id = TransferId(pending_id);
                    t.amount = Amount::from_minor(amount.max(0) / 3);
                }
                4 => {
                    t.flags = TransferFlags::VOID_PENDING;
                    t.pending_id = TransferId(pending_id);
                    t.amount = Amount::ZERO;
                }
                5 => {
                    t.flags = TransferFlags::PENDING;
                    t.timeout_seconds = 30;
                }
                _ => {}
            }
            if linked {
                t.flags = t.flags.union(TransferFlags::LINKED);
            }
            Event::CreateTransfer(t)
        })
}

fn batches() -> impl Strategy<Value = (Vec<(u8, i64)>, Vec<Vec<Event>>)> {
    (
        proptest::collection::vec((0u8..3, 0i64..500), ACCOUNTS as usize),
        proptest::collection::vec(proptest::collection::vec(transfer_event(), 1..12), 1..20),
    )
}

/// Invariants that must hold after every batch.
fn check_invariants(ledger: &Ledger) {
    for line in ledger.trial_balance() {
        assert!(line.balanced(), "unbalanced: {line:?}");
    }
    for account in ledger.accounts() {
        assert!(account.within_limits(), "limit violated: {account:?}");
        let b = account.balances;
        for figure in [
            b.debits_pending,
            b.debits_posted,
            b.credits_pending,
            b.credits_posted,
        ] {
            assert!(figure.minor() >= 0, "negative figure: {account:?}");
        }
    }
}

/// Rebuilds a ledger from journals, as the engine does from storage on start.
fn replay(journals: &[Journal]) -> Ledger {
    let mut rebuilt = Ledger::new();
    for journal in journals {
        for account in &journal.accounts {
            rebuilt
                .replay_account(account)
                .expect("stored account replays");
        }
        for (transfer, fingerprint) in &journal.transfers {
            rebuilt
                .replay_transfer(transfer, *fingerprint)
                .expect("stored transfer replays");
        }
    }
    rebuilt
}

fn snapshot(
    ledger: &Ledger,
) -> (
    Vec<ledger::Account>,
    Vec<Option<ledger::PendingTransfer>>,
    u64,
) {
    let pending = (1u128..40)
        .map(|id| ledger.pending_transfer(TransferId(id)).copied())
        .collect();
    (ledger.accounts().to_vec(), pending, ledger.last_seq())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn invariants_hold_and_journal_replays_to_identical_state((accounts, batches) in batches()) {
        let mut ledger = Ledger::new();
        let setup: Vec<Event> = accounts
            .iter()
            .enumerate()
            .map(|(i, (flags, limit))| account_event(i as u64 + 1, *flags, *limit))
            .collect();
        let mut journals = Vec::new();
        let mut now = Timestamp(1_000_000);
        ledger.execute(now, &setup);
        journals.push(ledger.take_journal());
        let mut accepted: Vec<Event> = Vec::new();
        for batch in &batches {
            now = now.plus_seconds(7);
            ledger.expire_due(now);
            let results = ledger.execute(now, batch);
            prop_assert_eq!(results.len(), batch.len());
            for (event, result) in batch.iter().zip(&results) {
                if *result == Ok(Outcome::Created) {
                    accepted.push(*event);
                }
            }
            let journal = ledger.take_journal();
            let created = results.iter().filter(|r| **r == Ok(Outcome::Created)).count();
            let new_transfers = journal.transfers.iter().filter(|(t, _)| t.id.0 != 0).count();
            prop_assert_eq!(created, new_transfers, "one journal entry per created transfer");
            journals.push(journal);
            check_invariants(&ledger);
        }

        // Replaying the journal rebuilds the identical state.
        let rebuilt = replay(&journals);
        prop_assert_eq!(snapshot(&rebuilt), snapshot(&ledger));

        // Retrying every accepted transfer, unlinked, changes nothing.
        let before = snapshot(&ledger);
        let retries: Vec<Event> = accepted
            .iter()
            .map(|event| match event {
                Event::CreateTransfer(t) => Event::CreateTransfer(NewTransfer {
                    flags: t.flags.without(TransferFlags::LINKED),
                    ..*t
                }),
                other => *other,
            })
            .collect();
        let results = ledger.execute(now, &retries);
        prop_assert!(results.iter().all(|r| *r == Ok(Outcome::AlreadyExists)), "{results:?}");
        prop_assert_eq!(snapshot(&ledger), before);
    }
}
