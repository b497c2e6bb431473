//! Clearing, settlement and advances in the pure state machine, against the worked numbers of
//! the domain brief and the chat's 01:00–05:00 hazard.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use domain::{
    AdvanceTerms, BankAccount, CalendarYear, Command, Cycle, Date, DomainError, FeeSchedule,
    FunderKind, FunderLine, MerchantTerms, NewChannel, NewChannelSettlement, NewFunder,
    NewMerchant, NewPayment, Outcome, Payout, PayoutId, PayoutKind, PayoutRequest, PayoutResult,
    PayoutStatus, Platform, SettlementTerms,
};
use ledger::{Amount, Currency, Timestamp};

fn date(text: &str) -> Date {
    Date::parse(text).unwrap()
}

/// Local time in Shanghai on a date.
fn at(day: &str, hour: u16, minute: u16) -> Timestamp {
    date(day).at_minute(hour * 60 + minute)
}

fn yuan(y: i64) -> Amount {
    Amount::from_minor(y * 100)
}

/// The State Council's 2026 holidays and make-up working days.
fn cn_2026() -> CalendarYear {
    let days = |list: &[&str]| list.iter().map(|d| date(d)).collect();
    CalendarYear {
        year: 2026,
        holidays: days(&[
            "2026-01-01",
            "2026-01-02",
            "2026-01-03",
            "2026-02-15",
            "2026-02-16",
            "2026-02-17",
            "2026-02-18",
            "2026-02-19",
            "2026-02-20",
            "2026-02-21",
            "2026-02-22",
            "2026-02-23",
            "2026-04-04",
            "2026-04-05",
            "2026-04-06",
            "2026-05-01",
            "2026-05-02",
            "2026-05-03",
            "2026-05-04",
            "2026-05-05",
            "2026-06-19",
            "2026-06-20",
            "2026-06-21",
            "2026-09-25",
            "2026-09-26",
            "2026-09-27",
            "2026-10-01",
            "2026-10-02",
            "2026-10-03",
            "2026-10-04",
            "2026-10-05",
            "2026-10-06",
            "2026-10-07",
        ]),
        workdays: days(&[
            "2026-01-04",
            "2026-02-14",
            "2026-02-28",
            "2026-05-09",
            "2026-09-20",
            "2026-10-10",
        ]),
        source: "State Council notice of 2025-11-04".into(),
    }
}

struct World {
    p: Platform,
    now: Timestamp,
}

impl World {
    /// Applies a command, then lets the next ticks (as the engine's next batches would) do
    /// the work it made due, such as marking funded lots.
    fn apply(&mut self, command: Command) -> Result<Outcome, DomainError> {
        let result = self.p.apply(self.now, &command);
        self.p.check_invariants().unwrap();
        self.p.check_records().unwrap();
        self.advance_to(self.now);
        result
    }

    /// Moves the clock, running every cutoff and settlement run due on the way.
    fn advance_to(&mut self, to: Timestamp) {
        assert!(to >= self.now);
        self.now = to;
        loop {
            let report = self.p.tick(self.now, 100);
            self.p.check_invariants().unwrap();
            if !report.more_due {
                break;
            }
        }
    }

    fn payout(
        &mut self,
        request_id: &str,
        amount: Amount,
        kind: PayoutKind,
    ) -> Result<Payout, DomainError> {
        match self.apply(Command::RequestPayout(PayoutRequest {
            request_id: request_id.into(),
            merchant_id: "M1".into(),
            amount,
            kind,
        }))? {
            Outcome::Payout { payout, .. } => Ok(payout),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn resolve(&mut self, id: PayoutId, result: PayoutResult) {
        self.apply(Command::MarkPayoutSent(id)).unwrap();
        self.apply(Command::ResolvePayout { payout: id, result })
            .unwrap();
    }

    fn balances(&self) -> domain::MerchantBalances {
        self.p.merchant_balances("M1", self.now).unwrap()
    }

    fn paid_to_merchant(&self) -> (i64, i64) {
        self.p
            .merchant_payouts("M1")
            .iter()
            .filter(|p| p.status != PayoutStatus::Failed)
            .fold((0, 0), |(a, f), p| {
                (a + p.amount.minor(), f + p.fee.minor())
            })
    }
}

fn terms(cycle: Cycle) -> MerchantTerms {
    MerchantTerms {
        settlement: SettlementTerms {
            cycle,
            payout_fee: yuan(2),
            ..SettlementTerms::default()
        },
        advance: AdvanceTerms {
            enabled: true,
            rate_ppm: 500,
            fixed_fee: yuan(2),
            ..AdvanceTerms::default()
        },
        bank_account: Some(BankAccount {
            holder: "Merchant one".into(),
            number: "6222000000000001".into(),
            bank: "ICBC".into(),
        }),
        ..MerchantTerms::with_fee(FeeSchedule {
            rate_ppm: 3_800,
            ..FeeSchedule::default()
        })
    }
}

/// Channel C1 (0.25%, T1), merchant M1 (0.38%, T1, cutoff 01:00, run 05:00, advance 0.05% +
/// 2.00), the platform's position of 1,000,000.00 as funder, the 2026 calendar; clock on
/// Tuesday 2026-11-24 09:00.
fn world(cycle: Cycle) -> World {
    let mut w = World {
        p: Platform::new(),
        now: at("2026-11-24", 9, 0),
    };
    w.apply(Command::LoadCalendarYear {
        calendar_id: "cn".into(),
        year: cn_2026(),
    })
    .unwrap();
    w.apply(Command::CreateChannel(NewChannel {
        id: "C1".into(),
        name: "Channel one".into(),
        currency: Currency::CNY,
        cost: FeeSchedule {
            rate_ppm: 2_500,
            ..FeeSchedule::default()
        },
        settlement_cycle: Cycle::T1,
        payout_cost: Amount::from_minor(100),
    }))
    .unwrap();
    w.apply(Command::CreateMerchant(NewMerchant {
        id: "M1".into(),
        name: "Merchant one".into(),
        currency: Currency::CNY,
        terms: terms(cycle),
    }))
    .unwrap();
    w.apply(Command::CreateFunder(NewFunder {
        id: "position".into(),
        name: "Platform position".into(),
        kind: FunderKind::Position,
        line: FunderLine::Overnight,
        limit: yuan(1_000_000),
        reset_minute: 0,
        cost_rate_ppm_per_day: 0,
        priority: 1,
    }))
    .unwrap();
    w
}

/// Gross 100,381.45 at 0.38% leaves claims of exactly 100,000.00.
const GROSS_FOR_100K_CLAIMS: i64 = 10_038_145;

fn payin(w: &mut World, trade: &str, gross: i64) {
    let outcome = w
        .apply(Command::RecordPayment(NewPayment {
            channel_id: "C1".into(),
            merchant_id: "M1".into(),
            channel_trade_no: trade.into(),
            merchant_order_no: trade.into(),
            amount: Amount::from_minor(gross),
            currency: Currency::CNY,
            paid_at: w.now,
            store_id: None,
        }))
        .unwrap();
    assert!(matches!(outcome, Outcome::PaymentRecorded(_)));
}

#[test]
fn chat_scenario_advance_between_cutoff_and_settlement_never_pays_twice() {
    let mut w = world(Cycle::T1);
    payin(&mut w, "T1", GROSS_FOR_100K_CLAIMS);
    assert_eq!(w.balances().pending, yuan(100_000));

    // 01:00 cutoff seals day D; at 02:00 the merchant asks for 60,000.00.
    w.advance_to(at("2026-11-25", 2, 0));
    let lot = w.p.merchant_lots("M1")[0].clone();
    assert_eq!(lot.state, domain::LotState::Sealed);
    let advance = w
        .payout("adv-1", yuan(60_000), PayoutKind::Advance)
        .unwrap();
    assert_eq!(advance.fee, yuan(32), "0.05% of 60,000.00 plus 2.00");
    assert_eq!(
        advance.channel_cost,
        yuan(1),
        "the channel's cost to carry the payout"
    );
    assert_eq!(
        w.balances().pending,
        yuan(39_968),
        "claims drawn at once: 60,032.00"
    );
    assert_eq!(w.balances().advanced, yuan(60_032));
    w.resolve(advance.id, PayoutResult::Succeeded);

    // 05:00: the lot is due (T+1) but the channel has not paid: nothing more goes out.
    w.advance_to(at("2026-11-25", 5, 30));
    assert_eq!(w.p.merchant_payouts("M1").len(), 1);

    // The channel pays lot D at 11:00: the rest becomes available, the advance is repaid.
    w.advance_to(at("2026-11-25", 11, 0));
    let funded = w
        .apply(Command::RecordChannelSettlement(NewChannelSettlement {
            channel_id: "C1".into(),
            business_date: date("2026-11-24"),
            amount: Amount::from_minor(GROSS_FOR_100K_CLAIMS - 25_095),
            bank_reference: "BANK-1".into(),
        }))
        .unwrap();
    let Outcome::ChannelSettlement { settlement, .. } = funded else {
        panic!("not a settlement");
    };
    assert_eq!(settlement.discrepancy, Amount::ZERO);
    let b = w.balances();
    assert_eq!(
        (b.pending, b.available, b.advanced),
        (Amount::ZERO, yuan(39_968), Amount::ZERO)
    );
    assert_eq!(w.p.funder("position").unwrap().used, Amount::ZERO);

    // The next run pays what is left, less its own 2.00 fee.
    w.advance_to(at("2026-11-26", 5, 0));
    let payouts = w.p.merchant_payouts("M1");
    assert_eq!(payouts.len(), 2);
    assert_eq!(payouts[0].kind, PayoutKind::Settlement);
    assert_eq!(payouts[0].amount, yuan(39_966));
    let (amounts, fees) = w.paid_to_merchant();
    assert_eq!(
        amounts + fees,
        yuan(100_000).minor(),
        "exactly the claims, never more"
    );
    assert_eq!(w.balances().available, Amount::ZERO);
}

#[test]
fn an_advance_larger_than_what_is_left_is_refused_and_settlement_pays_only_the_rest() {
    let mut w = world(Cycle::T1);
    payin(&mut w, "T1", GROSS_FOR_100K_CLAIMS);
    w.advance_to(at("2026-11-25", 2, 0));
    let largest = w.balances().advance_available;
    assert!(
        largest.minor()
            + AdvanceTerms {
                enabled: true,
                rate_ppm: 500,
                fixed_fee: yuan(2),
                ..AdvanceTerms::default()
            }
            .fee_on(largest, 0)
            .minor()
            <= yuan(100_000).minor()
    );
    assert_eq!(
        w.payout("too-much", yuan(100_000), PayoutKind::Advance)
            .unwrap_err(),
        DomainError::InsufficientFunds,
        "100,000.00 plus fees exceeds the claims"
    );
    let taken = w.payout("max", largest, PayoutKind::Advance).unwrap();
    assert!(w.balances().advance_available < yuan(1));
    w.resolve(taken.id, PayoutResult::Succeeded);
    w.apply(Command::RecordChannelSettlement(NewChannelSettlement {
        channel_id: "C1".into(),
        business_date: date("2026-11-24"),
        amount: Amount::from_minor(GROSS_FOR_100K_CLAIMS - 25_095),
        bank_reference: "BANK-1".into(),
    }))
    .unwrap();
    w.advance_to(at("2026-11-27", 6, 0));
    let (amounts, fees) = w.paid_to_merchant();
    assert!(amounts + fees <= yuan(100_000).minor());
}

#[test]
fn a_failed_payout_returns_the_claims_and_an_unknown_one_is_held() {
    let mut w = world(Cycle::T1);
    payin(&mut w, "T1", GROSS_FOR_100K_CLAIMS);
    w.advance_to(at("2026-11-25", 2, 0));
    let failed = w.payout("a1", yuan(10_000), PayoutKind::Advance).unwrap();
    w.resolve(failed.id, PayoutResult::Failed);
    assert_eq!(w.balances().pending, yuan(100_000));
    assert_eq!(w.balances().advanced, Amount::ZERO);

    let unknown = w.payout("a2", yuan(10_000), PayoutKind::Advance).unwrap();
    w.resolve(unknown.id, PayoutResult::Unknown);
    assert_eq!(
        w.p.payout(unknown.id).unwrap().status,
        PayoutStatus::Unknown
    );
    assert!(
        matches!(
            w.apply(Command::MarkPayoutSent(unknown.id)),
            Err(DomainError::PayoutStateConflict { .. })
        ),
        "an unknown payout is never re-sent"
    );
    w.apply(Command::ResolvePayout {
        payout: unknown.id,
        result: PayoutResult::Succeeded,
    })
    .unwrap();
    assert!(
        matches!(
            w.apply(Command::ResolvePayout {
                payout: unknown.id,
                result: PayoutResult::Failed
            }),
            Err(DomainError::PayoutStateConflict { .. })
        ),
        "a final status never changes"
    );
}

#[test]
fn same_request_id_returns_the_first_payout() {
    let mut w = world(Cycle::T1);
    payin(&mut w, "T1", GROSS_FOR_100K_CLAIMS);
    let first = w.payout("r1", yuan(1_000), PayoutKind::Advance).unwrap();
    let again = w.payout("r1", yuan(1_000), PayoutKind::Advance).unwrap();
    assert_eq!(first, again);
    assert_eq!(
        w.payout("r1", yuan(2_000), PayoutKind::Advance)
            .unwrap_err(),
        DomainError::PayoutRequestConflict
    );
    assert_eq!(w.p.merchant_payouts("M1").len(), 1);
}

#[test]
fn withdrawals_take_only_funded_money() {
    let mut w = world(Cycle::T1);
    payin(&mut w, "T1", GROSS_FOR_100K_CLAIMS);
    assert_eq!(
        w.payout("w1", yuan(10), PayoutKind::Withdrawal)
            .unwrap_err(),
        DomainError::InsufficientFunds
    );
    w.advance_to(at("2026-11-25", 1, 30));
    w.apply(Command::RecordChannelSettlement(NewChannelSettlement {
        channel_id: "C1".into(),
        business_date: date("2026-11-24"),
        amount: Amount::from_minor(GROSS_FOR_100K_CLAIMS - 25_095),
        bank_reference: "BANK-1".into(),
    }))
    .unwrap();
    let withdrawal = w
        .payout("w2", yuan(50_000), PayoutKind::Withdrawal)
        .unwrap();
    assert_eq!(withdrawal.fee, yuan(2));
    assert_eq!(w.balances().available, yuan(49_998));
}

#[test]
fn a_short_channel_payment_is_recorded_as_a_discrepancy() {
    let mut w = world(Cycle::T1);
    payin(&mut w, "T1", GROSS_FOR_100K_CLAIMS);
    w.advance_to(at("2026-11-25", 1, 30));
    let expected = GROSS_FOR_100K_CLAIMS - 25_095;
    let Outcome::ChannelSettlement { settlement, .. } = w
        .apply(Command::RecordChannelSettlement(NewChannelSettlement {
            channel_id: "C1".into(),
            business_date: date("2026-11-24"),
            amount: Amount::from_minor(expected - 500),
            bank_reference: "SHORT".into(),
        }))
        .unwrap()
    else {
        panic!("not a settlement");
    };
    assert_eq!(settlement.discrepancy, Amount::from_minor(-500));
    assert_eq!(
        w.balances().available,
        yuan(100_000),
        "the merchant's claims are untouched"
    );
}

#[test]
fn funding_a_day_that_is_still_open_is_refused() {
    let mut w = world(Cycle::T1);
    payin(&mut w, "T1", 1_000_000);
    assert_eq!(
        w.apply(Command::RecordChannelSettlement(NewChannelSettlement {
            channel_id: "C1".into(),
            business_date: date("2026-11-24"),
            amount: yuan(1),
            bank_reference: "EARLY".into(),
        })),
        Err(DomainError::NothingToFund)
    );
}

#[test]
fn funder_limits_and_merchant_limits_hold() {
    let mut w = world(Cycle::T1);
    let mut limited = terms(Cycle::T1);
    limited.advance.limit_per_payout = yuan(5_000);
    limited.advance.limit_daily = yuan(8_000);
    w.apply(Command::SetMerchantTerms {
        merchant_id: "M1".into(),
        terms: limited,
    })
    .unwrap();
    payin(&mut w, "T1", GROSS_FOR_100K_CLAIMS);
    assert_eq!(
        w.payout("big", yuan(6_000), PayoutKind::Advance)
            .unwrap_err(),
        DomainError::AdvanceLimitExceeded("limit_per_payout")
    );
    w.payout("ok", yuan(5_000), PayoutKind::Advance).unwrap();
    assert!(matches!(
        w.payout("over-day", yuan(5_000), PayoutKind::Advance),
        Err(DomainError::AdvanceLimitExceeded(_))
    ));
    assert!(w.balances().advance_available <= yuan(3_000));
}

#[test]
fn t1_settlement_waits_for_a_calendar_year_that_has_no_data() {
    let mut w = world(Cycle::T1);
    w.now = at("2026-12-31", 9, 0);
    payin(&mut w, "T1", GROSS_FOR_100K_CLAIMS);
    w.advance_to(at("2027-01-01", 1, 30));
    w.apply(Command::RecordChannelSettlement(NewChannelSettlement {
        channel_id: "C1".into(),
        business_date: date("2026-12-31"),
        amount: Amount::from_minor(GROSS_FOR_100K_CLAIMS - 25_095),
        bank_reference: "NYE".into(),
    }))
    .unwrap();
    w.advance_to(at("2027-01-05", 6, 0));
    assert!(
        w.p.merchant_payouts("M1").is_empty(),
        "no 2027 data: no guess"
    );
    assert_eq!(w.balances().available, yuan(100_000));
}

#[test]
fn d0_merchant_is_paid_the_same_day_as_an_advance() {
    let mut w = world(Cycle::D0);
    let mut same_day = terms(Cycle::D0);
    same_day.settlement.run_minutes = vec![15 * 60];
    w.apply(Command::SetMerchantTerms {
        merchant_id: "M1".into(),
        terms: same_day,
    })
    .unwrap();
    payin(&mut w, "T1", GROSS_FOR_100K_CLAIMS);
    w.advance_to(at("2026-11-24", 15, 1));
    let payouts = w.p.merchant_payouts("M1");
    assert_eq!(payouts.len(), 1);
    assert!(!payouts[0].funded, "paid before the channel: an advance");
    let (amounts, fees) = w.paid_to_merchant();
    assert!(amounts + fees <= yuan(100_000).minor());
    assert!(amounts > yuan(99_000).minor());
}

fn refund_request(w: &World, id: &str, trade: &str, amount: Amount) -> domain::RefundRequest {
    let payment = w.p.payment_by_trade("C1", trade).unwrap();
    domain::RefundRequest {
        request_id: id.into(),
        payment_id: payment,
        channel_id: "C1".into(),
        channel_trade_no: trade.into(),
        amount,
    }
}

#[test]
fn refunds_come_from_the_claims_and_never_exceed_the_payment() {
    let mut w = world(Cycle::T1);
    payin(&mut w, "T1", 1_000_000);
    let before = w.balances().pending;
    let first = refund_request(&w, "rf-1", "T1", yuan(4_000));
    w.apply(Command::RefundPayment(first.clone())).unwrap();
    assert_eq!(
        w.balances().pending,
        Amount::from_minor(before.minor() - 400_000)
    );
    assert_eq!(
        w.apply(Command::RefundPayment(first)).unwrap(),
        w.apply(Command::RefundPayment(refund_request(
            &w,
            "rf-1",
            "T1",
            yuan(4_000)
        )))
        .unwrap(),
        "a retry returns the first refund"
    );
    w.apply(Command::RefundPayment(refund_request(
        &w,
        "rf-2",
        "T1",
        yuan(5_000),
    )))
    .unwrap();
    assert_eq!(
        w.apply(Command::RefundPayment(refund_request(
            &w,
            "rf-3",
            "T1",
            yuan(1_001)
        ))),
        Err(DomainError::RefundExceedsPayment),
        "10,000.00 paid, 9,000.00 refunded: 1,001.00 more is too much"
    );
    // The merchant's claim (9,962.00) can carry at most 9,962.00 of refunds without fee return.
    assert_eq!(
        w.apply(Command::RefundPayment(refund_request(
            &w,
            "rf-4",
            "T1",
            yuan(1_000)
        ))),
        Err(DomainError::InsufficientFunds)
    );
    assert_eq!(
        w.p.refunded(w.p.payment_by_trade("C1", "T1").unwrap()),
        yuan(9_000)
    );
}

#[test]
fn refunds_can_return_the_fee_share_exactly() {
    let mut w = world(Cycle::T1);
    let mut t = terms(Cycle::T1);
    t.refund_fee_returned = true;
    w.apply(Command::SetMerchantTerms {
        merchant_id: "M1".into(),
        terms: t,
    })
    .unwrap();
    payin(&mut w, "T1", 1_000_000); // fee 3,800
    let mut returned = 0;
    for (i, part) in [333_333, 333_333, 333_334].into_iter().enumerate() {
        let Outcome::Refund { refund, .. } = w
            .apply(Command::RefundPayment(refund_request(
                &w,
                &format!("rf-{i}"),
                "T1",
                Amount::from_minor(part),
            )))
            .unwrap()
        else {
            panic!("not a refund");
        };
        returned += refund.fee_returned.minor();
    }
    assert_eq!(
        returned, 3_800,
        "three partial refunds return the whole fee, not a fen more"
    );
    assert_eq!(w.balances().pending, Amount::ZERO);
}

#[test]
fn a_reversal_beyond_the_claims_becomes_debt_recovered_from_later_claims() {
    let mut w = world(Cycle::T1);
    payin(&mut w, "T1", 1_000_000);
    w.advance_to(at("2026-11-25", 2, 0));
    let advance = w.payout("a", yuan(9_000), PayoutKind::Advance).unwrap();
    w.resolve(advance.id, PayoutResult::Succeeded);
    let Outcome::Refund { refund, .. } = w
        .apply(Command::ReversePayment(refund_request(
            &w,
            "cb-1",
            "T1",
            yuan(10_000),
        )))
        .unwrap()
    else {
        panic!("not a reversal");
    };
    assert!(refund.debt.is_positive());
    assert_eq!(w.balances().debt, refund.debt);
    assert_eq!(w.balances().pending, Amount::ZERO);
    payin(&mut w, "T2", 2_000_000);
    assert_eq!(
        w.balances().debt,
        Amount::ZERO,
        "the next claim repaid the debt"
    );
    assert_eq!(
        w.balances().pending,
        Amount::from_minor(2_000_000 - 7_600 - refund.debt.minor())
    );
}

#[test]
fn holds_and_freezes_stop_payouts() {
    let mut w = world(Cycle::T1);
    payin(&mut w, "T1", GROSS_FOR_100K_CLAIMS);
    w.advance_to(at("2026-11-25", 1, 30));
    w.apply(Command::RecordChannelSettlement(NewChannelSettlement {
        channel_id: "C1".into(),
        business_date: date("2026-11-24"),
        amount: Amount::from_minor(GROSS_FOR_100K_CLAIMS - 25_095),
        bank_reference: "B".into(),
    }))
    .unwrap();
    w.apply(Command::PlaceHold(domain::NewHold {
        hold_id: "risk-1".into(),
        merchant_id: "M1".into(),
        amount: yuan(90_000),
        reason: "risk review".into(),
    }))
    .unwrap();
    assert_eq!(w.balances().frozen, yuan(90_000));
    assert_eq!(
        w.payout("w", yuan(10_000), PayoutKind::Withdrawal)
            .unwrap_err(),
        DomainError::InsufficientFunds,
        "10,000.00 + 2.00 fee exceeds the 10,000.00 not held"
    );
    // The 05:00 run pays only what is not held.
    w.advance_to(at("2026-11-26", 5, 30));
    let paid: i64 =
        w.p.merchant_payouts("M1")
            .iter()
            .map(|p| p.amount.minor() + p.fee.minor())
            .sum();
    assert_eq!(paid, yuan(10_000).minor());
    w.apply(Command::SetMerchantFrozen {
        merchant_id: "M1".into(),
        frozen: true,
    })
    .unwrap();
    w.apply(Command::ReleaseHold {
        hold_id: "risk-1".into(),
    })
    .unwrap();
    assert_eq!(w.balances().available, yuan(90_000));
    assert_eq!(
        w.payout("w2", yuan(1_000), PayoutKind::Withdrawal)
            .unwrap_err(),
        DomainError::MerchantFrozen
    );
    w.advance_to(at("2026-11-27", 5, 30));
    assert_eq!(
        w.p.merchant_payouts("M1").len(),
        1,
        "a frozen merchant's run pays nothing"
    );
    w.apply(Command::SetMerchantFrozen {
        merchant_id: "M1".into(),
        frozen: false,
    })
    .unwrap();
    w.payout("w3", yuan(1_000), PayoutKind::Withdrawal).unwrap();
}

#[test]
fn the_reserve_holds_a_share_of_funded_claims_and_pays_reversals_before_debt() {
    let mut w = world(Cycle::T1);
    let mut t = terms(Cycle::T1);
    t.reserve_ratio_ppm = 100_000; // 10%
    w.apply(Command::SetMerchantTerms {
        merchant_id: "M1".into(),
        terms: t,
    })
    .unwrap();
    payin(&mut w, "T1", GROSS_FOR_100K_CLAIMS);
    w.advance_to(at("2026-11-25", 1, 30));
    w.apply(Command::RecordChannelSettlement(NewChannelSettlement {
        channel_id: "C1".into(),
        business_date: date("2026-11-24"),
        amount: Amount::from_minor(GROSS_FOR_100K_CLAIMS - 25_095),
        bank_reference: "B".into(),
    }))
    .unwrap();
    let b = w.balances();
    assert_eq!((b.available, b.frozen), (yuan(90_000), yuan(10_000)));
    assert!(
        w.p.holds()
            .iter()
            .any(|h| h.reason == "reserve" && h.amount == yuan(10_000))
    );
    w.payout("w", yuan(89_998), PayoutKind::Withdrawal).unwrap();
    assert_eq!(w.balances().available, Amount::ZERO);
    // A chargeback of 5,000.00: no free claims are left, the reserve pays it, no debt.
    let Outcome::Refund { refund, .. } = w
        .apply(Command::ReversePayment(refund_request(
            &w,
            "cb",
            "T1",
            yuan(5_000),
        )))
        .unwrap()
    else {
        panic!("not a reversal");
    };
    assert_eq!(refund.from_reserve, yuan(5_000));
    assert_eq!(refund.debt, Amount::ZERO);
    assert_eq!(w.balances().frozen, yuan(5_000));
    assert_eq!(w.balances().debt, Amount::ZERO);
}

#[test]
fn a_refund_waits_for_claims_when_the_terms_queue_refunds() {
    let mut w = world(Cycle::T1);
    let mut t = terms(Cycle::T1);
    t.refund_queue = true;
    w.apply(Command::SetMerchantTerms {
        merchant_id: "M1".into(),
        terms: t,
    })
    .unwrap();
    payin(&mut w, "T1", 1_000_000);
    w.advance_to(at("2026-11-25", 2, 0));
    let advance = w.payout("a", yuan(9_900), PayoutKind::Advance).unwrap();
    w.resolve(advance.id, PayoutResult::Succeeded);
    let Outcome::Refund { refund, .. } = w
        .apply(Command::RefundPayment(refund_request(
            &w,
            "rf",
            "T1",
            yuan(5_000),
        )))
        .unwrap()
    else {
        panic!("not a refund");
    };
    assert_eq!(
        refund.status,
        domain::RefundStatus::Queued,
        "the claims were advanced"
    );
    assert_eq!(
        w.apply(Command::RefundPayment(refund_request(
            &w,
            "rf-2",
            "T1",
            yuan(5_001)
        ))),
        Err(DomainError::RefundExceedsPayment),
        "a queued refund already counts against the payment"
    );
    payin(&mut w, "T2", 1_000_000);
    let done = w.p.refunds()[0].clone();
    assert_eq!(
        done.status,
        domain::RefundStatus::Done,
        "the next claim paid it"
    );
    assert_eq!(done.from_claims, yuan(5_000));
    // What was left of T1 (5,505 after the advance and its 6.95 fee) plus T2's claim, less it.
    assert_eq!(
        w.balances().pending,
        Amount::from_minor(5_505 + 996_200 - 500_000)
    );
}

#[test]
fn the_overall_exposure_limit_caps_every_advance() {
    let mut w = world(Cycle::T1);
    w.apply(Command::SetExposureLimit {
        limit: yuan(20_000),
    })
    .unwrap();
    payin(&mut w, "T1", GROSS_FOR_100K_CLAIMS);
    assert!(w.balances().advance_available < yuan(20_000));
    w.payout("a", yuan(15_000), PayoutKind::Advance).unwrap();
    assert!(matches!(
        w.payout("b", yuan(6_000), PayoutKind::Advance),
        Err(DomainError::AdvanceLimitExceeded(_))
    ));
    assert_eq!(w.p.total_exposure().minor(), 1_500_000 + 950);
}
