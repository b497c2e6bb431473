//! Refunds, reversals (chargebacks), holds, merchant freezes and merchant debt.
//!
//! A refund or reversal takes the merchant's part back from its claims — the payment's own lot
//! first, then its other lots, oldest first, never money that is held — and the channel nets
//! the whole amount from what it owes the platform. Together they never exceed the payment. A
//! refund the claims cannot cover is refused; a reversal's uncovered part becomes the merchant's
//! debt, recovered from its next claims.

use ledger::{AccountId, Amount, Timestamp};

use crate::model::{PaymentId, is_valid_external_id};
use crate::platform::{
    CommandResult, DomainError, Outcome, Platform, RECORD_KIND_PAYMENT, internal_transfer_id,
    transfer_code,
};
use crate::settlement::LotId;

const RECORD_KIND_REFUND: u8 = 5;
const RECORD_KIND_HOLD: u8 = 6;
/// The leg of a pay-in's chain that recovers merchant debt from the new claim.
pub(crate) const PAYIN_DEBT_RECOVERY_LEG: u32 = 4;

/// A refund or reversal as asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundRequest {
    /// Chosen by the client (for a reversal, the channel's reference): the same id with the
    /// same content returns the first result.
    pub request_id: String,
    pub payment_id: PaymentId,
    /// The payment's channel and trade number, which identify it in the sequencer.
    pub channel_id: String,
    pub channel_trade_no: String,
    /// Gross amount returned to the customer.
    pub amount: Amount,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefundKind {
    Refund,
    Reversal,
}

impl RefundKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundKind::Refund => "refund",
            RefundKind::Reversal => "reversal",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefundStatus {
    Done,
    /// Waiting for claims to cover it (the merchant's terms queue refunds).
    Queued,
}

impl RefundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Done => "done",
            RefundStatus::Queued => "queued",
        }
    }
}

/// What a refund or reversal took, and from where.
#[derive(Clone, Copy, Debug, Default)]
struct Taken {
    fee_returned: Amount,
    from_claims: Amount,
    from_reserve: Amount,
    debt: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refund {
    pub id: u64,
    pub kind: RefundKind,
    pub request_id: String,
    pub payment_id: PaymentId,
    pub merchant_id: String,
    pub amount: Amount,
    /// The part of the merchant fee the platform gave back (by the merchant's terms).
    pub fee_returned: Amount,
    /// Taken from the merchant's free claims.
    pub from_claims: Amount,
    /// Taken from the merchant's reserve (reversals only).
    pub from_reserve: Amount,
    /// What the claims could not cover (reversals only): the merchant's new debt.
    pub debt: Amount,
    pub status: RefundStatus,
    pub created_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewHold {
    pub hold_id: String,
    pub merchant_id: String,
    pub amount: Amount,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    pub id: String,
    pub merchant_id: String,
    pub amount: Amount,
    pub reason: String,
    pub active: bool,
    pub created_at: Timestamp,
    pub released_at: Option<Timestamp>,
}

fn posting(
    kind: u8,
    record: u64,
    leg: u32,
    debit: AccountId,
    credit: AccountId,
    amount: Amount,
    code: u16,
) -> ledger::Event {
    ledger::Event::CreateTransfer(ledger::NewTransfer {
        id: internal_transfer_id(kind, record, leg),
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        pending_id: ledger::TransferId(0),
        timeout_seconds: 0,
        flags: ledger::TransferFlags::NONE,
        code,
        user_data: record,
    })
}

impl Platform {
    /// Available money a merchant may be paid: funded claims not held.
    pub(crate) fn payable_funded(&self, merchant: u32) -> Amount {
        let funded: i64 = self
            .settlements
            .merchant_lots(merchant)
            .iter()
            .map(|id| self.settlements.lot(*id))
            .filter(|lot| lot.is_funded())
            .map(|lot| lot.remaining().minor())
            .sum();
        Amount::from_minor(funded - self.settlements.held[merchant as usize].minor())
    }

    pub fn refunds(&self) -> &[Refund] {
        &self.settlements.refunds
    }

    pub fn holds(&self) -> &[Hold] {
        &self.settlements.holds
    }

    pub fn merchant_frozen(&self, merchant_id: &str) -> bool {
        self.merchant_index_of(merchant_id)
            .is_ok_and(|m| self.settlements.frozen[m as usize])
    }

    /// Refunded and reversed so far of a payment.
    /// The merchant of the payment a refund request names, if the request names one.
    pub fn payment_merchant(&self, request: &RefundRequest) -> Option<String> {
        let channel = *self.channel_index.get(&request.channel_id)?;
        let entry = *self.trades[channel as usize]
            .get(request.channel_trade_no.as_str())
            .filter(|e| e.payment == request.payment_id)?;
        Some(self.merchants[entry.merchant as usize].id.clone())
    }

    pub fn refunded(&self, payment: PaymentId) -> Amount {
        self.settlements
            .refunded_by_payment
            .get(&payment)
            .copied()
            .unwrap_or(Amount::ZERO)
    }

    pub(crate) fn refund(
        &mut self,
        now: Timestamp,
        request: &RefundRequest,
        reversal: bool,
    ) -> CommandResult {
        if !is_valid_external_id(&request.request_id) {
            return Err(DomainError::InvalidId);
        }
        let key = (reversal, request.request_id.clone());
        if let Some(index) = self.settlements.refund_requests.get(&key) {
            let existing = self.settlements.refunds[*index].clone();
            return if existing.payment_id == request.payment_id && existing.amount == request.amount
            {
                Ok(Outcome::Refund {
                    refund: existing,
                    created: false,
                })
            } else {
                Err(DomainError::PayoutRequestConflict)
            };
        }
        if !request.amount.is_positive() {
            return Err(DomainError::AmountMustBePositive);
        }
        let channel = *self
            .channel_index
            .get(&request.channel_id)
            .ok_or(DomainError::UnknownPayment)?;
        let entry = *self.trades[channel as usize]
            .get(request.channel_trade_no.as_str())
            .filter(|e| e.payment == request.payment_id)
            .ok_or(DomainError::UnknownPayment)?;
        let before = self.refunded(request.payment_id);
        let after = Amount::from_minor(before.minor() + request.amount.minor());
        if after > entry.amount {
            return Err(DomainError::RefundExceedsPayment);
        }
        let record = self.settlements.refunds.len() as u64 + 1;
        let merchant_id = self.merchants[entry.merchant as usize].id.clone();
        let queue = self.merchants[entry.merchant as usize]
            .terms_at(now)
            .refund_queue;
        let (taken, status) =
            match self.take_refund(now, request, reversal, entry, channel, before, record) {
                Ok(taken) => (taken, RefundStatus::Done),
                Err(DomainError::InsufficientFunds) if !reversal && queue => {
                    (Taken::default(), RefundStatus::Queued)
                }
                Err(error) => return Err(error),
            };
        // A queued refund reserves its share of the payment at once.
        self.settlements
            .refunded_by_payment
            .insert(request.payment_id, after);
        let refund = Refund {
            id: record,
            kind: if reversal {
                RefundKind::Reversal
            } else {
                RefundKind::Refund
            },
            request_id: request.request_id.clone(),
            payment_id: request.payment_id,
            merchant_id,
            amount: request.amount,
            fee_returned: taken.fee_returned,
            from_claims: taken.from_claims,
            from_reserve: taken.from_reserve,
            debt: taken.debt,
            status,
            created_at: now,
        };
        if status == RefundStatus::Queued {
            self.settlements
                .queued_refunds
                .push_back(self.settlements.refunds.len());
            self.settlements.queued_trades.insert(
                (request.payment_id, request.request_id.clone()),
                (channel, request.channel_trade_no.clone()),
            );
        }
        self.settlements
            .refund_requests
            .insert(key, self.settlements.refunds.len());
        self.settlements.refunds.push(refund.clone());
        Ok(Outcome::Refund {
            refund,
            created: true,
        })
    }

    /// Takes a refund or reversal of `amount` from the merchant's claims and posts it: the
    /// payment's lot first, then other lots, then (reversals) the reserve, then (reversals)
    /// debt. Refuses with `InsufficientFunds` (changing nothing) when a refund cannot be covered.
    #[allow(clippy::too_many_arguments)]
    fn take_refund(
        &mut self,
        now: Timestamp,
        request: &RefundRequest,
        reversal: bool,
        entry: crate::platform::TradeEntry,
        channel: u32,
        before: Amount,
        record: u64,
    ) -> Result<Taken, DomainError> {
        let after = Amount::from_minor(before.minor() + request.amount.minor());
        let merchant = entry.merchant;
        let m = &self.merchants[merchant as usize];
        let (accounts, currency, merchant_id) = (m.accounts, m.currency, m.id.clone());
        let returns_fee = m.terms_at(now).refund_fee_returned;
        // The fee returned so far is recomputed from cumulative amounts, so many partial
        // refunds return exactly the whole fee, never more.
        let fee_share = |refunded: Amount| {
            let product = i128::from(entry.merchant_fee.minor()) * i128::from(refunded.minor());
            let gross = i128::from(entry.amount.minor());
            Amount::from_minor(i64::try_from((2 * product + gross) / (2 * gross)).unwrap_or(0))
        };
        let fee_returned = if returns_fee {
            Amount::from_minor(fee_share(after).minor() - fee_share(before).minor())
        } else {
            Amount::ZERO
        };
        let merchant_part = request.amount.minor() - fee_returned.minor();
        // Take the merchant's part from its claims: the payment's lot first.
        let own = self
            .settlements
            .lot_of(merchant, channel, entry.business_date);
        let mut order: Vec<LotId> = own.into_iter().collect();
        order.extend(
            self.settlements
                .merchant_lots(merchant)
                .iter()
                .copied()
                .filter(|id| Some(*id) != own),
        );
        let mut funded_room = self.payable_funded(merchant).minor();
        let mut left = merchant_part;
        let mut takes = Vec::new();
        for id in order {
            if left == 0 {
                break;
            }
            let lot = self.settlements.lot(id);
            let mut take = lot.remaining().minor().min(left);
            if lot.is_funded() {
                take = take.min(funded_room.max(0));
                funded_room -= take;
            }
            if take > 0 {
                takes.push((id, lot.is_funded(), Amount::from_minor(take)));
                left -= take;
            }
        }
        if left > 0 && !reversal {
            return Err(DomainError::InsufficientFunds);
        }
        // A reversal the free claims cannot cover is paid from the reserve next: active
        // reserve holds, oldest first, against funded claims the holds cover.
        let mut from_reserve = Vec::new();
        let reserve_takes_from = takes.len();
        if left > 0 {
            let mut funded_left: Vec<(LotId, i64)> = self
                .settlements
                .merchant_lots(merchant)
                .iter()
                .map(|id| (*id, self.settlements.lot(*id)))
                .filter(|(_, lot)| lot.is_funded())
                .map(|(id, lot)| {
                    let taken: i64 = takes
                        .iter()
                        .filter(|(t, _, _)| *t == id)
                        .map(|(_, _, a)| a.minor())
                        .sum();
                    (id, lot.remaining().minor() - taken)
                })
                .collect();
            for (index, hold) in self.settlements.holds.iter().enumerate() {
                if left == 0 {
                    break;
                }
                if !hold.active || hold.reason != "reserve" || hold.merchant_id != merchant_id {
                    continue;
                }
                let use_amount = hold.amount.minor().min(left);
                let mut to_place = use_amount;
                for (id, room) in funded_left.iter_mut() {
                    let x = (*room).min(to_place);
                    if x > 0 {
                        takes.push((*id, true, Amount::from_minor(x)));
                        *room -= x;
                        to_place -= x;
                    }
                }
                let used = use_amount - to_place;
                if used > 0 {
                    from_reserve.push((index, Amount::from_minor(used)));
                    left -= used;
                }
            }
        }
        let reserve_used: i64 = from_reserve.iter().map(|(_, a)| a.minor()).sum();
        let debt = Amount::from_minor(left);
        let platform = self.platform_accounts_for(currency);
        let receivable = self.channels[channel as usize].receivable_account;
        let mut events = Vec::new();
        let mut leg = 0u32;
        let mut post = |debit: AccountId, amount: Amount, code: u16| {
            if amount.is_positive() {
                leg += 1;
                events.push(posting(
                    RECORD_KIND_REFUND,
                    record,
                    leg,
                    debit,
                    receivable,
                    amount,
                    code,
                ));
            }
        };
        for (i, (_, funded, take)) in takes.iter().enumerate() {
            let source = if i >= reserve_takes_from {
                accounts.frozen
            } else if *funded {
                accounts.available
            } else {
                accounts.pending
            };
            let code = if i >= reserve_takes_from {
                transfer_code::RESERVE_USED
            } else {
                transfer_code::REFUND_CLAIM
            };
            post(source, *take, code);
        }
        post(platform.fee_income, fee_returned, transfer_code::REFUND_FEE);
        post(accounts.debt, debt, transfer_code::REVERSAL_DEBT);
        self.ledger
            .apply_chain(now, &events)
            .map_err(|f| DomainError::Ledger(f.error))?;
        for (id, _, take) in &takes {
            let lot = self.settlements.lot_mut(*id);
            lot.refunded = Amount::from_minor(lot.refunded.minor() + take.minor());
        }
        // The channel nets the whole amount: from the payment's lot while it is unpaid, else
        // from its next settlement.
        let mut due_later = request.amount.minor();
        if let Some(id) = own {
            let lot = self.settlements.lot_mut(id);
            if !lot.is_funded() {
                let off = lot.expected_from_channel.minor().min(due_later).max(0);
                lot.expected_from_channel =
                    Amount::from_minor(lot.expected_from_channel.minor() - off);
                due_later -= off;
            }
        }
        if due_later > 0 {
            let due = self
                .settlements
                .channel_refunds_due
                .entry(channel)
                .or_insert(Amount::ZERO);
            *due = Amount::from_minor(due.minor() + due_later);
        }
        for (index, used) in from_reserve {
            let hold = &mut self.settlements.holds[index];
            hold.amount = Amount::from_minor(hold.amount.minor() - used.minor());
            if hold.amount == Amount::ZERO {
                hold.active = false;
                hold.released_at = Some(now);
            }
            let held = &mut self.settlements.held[merchant as usize];
            *held = Amount::from_minor(held.minor() - used.minor());
        }
        let debt_slot = &mut self.settlements.debt[merchant as usize];
        *debt_slot = Amount::from_minor(debt_slot.minor() + debt.minor());
        Ok(Taken {
            fee_returned,
            from_claims: Amount::from_minor(merchant_part - left - reserve_used),
            from_reserve: Amount::from_minor(reserve_used),
            debt,
        })
    }

    /// Tries the merchant's queued refunds, oldest first, after its claims grew; stops at the
    /// first that still cannot be covered.
    pub(crate) fn retry_queued_refunds(&mut self, now: Timestamp, merchant: u32) {
        let merchant_id = self.merchants[merchant as usize].id.clone();
        let queued: Vec<usize> = self
            .settlements
            .queued_refunds
            .iter()
            .copied()
            .filter(|i| self.settlements.refunds[*i].merchant_id == merchant_id)
            .collect();
        for index in queued {
            let refund = self.settlements.refunds[index].clone();
            let Some(channel) = self.payment_channel(refund.payment_id, &refund.request_id) else {
                continue;
            };
            let (channel, trade) = channel;
            let Some(entry) = self.trades[channel as usize].get(trade.as_str()).copied() else {
                continue;
            };
            let request = RefundRequest {
                request_id: refund.request_id.clone(),
                payment_id: refund.payment_id,
                channel_id: self.channels[channel as usize].id.clone(),
                channel_trade_no: trade,
                amount: refund.amount,
            };
            let before = Amount::from_minor(
                self.refunded(refund.payment_id).minor() - refund.amount.minor(),
            );
            match self.take_refund(now, &request, false, entry, channel, before, refund.id) {
                Ok(taken) => {
                    let stored = &mut self.settlements.refunds[index];
                    stored.fee_returned = taken.fee_returned;
                    stored.from_claims = taken.from_claims;
                    stored.status = RefundStatus::Done;
                    self.settlements.queued_refunds.retain(|i| *i != index);
                }
                Err(_) => break,
            }
        }
    }

    /// The channel and trade number of a queued refund's payment.
    fn payment_channel(&self, payment: PaymentId, request_id: &str) -> Option<(u32, String)> {
        self.settlements
            .queued_trades
            .get(&(payment, request_id.to_owned()))
            .cloned()
    }

    /// The posting that recovers merchant debt from a new claim, if there is debt: part of
    /// the pay-in's own chain, so both happen or neither.
    pub(crate) fn debt_recovery_leg(
        &self,
        merchant: u32,
        claim: Amount,
        payment: PaymentId,
    ) -> Option<(ledger::Event, Amount)> {
        let debt = self.settlements.debt[merchant as usize];
        let recovered = debt.min(claim);
        recovered.is_positive().then(|| {
            let accounts = self.merchants[merchant as usize].accounts;
            (
                posting(
                    RECORD_KIND_PAYMENT,
                    payment.0,
                    PAYIN_DEBT_RECOVERY_LEG,
                    accounts.pending,
                    accounts.debt,
                    recovered,
                    transfer_code::DEBT_RECOVERED,
                ),
                recovered,
            )
        })
    }

    /// Books a recovery made by a pay-in's chain against the lot the claim landed in.
    pub(crate) fn note_debt_recovered(&mut self, merchant: u32, lot: LotId, recovered: Amount) {
        let lot = self.settlements.lot_mut(lot);
        lot.refunded = Amount::from_minor(lot.refunded.minor() + recovered.minor());
        let debt = &mut self.settlements.debt[merchant as usize];
        *debt = Amount::from_minor(debt.minor() - recovered.minor());
    }

    pub(crate) fn place_hold(&mut self, now: Timestamp, new: &NewHold) -> CommandResult {
        if !is_valid_external_id(&new.hold_id) {
            return Err(DomainError::InvalidId);
        }
        if let Some(existing) = self.settlements.holds.iter().find(|h| h.id == new.hold_id) {
            return if existing.merchant_id == new.merchant_id && existing.amount == new.amount {
                Ok(Outcome::Hold {
                    hold: existing.clone(),
                    created: false,
                })
            } else {
                Err(DomainError::PayoutRequestConflict)
            };
        }
        if !new.amount.is_positive() {
            return Err(DomainError::AmountMustBePositive);
        }
        let merchant = self.merchant_index_of(&new.merchant_id)?;
        if self.payable_funded(merchant) < new.amount {
            return Err(DomainError::InsufficientFunds);
        }
        let accounts = self.merchants[merchant as usize].accounts;
        let record = self.settlements.holds.len() as u64 + 1;
        let event = posting(
            RECORD_KIND_HOLD,
            record,
            1,
            accounts.available,
            accounts.frozen,
            new.amount,
            transfer_code::HOLD_PLACED,
        );
        self.ledger
            .apply_chain(now, &[event])
            .map_err(|f| DomainError::Ledger(f.error))?;
        let held = &mut self.settlements.held[merchant as usize];
        *held = Amount::from_minor(held.minor() + new.amount.minor());
        let hold = Hold {
            id: new.hold_id.clone(),
            merchant_id: new.merchant_id.clone(),
            amount: new.amount,
            reason: new.reason.clone(),
            active: true,
            created_at: now,
            released_at: None,
        };
        self.settlements.holds.push(hold.clone());
        Ok(Outcome::Hold {
            hold,
            created: true,
        })
    }

    pub(crate) fn release_hold(&mut self, now: Timestamp, hold_id: &str) -> CommandResult {
        let index = self
            .settlements
            .holds
            .iter()
            .position(|h| h.id == hold_id)
            .ok_or(DomainError::UnknownHold)?;
        let hold = self.settlements.holds[index].clone();
        if !hold.active {
            return Ok(Outcome::Hold {
                hold,
                created: false,
            });
        }
        let merchant = self.merchant_index_of(&hold.merchant_id)?;
        let accounts = self.merchants[merchant as usize].accounts;
        let event = posting(
            RECORD_KIND_HOLD,
            index as u64 + 1,
            2,
            accounts.frozen,
            accounts.available,
            hold.amount,
            transfer_code::HOLD_RELEASED,
        );
        self.ledger
            .apply_chain(now, &[event])
            .map_err(|f| DomainError::Ledger(f.error))?;
        let held = &mut self.settlements.held[merchant as usize];
        *held = Amount::from_minor(held.minor() - hold.amount.minor());
        let stored = &mut self.settlements.holds[index];
        stored.active = false;
        stored.released_at = Some(now);
        let hold = stored.clone();
        if !self.settlements.queued_refunds.is_empty() {
            self.retry_queued_refunds(now, merchant);
        }
        Ok(Outcome::Hold {
            hold,
            created: true,
        })
    }

    pub(crate) fn set_merchant_frozen(&mut self, merchant_id: &str, frozen: bool) -> CommandResult {
        let merchant = self.merchant_index_of(merchant_id)?;
        let slot = &mut self.settlements.frozen[merchant as usize];
        let changed = *slot != frozen;
        *slot = frozen;
        Ok(Outcome::MerchantFrozen {
            merchant_id: merchant_id.to_owned(),
            frozen,
            changed,
        })
    }
}
