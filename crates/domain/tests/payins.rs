//! Pay-ins through the platform state machine: the worked example's numbers, retries,
//! refusals that change nothing, and balance invariants over random pay-ins.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use domain::{
    Command, Cycle, DomainError, FeeSchedule, MerchantTerms, NewChannel, NewMerchant, NewPayment,
    Outcome, Platform,
};
use ledger::{AccountId, Amount, Currency, Timestamp};
use proptest::prelude::*;

const NOW: Timestamp = Timestamp(1_754_000_000_000_000);

fn rate(ppm: u32) -> FeeSchedule {
    FeeSchedule {
        rate_ppm: ppm,
        ..FeeSchedule::default()
    }
}

/// The worked example's set-up: channel C1 at 0.25%, merchant M1 at 0.38%.
fn platform() -> Platform {
    let mut p = Platform::new();
    let commands = [
        Command::CreateChannel(NewChannel {
            id: "C1".into(),
            name: "Channel one".into(),
            currency: Currency::CNY,
            cost: rate(2_500),
            settlement_cycle: Cycle::T1,
            payout_cost: Amount::from_minor(100),
        }),
        Command::CreateMerchant(NewMerchant {
            id: "M1".into(),
            name: "Merchant one".into(),
            currency: Currency::CNY,
            terms: MerchantTerms::with_fee(rate(3_800)),
        }),
    ];
    for command in &commands {
        p.apply(NOW, command).expect("set-up succeeds");
    }
    p
}

fn payin(trade: &str, amount: i64) -> Command {
    Command::RecordPayment(NewPayment {
        channel_id: "C1".into(),
        merchant_id: "M1".into(),
        channel_trade_no: trade.into(),
        merchant_order_no: format!("order-{trade}"),
        amount: Amount::from_minor(amount),
        currency: Currency::CNY,
        paid_at: NOW,
        store_id: None,
    })
}

fn balance(p: &Platform, account: AccountId) -> i64 {
    p.ledger()
        .account(account)
        .unwrap()
        .posted_balance()
        .minor()
}

#[test]
fn worked_example_numbers() {
    let mut p = platform();
    let Ok(Outcome::PaymentRecorded(payment)) = p.apply(NOW, &payin("T1", 1_000_000)) else {
        panic!("pay-in refused");
    };
    assert_eq!(payment.merchant_fee.minor(), 3_800);
    assert_eq!(payment.channel_cost.minor(), 2_500);
    assert_eq!(payment.merchant_claim.minor(), 996_200);
    assert_eq!(payment.margin().minor(), 1_300);
    assert_eq!(payment.expected_from_channel().minor(), 997_500);

    let channel = p.channel("C1").unwrap().receivable_account;
    let platform = p.platform_accounts()[0];
    assert_eq!(balance(&p, channel), 997_500);
    assert_eq!(balance(&p, platform.fee_income), 3_800);
    assert_eq!(balance(&p, platform.channel_cost), 2_500);
    assert_eq!(
        p.merchant_balances("M1", NOW).unwrap().pending.minor(),
        996_200
    );
    assert!(p.ledger().trial_balance().iter().all(|l| l.balanced()));
}

#[test]
fn repeated_trade_returns_the_first_payment_and_changes_nothing() {
    let mut p = platform();
    let Ok(Outcome::PaymentRecorded(first)) = p.apply(NOW, &payin("T1", 1_000)) else {
        panic!("pay-in refused");
    };
    let seq = p.ledger().last_seq();
    let later = Timestamp(NOW.micros() + 1_000_000);
    assert_eq!(
        p.apply(later, &payin("T1", 1_000)),
        Ok(Outcome::PaymentExists((*first).clone()))
    );
    assert_eq!(
        p.apply(NOW, &payin("T1", 1_001)),
        Err(DomainError::DuplicateTradeWithDifferentContent)
    );
    assert_eq!(p.ledger().last_seq(), seq);
    assert_eq!(p.payment_count(), 1);
}

#[test]
fn refusals_change_nothing() {
    let mut p = platform();
    let mut unknown_channel = payin("T2", 100);
    if let Command::RecordPayment(n) = &mut unknown_channel {
        n.channel_id = "nope".into();
    }
    let mut usd = payin("T3", 100);
    if let Command::RecordPayment(n) = &mut usd {
        n.currency = Currency::parse("USD").unwrap();
    }
    let cases = [
        (payin("T4", 0), DomainError::AmountMustBePositive),
        (payin("T5", -1), DomainError::AmountMustBePositive),
        (payin("T6", i64::MAX), DomainError::AmountTooLarge),
        (payin("bad trade no", 100), DomainError::InvalidId),
        (unknown_channel, DomainError::UnknownChannel),
        (usd, DomainError::CurrencyMismatch),
    ];
    for (command, expected) in cases {
        assert_eq!(p.apply(NOW, &command), Err(expected), "{command:?}");
    }
    assert_eq!(p.ledger().last_seq(), 0);
    assert_eq!(p.payment_count(), 0);
    assert!(p.take_effects().payments.is_empty());
}

#[test]
fn creating_a_party_twice_is_idempotent_but_conflicting_content_is_refused() {
    let mut p = platform();
    let same = Command::CreateMerchant(NewMerchant {
        id: "M1".into(),
        name: "Merchant one".into(),
        currency: Currency::CNY,
        terms: MerchantTerms::with_fee(rate(3_800)),
    });
    assert!(matches!(
        p.apply(NOW, &same),
        Ok(Outcome::Merchant { created: false, .. })
    ));
    let different = Command::CreateMerchant(NewMerchant {
        id: "M1".into(),
        name: "Merchant one".into(),
        currency: Currency::CNY,
        terms: MerchantTerms::with_fee(rate(3_000)),
    });
    assert_eq!(
        p.apply(NOW, &different),
        Err(DomainError::MerchantExistsWithDifferentContent)
    );
}

#[test]
fn a_fee_that_eats_the_whole_amount_is_refused() {
    let mut p = Platform::new();
    p.apply(
        NOW,
        &Command::CreateChannel(NewChannel {
            id: "C1".into(),
            name: "c".into(),
            currency: Currency::CNY,
            cost: rate(0),
            settlement_cycle: Cycle::T1,
            payout_cost: Amount::from_minor(100),
        }),
    )
    .unwrap();
    p.apply(
        NOW,
        &Command::CreateMerchant(NewMerchant {
            id: "M1".into(),
            name: "m".into(),
            currency: Currency::CNY,
            terms: MerchantTerms {
                allow_below_cost: true,
                ..MerchantTerms::with_fee(FeeSchedule {
                    rate_ppm: 0,
                    min: Amount::from_minor(100),
                    max: Amount::ZERO,
                })
            },
        }),
    )
    .unwrap();
    assert_eq!(
        p.apply(NOW, &payin("T1", 100)),
        Err(DomainError::FeeNotBelowAmount)
    );
    assert!(p.apply(NOW, &payin("T2", 101)).is_ok());
}

proptest! {
    /// Over any sequence of pay-ins (with retries), the books balance, the merchant's pending
    /// claims equal the sum of recorded claims, and the channel owes gross less cost.
    #[test]
    fn payins_keep_the_books_balanced(amounts in proptest::collection::vec((0u8..20, 1i64..10_000_000), 1..60)) {
        let mut p = platform();
        let mut claims = 0i64;
        let mut expected_from_channel = 0i64;
        for (trade, amount) in amounts {
            match p.apply(NOW, &payin(&format!("T{trade}"), amount)) {
                Ok(Outcome::PaymentRecorded(payment)) => {
                    prop_assert_eq!(payment.merchant_claim.minor() + payment.merchant_fee.minor(), amount);
                    claims += payment.merchant_claim.minor();
                    expected_from_channel += payment.expected_from_channel().minor();
                }
                Ok(Outcome::PaymentExists(_)) | Err(DomainError::DuplicateTradeWithDifferentContent) => {}
                other => prop_assert!(false, "unexpected {other:?}"),
            }
            prop_assert!(p.ledger().trial_balance().iter().all(|l| l.balanced()));
        }
        prop_assert_eq!(p.merchant_balances("M1", NOW).unwrap().pending.minor(), claims);
        let receivable = p.channel("C1").unwrap().receivable_account;
        prop_assert_eq!(balance(&p, receivable), expected_from_channel);
    }
}

#[test]
fn a_fee_below_the_channel_cost_is_refused_unless_the_terms_allow_it() {
    let mut p = platform();
    let cheap = |allow: bool| MerchantTerms {
        allow_below_cost: allow,
        ..MerchantTerms::with_fee(rate(2_000))
    };
    p.apply(
        NOW,
        &Command::SetMerchantTerms {
            merchant_id: "M1".into(),
            terms: cheap(false),
        },
    )
    .unwrap();
    assert_eq!(
        p.apply(NOW, &payin("T1", 1_000_000)),
        Err(DomainError::FeeBelowFloor)
    );
    p.apply(
        NOW,
        &Command::SetMerchantTerms {
            merchant_id: "M1".into(),
            terms: cheap(true),
        },
    )
    .unwrap();
    assert!(p.apply(NOW, &payin("T1", 1_000_000)).is_ok());
    let lots = p.merchant_lots("M1");
    assert_eq!(
        lots[0].below_floor_payins, 1,
        "the exception is counted where it happened"
    );
}
