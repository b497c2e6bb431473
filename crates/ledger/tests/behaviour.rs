//! Behaviour of the ledger, one rule per test, driven through its public batch interface.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ledger::{
    Account, AccountFlags, AccountId, AccountKind, Amount, Currency, Event, Ledger, LedgerError,
    NewAccount, NewTransfer, Outcome, PendingStatus, Timestamp, TransferFlags, TransferId,
};

const T0: Timestamp = Timestamp(1_000_000);

fn account(id: u64, flags: AccountFlags) -> Event {
    account_in(id, flags, Currency::CNY, 0)
}

fn account_in(id: u64, flags: AccountFlags, currency: Currency, credit_limit: i64) -> Event {
    Event::CreateAccount {
        account: NewAccount {
            id: AccountId(id),
            currency,
            kind: AccountKind::Liability,
            flags,
            credit_limit: Amount::from_minor(credit_limit),
            code: 0,
            user_data: 0,
        },
        linked: false,
    }
}

fn transfer(id: u128, debit: u64, credit: u64, amount: i64) -> NewTransfer {
    NewTransfer::simple(id, debit, credit, amount)
}

fn with(t: NewTransfer, flags: TransferFlags) -> NewTransfer {
    NewTransfer {
        flags: t.flags.union(flags),
        ..t
    }
}

/// A ledger with accounts 1 and 2 (no limits) and 3 (debits must not exceed credits).
fn ledger() -> Ledger {
    let mut ledger = Ledger::new();
    let results = ledger.execute(
        T0,
        &[
            account(1, AccountFlags::NONE),
            account(2, AccountFlags::NONE),
            account(3, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
        ],
    );
    assert!(results.iter().all(|r| *r == Ok(Outcome::Created)));
    ledger
}

fn run(ledger: &mut Ledger, transfers: &[NewTransfer]) -> Vec<Result<Outcome, LedgerError>> {
    let events: Vec<Event> = transfers
        .iter()
        .copied()
        .map(Event::CreateTransfer)
        .collect();
    ledger.execute(T0, &events)
}

fn balances(ledger: &Ledger, id: u64) -> (i64, i64, i64, i64) {
    let a: &Account = ledger.account(AccountId(id)).expect("account exists");
    let b = a.balances;
    (
        b.debits_pending.minor(),
        b.debits_posted.minor(),
        b.credits_pending.minor(),
        b.credits_posted.minor(),
    )
}

#[test]
fn single_phase_transfer_moves_posted_balances() {
    let mut l = ledger();
    assert_eq!(
        run(&mut l, &[transfer(10, 1, 2, 500)]),
        [Ok(Outcome::Created)]
    );
    assert_eq!(balances(&l, 1), (0, 500, 0, 0));
    assert_eq!(balances(&l, 2), (0, 0, 0, 500));
}

#[test]
fn retry_with_same_content_returns_exists_and_changes_nothing() {
    let mut l = ledger();
    run(&mut l, &[transfer(10, 1, 2, 500)]);
    let seq = l.last_seq();
    assert_eq!(
        run(&mut l, &[transfer(10, 1, 2, 500)]),
        [Ok(Outcome::AlreadyExists)]
    );
    assert_eq!(l.last_seq(), seq);
    assert_eq!(balances(&l, 2), (0, 0, 0, 500));
}

#[test]
fn same_id_with_different_content_is_refused() {
    let mut l = ledger();
    run(&mut l, &[transfer(10, 1, 2, 500)]);
    assert_eq!(
        run(&mut l, &[transfer(10, 1, 2, 501)]),
        [Err(LedgerError::ExistsWithDifferentContent)]
    );
    assert_eq!(balances(&l, 2), (0, 0, 0, 500));
}

#[test]
fn invalid_transfers_get_typed_errors() {
    let cases = [
        (transfer(0, 1, 2, 1), LedgerError::IdMustNotBeZero),
        (transfer(11, 1, 1, 1), LedgerError::AccountsMustBeDifferent),
        (transfer(12, 1, 2, 0), LedgerError::AmountMustBePositive),
        (transfer(13, 1, 2, -5), LedgerError::AmountMustBePositive),
        (transfer(14, 9, 2, 1), LedgerError::DebitAccountNotFound),
        (transfer(15, 1, 9, 1), LedgerError::CreditAccountNotFound),
        (transfer(16, 3, 2, 1), LedgerError::ExceedsCredits),
        (
            NewTransfer {
                timeout_seconds: 5,
                ..transfer(17, 1, 2, 1)
            },
            LedgerError::TimeoutRequiresPending,
        ),
        (
            with(
                transfer(18, 1, 2, 1),
                TransferFlags::PENDING.union(TransferFlags::VOID_PENDING),
            ),
            LedgerError::FlagsAreMutuallyExclusive,
        ),
        (
            with(transfer(19, 0, 0, 0), TransferFlags::POST_PENDING),
            LedgerError::PendingIdRequired,
        ),
    ];
    for (t, expected) in cases {
        let mut l = ledger();
        assert_eq!(run(&mut l, &[t]), [Err(expected)], "{t:?}");
        assert_eq!(l.last_seq(), 0, "nothing journalled for {t:?}");
    }
}

#[test]
fn accounts_of_different_currencies_cannot_exchange() {
    let mut l = ledger();
    let usd = Currency::parse("USD").expect("valid code");
    l.execute(T0, &[account_in(4, AccountFlags::NONE, usd, 0)]);
    assert_eq!(
        run(&mut l, &[transfer(10, 1, 4, 1)]),
        [Err(LedgerError::CurrenciesMustBeEqual)]
    );
}

#[test]
fn credit_limit_allows_an_overdraft_up_to_the_limit() {
    let mut l = Ledger::new();
    l.execute(
        T0,
        &[
            account_in(
                1,
                AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                Currency::CNY,
                100,
            ),
            account(2, AccountFlags::NONE),
        ],
    );
    assert_eq!(
        run(&mut l, &[transfer(10, 1, 2, 100), transfer(11, 1, 2, 1)]),
        [Ok(Outcome::Created), Err(LedgerError::ExceedsCredits)]
    );
}

#[test]
fn credits_limit_flag_refuses_credits_beyond_debits() {
    let mut l = Ledger::new();
    l.execute(
        T0,
        &[
            account(1, AccountFlags::NONE),
            account(2, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
        ],
    );
    assert_eq!(
        run(&mut l, &[transfer(10, 1, 2, 1)]),
        [Err(LedgerError::ExceedsDebits)]
    );
}

#[test]
fn account_retry_and_conflict() {
    let mut l = ledger();
    assert_eq!(
        l.execute(T0, &[account(1, AccountFlags::NONE)]),
        [Ok(Outcome::AlreadyExists)]
    );
    assert_eq!(
        l.execute(
            T0,
            &[account(1, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)]
        ),
        [Err(LedgerError::ExistsWithDifferentContent)]
    );
}

#[test]
fn pending_then_partial_post_releases_the_rest() {
    let mut l = ledger();
    run(&mut l, &[transfer(1, 1, 2, 1000)]);
    run(
        &mut l,
        &[with(transfer(10, 2, 3, 700), TransferFlags::PENDING)],
    );
    assert_eq!(balances(&l, 2), (700, 0, 0, 1000));
    assert_eq!(balances(&l, 3), (0, 0, 700, 0));
    let post = NewTransfer {
        pending_id: TransferId(10),
        ..with(transfer(11, 0, 0, 400), TransferFlags::POST_PENDING)
    };
    assert_eq!(run(&mut l, &[post]), [Ok(Outcome::Created)]);
    assert_eq!(balances(&l, 2), (0, 400, 0, 1000));
    assert_eq!(balances(&l, 3), (0, 0, 0, 400));
    assert_eq!(
        l.pending_transfer(TransferId(10)).map(|p| p.status),
        Some(PendingStatus::Posted)
    );
    let again = NewTransfer {
        id: TransferId(12),
        ..post
    };
    assert_eq!(
        run(&mut l, &[again]),
        [Err(LedgerError::PendingTransferAlreadyPosted)]
    );
}

#[test]
fn post_amount_zero_posts_in_full_and_over_amount_is_refused() {
    let mut l = ledger();
    run(
        &mut l,
        &[with(transfer(10, 1, 2, 700), TransferFlags::PENDING)],
    );
    let over = NewTransfer {
        pending_id: TransferId(10),
        ..with(transfer(11, 0, 0, 701), TransferFlags::POST_PENDING)
    };
    assert_eq!(
        run(&mut l, &[over]),
        [Err(LedgerError::ExceedsPendingAmount)]
    );
    let full = NewTransfer {
        amount: Amount::ZERO,
        ..over
    };
    assert_eq!(run(&mut l, &[full]), [Ok(Outcome::Created)]);
    assert_eq!(balances(&l, 2), (0, 0, 0, 700));
}

#[test]
fn void_releases_the_reservation() {
    let mut l = ledger();
    run(
        &mut l,
        &[with(transfer(10, 1, 2, 700), TransferFlags::PENDING)],
    );
    let wrong_accounts = NewTransfer {
        pending_id: TransferId(10),
        ..with(transfer(12, 2, 1, 0), TransferFlags::VOID_PENDING)
    };
    assert_eq!(
        run(&mut l, &[wrong_accounts]),
        [Err(LedgerError::AccountsMustMatchPending)]
    );
    let void = NewTransfer {
        pending_id: TransferId(10),
        ..with(transfer(11, 1, 2, 0), TransferFlags::VOID_PENDING)
    };
    assert_eq!(run(&mut l, &[void]), [Ok(Outcome::Created)]);
    assert_eq!(balances(&l, 1), (0, 0, 0, 0));
}

#[test]
fn pending_transfer_expires_after_its_timeout() {
    let mut l = ledger();
    let pending = NewTransfer {
        timeout_seconds: 60,
        ..with(transfer(10, 1, 2, 700), TransferFlags::PENDING)
    };
    run(&mut l, &[pending]);
    assert_eq!(l.expire_due(T0.plus_seconds(59)), 0);
    assert_eq!(balances(&l, 1), (700, 0, 0, 0));
    assert_eq!(l.expire_due(T0.plus_seconds(60)), 1);
    assert_eq!(balances(&l, 1), (0, 0, 0, 0));
    let post = NewTransfer {
        pending_id: TransferId(10),
        ..with(transfer(11, 0, 0, 0), TransferFlags::POST_PENDING)
    };
    assert_eq!(
        l.execute(T0.plus_seconds(61), &[Event::CreateTransfer(post)]),
        [Err(LedgerError::PendingTransferExpired)]
    );
}

#[test]
fn linked_chain_fails_as_one() {
    let mut l = ledger();
    let results = run(
        &mut l,
        &[
            with(transfer(10, 1, 2, 5), TransferFlags::LINKED),
            with(transfer(11, 1, 2, 6), TransferFlags::LINKED),
            transfer(12, 3, 2, 1), // account 3 has no credits: fails
            transfer(13, 1, 2, 7),
        ],
    );
    assert_eq!(
        results,
        [
            Err(LedgerError::LinkedEventFailed),
            Err(LedgerError::LinkedEventFailed),
            Err(LedgerError::ExceedsCredits),
            Ok(Outcome::Created),
        ]
    );
    assert_eq!(balances(&l, 2), (0, 0, 0, 7));
    // The rolled-back ids are free to use again.
    assert_eq!(
        run(&mut l, &[transfer(10, 1, 2, 5)]),
        [Ok(Outcome::Created)]
    );
}

#[test]
fn chain_left_open_at_end_of_batch_is_refused() {
    let mut l = ledger();
    let results = run(
        &mut l,
        &[
            transfer(9, 1, 2, 1),
            with(transfer(10, 1, 2, 5), TransferFlags::LINKED),
        ],
    );
    assert_eq!(
        results,
        [Ok(Outcome::Created), Err(LedgerError::LinkedEventChainOpen)]
    );
    assert_eq!(balances(&l, 2), (0, 0, 0, 1));
}

#[test]
fn overflowing_balance_is_refused() {
    let mut l = ledger();
    run(&mut l, &[transfer(10, 1, 2, i64::MAX)]);
    assert_eq!(
        run(&mut l, &[transfer(11, 1, 2, 1)]),
        [Err(LedgerError::OverflowsBalance)]
    );
}

#[test]
fn history_links_each_entry_to_the_previous_one_of_each_account() {
    let mut l = ledger();
    run(
        &mut l,
        &[
            transfer(10, 1, 2, 1),
            transfer(11, 2, 1, 1),
            transfer(12, 1, 3, 1),
        ],
    );
    let journal = l.take_journal();
    let entries: Vec<_> = journal.transfers.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        entries[2].debit_prev_seq, 2,
        "account 1 was last touched by seq 2"
    );
    assert_eq!(entries[2].credit_prev_seq, 0, "first entry of account 3");
    assert_eq!(entries[1].debit_prev_seq, 1);
    assert_eq!(entries[1].credit_prev_seq, 1);
    assert_eq!(l.account(AccountId(1)).map(|a| a.last_seq), Some(3));
}
