//! A deterministic simulator: seeded random interleavings of pay-ins (and retries), cutoffs
//! and settlement runs (through clock jumps, holiday stretches included), withdrawals,
//! advances, payout success, failure and unknown, channel funds arrival (full, short, excess,
//! late), refunds and reversals, holds and freezes, terms changes and crash/restart (the state rebuilt by replaying the logged inputs,
//! with the last unacknowledged batch lost). Every invariant is checked after every step.
//!
//! A failure prints its seed and step; `DZERO_SIM_SEED=<seed>` replays it exactly.
//! `DZERO_SIM_STEPS=<n>` sets the steps per seed (default 10,000); `DZERO_SIM_SEEDS=<n>` how
//! many seeds to run (default 1) — the long mode is, for example, `DZERO_SIM_STEPS=1000000`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use domain::{
    AdvanceTerms, BankAccount, CalendarYear, Command, Cycle, Date, FeeSchedule, FunderKind,
    FunderLine, LotState, MerchantTerms, NewChannel, NewChannelSettlement, NewFunder, NewMerchant,
    NewPayment, Outcome, PayoutKind, PayoutRequest, PayoutResult, PayoutStatus, Platform,
    SettlementTerms,
};
use ledger::{Amount, Currency, Timestamp};

/// xorshift64*: small, fast and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// An input as the engine logs it.
#[derive(Clone, Debug)]
enum Input {
    Command(Box<Command>),
    Tick(usize),
}

const MERCHANTS: [&str; 3] = ["M1", "M2", "M3"];
const CHANNELS: [(&str, Cycle); 2] = [("C1", Cycle::T1), ("C2", Cycle::D1)];
/// Scheduled work per tick: small, so runs are spread over several ticks as in production.
const TICK_WORK_MAX: usize = 2;

fn cn_2026() -> CalendarYear {
    let day = |d: &str| Date::parse(d).unwrap();
    let range = |from: &str, to: &str| {
        let (a, b) = (day(from), day(to));
        (a.days()..=b.days())
            .map(Date::from_days)
            .collect::<Vec<_>>()
    };
    let mut holidays: std::collections::BTreeSet<Date> = Default::default();
    for (a, b) in [
        ("2026-01-01", "2026-01-03"),
        ("2026-02-15", "2026-02-23"),
        ("2026-04-04", "2026-04-06"),
        ("2026-05-01", "2026-05-05"),
        ("2026-06-19", "2026-06-21"),
        ("2026-09-25", "2026-09-27"),
        ("2026-10-01", "2026-10-07"),
    ] {
        holidays.extend(range(a, b));
    }
    CalendarYear {
        year: 2026,
        holidays,
        workdays: [
            "2026-01-04",
            "2026-02-14",
            "2026-02-28",
            "2026-05-09",
            "2026-09-20",
            "2026-10-10",
        ]
        .into_iter()
        .map(day)
        .collect(),
        source: "simulator".into(),
    }
}

fn terms(rng: &mut Rng, index: usize) -> MerchantTerms {
    let cycle = [Cycle::T1, Cycle::D1, Cycle::T0, Cycle::D0][rng.below(4) as usize];
    let number = match index {
        0 => "6222000000000001",
        1 => "6222000000000000", // the sandbox convention: a failing account
        _ => "6222000000009999",
    };
    MerchantTerms {
        settlement: SettlementTerms {
            cycle,
            cutoff_minute: [0, 60, 120][rng.below(3) as usize],
            run_minutes: vec![300, 900],
            settle_before_funds: rng.chance(30),
            payout_fee: Amount::from_minor(rng.below(300) as i64),
        },
        advance: AdvanceTerms {
            enabled: rng.chance(80),
            rate_ppm: rng.below(2_000) as u32,
            rate_ppm_per_day: rng.below(300) as u32,
            fixed_fee: Amount::from_minor(rng.below(300) as i64),
            max_ratio_ppm: [0, 500_000, 900_000][rng.below(3) as usize],
            limit_per_payout: Amount::from_minor([0, 5_000_000][rng.below(2) as usize]),
            limit_daily: Amount::from_minor([0, 8_000_000][rng.below(2) as usize]),
            limit_outstanding: Amount::from_minor([0, 20_000_000][rng.below(2) as usize]),
            allow_below_cost_of_funds: rng.chance(50),
        },
        bank_account: Some(BankAccount {
            holder: format!("M{index}"),
            number: number.into(),
            bank: "sim".into(),
        }),
        refund_fee_returned: rng.chance(50),
        refund_queue: rng.chance(50),
        reserve_ratio_ppm: [0, 0, 50_000, 200_000][rng.below(4) as usize],
        ..MerchantTerms::with_fee(FeeSchedule {
            rate_ppm: 3_000 + rng.below(3_000) as u32,
            ..FeeSchedule::default()
        })
    }
}

struct Sim {
    rng: Rng,
    platform: Platform,
    now: Timestamp,
    /// Inputs acknowledged (committed) so far.
    log: Vec<(Timestamp, Input)>,
    /// Inputs of the batch not yet committed: lost in a crash.
    uncommitted: Vec<(Timestamp, Input)>,
    trades: u64,
    requests: u64,
    references: u64,
    /// What the last step did, for a failure report.
    last: String,
    /// Payments recorded: (id, channel, trade number).
    payments: Vec<(domain::PaymentId, String, String)>,
    holds: u64,
    /// Payouts seen so far, and those still in flight, so a step need not scan them all.
    payouts_seen: usize,
    open_payouts: Vec<domain::PayoutId>,
    crashes: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut sim = Sim {
            rng: Rng(seed | 1),
            platform: Platform::new(),
            now: Date::parse("2026-01-05").unwrap().at_minute(9 * 60),
            log: Vec::new(),
            uncommitted: Vec::new(),
            trades: 0,
            requests: 0,
            references: 0,
            last: String::new(),
            payments: Vec::new(),
            holds: 0,
            payouts_seen: 0,
            open_payouts: Vec::new(),
            crashes: 0,
        };
        sim.command(Command::LoadCalendarYear {
            calendar_id: "cn".into(),
            year: cn_2026(),
        });
        // Long runs outlive 2026: later years are synthetic (weekends only), so T cycles keep
        // settling instead of waiting forever for data.
        for year in 2027..=2300 {
            sim.command(Command::LoadCalendarYear {
                calendar_id: "cn".into(),
                year: CalendarYear {
                    year,
                    holidays: Default::default(),
                    workdays: Default::default(),
                    source: "simulator, synthetic".into(),
                },
            });
        }
        for (id, cycle) in CHANNELS {
            sim.command(Command::CreateChannel(NewChannel {
                id: id.into(),
                name: id.into(),
                currency: Currency::CNY,
                cost: FeeSchedule {
                    rate_ppm: 2_500,
                    ..FeeSchedule::default()
                },
                settlement_cycle: cycle,
                payout_cost: Amount::from_minor(100),
            }));
        }
        for (index, id) in MERCHANTS.iter().enumerate() {
            let terms = terms(&mut sim.rng, index);
            sim.command(Command::CreateMerchant(NewMerchant {
                id: (*id).into(),
                name: (*id).into(),
                currency: Currency::CNY,
                terms,
            }));
        }
        for (id, line, limit, priority) in [
            ("intraday-bank", FunderLine::Intraday, 3_000_000, 1),
            ("overnight-bank", FunderLine::Overnight, 10_000_000, 2),
            ("position", FunderLine::Overnight, 30_000_000, 3),
        ] {
            sim.command(Command::CreateFunder(NewFunder {
                id: id.into(),
                name: id.into(),
                kind: if id == "position" {
                    FunderKind::Position
                } else {
                    FunderKind::CreditLine
                },
                line,
                limit: Amount::from_minor(limit),
                reset_minute: 0,
                cost_rate_ppm_per_day: 100,
                priority,
            }));
        }
        sim.commit();
        sim
    }

    /// Applies a command; what changed the state is logged (uncommitted until `commit`). Work
    /// the command made due (lots to mark funded) waits for the next tick, as in the engine.
    fn command(&mut self, command: Command) -> Option<Outcome> {
        let result = self.platform.apply(self.now, &command);
        self.last = format!("{command:?} -> {result:?}");
        if result.as_ref().is_ok_and(Outcome::changed_state) {
            self.uncommitted
                .push((self.now, Input::Command(Box::new(command))));
        }
        result.ok()
    }

    fn commit(&mut self) {
        self.log.append(&mut self.uncommitted);
    }

    fn tick_until_idle(&mut self) {
        loop {
            let report = self.platform.tick(self.now, TICK_WORK_MAX);
            if report.changed {
                self.uncommitted
                    .push((self.now, Input::Tick(TICK_WORK_MAX)));
            }
            self.platform.check_invariants().unwrap();
            if !report.more_due {
                break;
            }
        }
    }

    /// A crash: the uncommitted batch is lost, the state is rebuilt from the log alone.
    fn crash_and_restart(&mut self) {
        self.crashes += 1;
        self.uncommitted.clear();
        let mut rebuilt = Platform::new();
        for (at, input) in &self.log {
            match input {
                Input::Command(command) => {
                    let result = rebuilt.apply(*at, command);
                    assert!(
                        result.as_ref().is_ok_and(Outcome::changed_state),
                        "replay of {command:?} gave {result:?}"
                    );
                }
                Input::Tick(work) => assert!(rebuilt.tick(*at, *work).changed),
            }
        }
        rebuilt.check_invariants().unwrap();
        rebuilt.check_records().unwrap();
        assert_eq!(rebuilt.ops() as usize, self.log.len());
        self.platform = rebuilt;
        // Payouts of the lost batch are gone; ids past the end are dropped when picked.
        self.payouts_seen = self.payouts_seen.min(self.platform.payouts().len());
    }

    fn merchant(&mut self) -> &'static str {
        MERCHANTS[self.rng.below(MERCHANTS.len() as u64) as usize]
    }

    fn step(&mut self) {
        self.last = String::from("(no command)");
        let roll = self.rng.below(100);
        match roll {
            0..=33 => {
                let retry = self.trades > 0 && self.rng.chance(10);
                let trade = if retry {
                    self.rng.below(self.trades)
                } else {
                    self.trades += 1;
                    self.trades - 1
                };
                // Everything about a trade follows from its number, so a retry repeats it exactly.
                let amount = 1_000 + (trade * 7_919) % 2_000_000;
                let merchant = MERCHANTS[(trade % 3) as usize];
                let channel = CHANNELS[((trade / 3) % 2) as usize].0;
                let outcome = self.command(Command::RecordPayment(NewPayment {
                    channel_id: channel.into(),
                    merchant_id: merchant.into(),
                    channel_trade_no: format!("{channel}-T{trade}"),
                    merchant_order_no: format!("O{trade}"),
                    amount: Amount::from_minor(amount as i64),
                    currency: Currency::CNY,
                    paid_at: self.now,
                    store_id: None,
                }));
                if let Some(Outcome::PaymentRecorded(p)) = outcome {
                    self.payments
                        .push((p.id, p.channel_id.clone(), p.channel_trade_no.clone()));
                }
            }
            34 => self.tick_until_idle(),
            35..=49 => {
                // Time passes: minutes, hours, or (rarely) a long holiday stretch.
                let minutes = match self.rng.below(100) {
                    0..=1 => 60 * 24 * (1 + self.rng.below(9)),
                    2..=31 => 60 * (1 + self.rng.below(12)),
                    _ => 1 + self.rng.below(60),
                };
                self.now = Timestamp(self.now.micros() + minutes as i64 * 60_000_000);
                self.tick_until_idle();
            }
            50..=59 => {
                let merchant = self.merchant();
                let available = self
                    .platform
                    .merchant_balances(merchant, self.now)
                    .unwrap()
                    .advance_available;
                let amount = if available.is_positive() && self.rng.chance(50) {
                    available.minor() - self.rng.below(available.minor() as u64 / 2 + 1) as i64
                } else {
                    1 + self.rng.below(3_000_000) as i64
                };
                self.requests += 1;
                self.command(Command::RequestPayout(PayoutRequest {
                    request_id: format!("r{}", self.requests),
                    merchant_id: merchant.into(),
                    amount: Amount::from_minor(amount.max(1)),
                    kind: PayoutKind::Advance,
                }));
            }
            60..=66 => {
                let merchant = self.merchant();
                let available = self
                    .platform
                    .merchant_balances(merchant, self.now)
                    .unwrap()
                    .available;
                self.requests += 1;
                let amount = 1 + self.rng.below(available.minor().max(1) as u64) as i64;
                self.command(Command::RequestPayout(PayoutRequest {
                    request_id: format!("r{}", self.requests),
                    merchant_id: merchant.into(),
                    amount: Amount::from_minor(amount),
                    kind: PayoutKind::Withdrawal,
                }));
            }
            67..=81 => {
                // The payout channel answers one payout.
                let all = self.platform.payouts();
                self.open_payouts
                    .extend(all[self.payouts_seen.min(all.len())..].iter().map(|p| p.id));
                self.payouts_seen = all.len();
                if self.open_payouts.is_empty() {
                    return;
                }
                let pick = self.rng.below(self.open_payouts.len() as u64) as usize;
                let Some(payout) = self.platform.payout(self.open_payouts[pick]) else {
                    self.open_payouts.swap_remove(pick);
                    return;
                };
                if !payout.status.in_flight() {
                    self.open_payouts.swap_remove(pick);
                    return;
                }
                let (id, status, number) =
                    (payout.id, payout.status, payout.bank_account.number.clone());
                match status {
                    PayoutStatus::Created => {
                        self.command(Command::MarkPayoutSent(id));
                    }
                    PayoutStatus::Sent => {
                        let result = if number.ends_with("0000") {
                            PayoutResult::Failed
                        } else if number.ends_with("9999") && self.rng.chance(60) {
                            PayoutResult::Unknown
                        } else {
                            PayoutResult::Succeeded
                        };
                        self.command(Command::ResolvePayout { payout: id, result });
                    }
                    _ => {
                        // An operator resolves an unknown payout, either way.
                        let result = if self.rng.chance(50) {
                            PayoutResult::Succeeded
                        } else {
                            PayoutResult::Failed
                        };
                        self.command(Command::ResolvePayout { payout: id, result });
                    }
                }
            }
            82..=90 => {
                // A channel's money arrives for some sealed day: full, short or excess.
                let candidates: Vec<(String, Date, i64)> = MERCHANTS
                    .iter()
                    .flat_map(|m| self.platform.unsettled_lots(m))
                    .filter(|lot| lot.state == LotState::Sealed)
                    .map(|lot| {
                        (
                            self.platform.channels()[lot.channel as usize].id.clone(),
                            lot.business_date,
                            0,
                        )
                    })
                    .collect();
                if candidates.is_empty() {
                    return;
                }
                let (channel, date, _) =
                    candidates[self.rng.below(candidates.len() as u64) as usize].clone();
                let expected: i64 = MERCHANTS
                    .iter()
                    .flat_map(|m| self.platform.unsettled_lots(m))
                    .filter(|lot| {
                        lot.business_date == date
                            && self.platform.channels()[lot.channel as usize].id == channel
                            && lot.state != LotState::Funded
                    })
                    .map(|lot| lot.expected_from_channel.minor())
                    .sum();
                let amount = match self.rng.below(10) {
                    0 => expected - self.rng.below(expected as u64 / 10 + 1) as i64,
                    1 => expected + self.rng.below(1_000) as i64,
                    _ => expected,
                };
                self.references += 1;
                self.command(Command::RecordChannelSettlement(NewChannelSettlement {
                    channel_id: channel,
                    business_date: date,
                    amount: Amount::from_minor(amount.max(1)),
                    bank_reference: format!("B{}", self.references),
                }));
            }
            92 => {
                // A refund (or, one time in three, a channel reversal) of a recorded payment.
                if self.payments.is_empty() {
                    return;
                }
                let (payment, channel, trade) =
                    self.payments[self.rng.below(self.payments.len() as u64) as usize].clone();
                self.requests += 1;
                let request = domain::RefundRequest {
                    request_id: format!("rf{}", self.requests),
                    payment_id: payment,
                    channel_id: channel,
                    channel_trade_no: trade,
                    amount: Amount::from_minor(1 + self.rng.below(600_000) as i64),
                };
                if self.rng.chance(33) {
                    self.command(Command::ReversePayment(request));
                } else {
                    self.command(Command::RefundPayment(request));
                }
            }
            93 => {
                // Risk: hold some available money, release a hold, or freeze/unfreeze.
                let merchant = self.merchant();
                match self.rng.below(3) {
                    0 => {
                        self.holds += 1;
                        let amount = 1 + self.rng.below(500_000) as i64;
                        self.command(Command::PlaceHold(domain::NewHold {
                            hold_id: format!("h{}", self.holds),
                            merchant_id: merchant.into(),
                            amount: Amount::from_minor(amount),
                            reason: "simulated risk".into(),
                        }));
                    }
                    1 if self.holds > 0 => {
                        let hold_id = format!("h{}", 1 + self.rng.below(self.holds));
                        self.command(Command::ReleaseHold { hold_id });
                    }
                    2 if self.rng.chance(20) => {
                        let limit = [0, 5_000_000, 20_000_000][self.rng.below(3) as usize];
                        self.command(Command::SetExposureLimit {
                            limit: Amount::from_minor(limit),
                        });
                    }
                    _ => {
                        let frozen = self.rng.chance(30);
                        self.command(Command::SetMerchantFrozen {
                            merchant_id: merchant.into(),
                            frozen,
                        });
                    }
                }
            }
            91 => {
                let index = self.rng.below(MERCHANTS.len() as u64) as usize;
                let terms = terms(&mut self.rng, index);
                self.command(Command::SetMerchantTerms {
                    merchant_id: MERCHANTS[index].into(),
                    terms,
                });
            }
            94..=97 => self.commit(),
            // A crash replays the whole log, so long runs crash less often as the log grows,
            // keeping the total replay work near linear.
            _ if (self.rng.below(self.log.len() as u64 + 1)) < 5_000 => self.crash_and_restart(),
            _ => self.commit(),
        }
    }
}

fn run(seed: u64, steps: u64) {
    let mut sim = Sim::new(seed);
    for step in 0..steps {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            sim.step();
            sim.platform.check_invariants()
        }));
        let outcome = outcome.map(|checked| {
            checked.and_then(|()| {
                if step % 1_000 == 999 {
                    sim.platform.check_records()
                } else {
                    Ok(())
                }
            })
        });
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(broken)) => panic!(
                "seed {seed} step {step}: invariant broken: {broken}\nlast command: {}",
                sim.last
            ),
            Err(_) => {
                panic!("seed {seed} step {step}: panicked (replay with DZERO_SIM_SEED={seed})")
            }
        }
    }
    let payouts = sim.platform.payouts().len();
    let payments = sim.platform.payment_count();
    let refunds = sim.platform.refunds().len();
    eprintln!(
        "seed {seed}: {steps} steps, {payments} pay-ins, {payouts} payouts, {refunds} refunds and reversals, {} crashes, ops {}",
        sim.crashes,
        sim.platform.ops()
    );
    assert!(
        payments > steps / 10 && payouts as u64 > steps / 100 && refunds as u64 > steps / 1_000,
        "the simulation did too little"
    );
}

#[test]
fn simulator_keeps_every_invariant_over_random_interleavings() {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let steps = env("DZERO_SIM_STEPS").unwrap_or(10_000);
    match env("DZERO_SIM_SEED") {
        Some(seed) => run(seed, steps),
        None => {
            for seed in 0..env("DZERO_SIM_SEEDS").unwrap_or(1) {
                run(0x5eed_0000 + seed, steps);
            }
        }
    }
}
