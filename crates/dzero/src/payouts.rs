//! Payout channels: adapters that move money to bank accounts, and the dispatcher that hands
//! them the payouts the platform created.
//!
//! The dispatcher sends each payout once: it marks it `sent` in the sequencer before handing
//! it over, so a crash after that never sends it again; the adapter's answer (succeeded,
//! failed or unknown) goes back as a command. An `unknown` payout is never re-sent; a status
//! query, reconciliation or an operator resolves it.

use std::sync::Arc;
use std::time::Duration;

use domain::{BankAccount, Command, PayoutId, PayoutResult, PayoutStatus};
use engine::Engine;
use ledger::Amount;

/// What a payout channel is asked to do.
#[derive(Clone, Debug)]
pub struct PayoutOrder {
    pub payout: PayoutId,
    pub amount: Amount,
    pub bank_account: BankAccount,
}

/// A payout channel: sends money to a bank account and says what happened.
pub trait PayoutChannel: Send + Sync + 'static {
    fn send(
        &self,
        order: PayoutOrder,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = PayoutResult> + Send + '_>>;
}

/// The built-in sandbox channel. Every payout succeeds, except by the account number's last
/// four digits: `0000` fails, `9999` ends unknown, `8888` succeeds after two seconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct SandboxPayoutChannel;

impl PayoutChannel for SandboxPayoutChannel {
    fn send(
        &self,
        order: PayoutOrder,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = PayoutResult> + Send + '_>> {
        Box::pin(async move {
            let number = order.bank_account.number;
            if number.ends_with("0000") {
                PayoutResult::Failed
            } else if number.ends_with("9999") {
                PayoutResult::Unknown
            } else {
                if number.ends_with("8888") {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                PayoutResult::Succeeded
            }
        })
    }
}

/// How often the dispatcher looks for new payouts.
const DISPATCH_INTERVAL_MS: u64 = 20;
/// Payouts handed to the channel per look.
const DISPATCH_BATCH_MAX: usize = 256;

/// Sends created payouts through `channel` until the engine stops.
pub async fn dispatch(engine: Engine, channel: Arc<dyn PayoutChannel>) {
    loop {
        if engine.is_stopped() {
            return;
        }
        let created = engine
            .query(|p| {
                p.payouts()
                    .iter()
                    .filter(|po| po.status == PayoutStatus::Created)
                    .take(DISPATCH_BATCH_MAX)
                    .map(|po| PayoutOrder {
                        payout: po.id,
                        amount: po.amount,
                        bank_account: po.bank_account.clone(),
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
        for order in created {
            // Mark it sent first: from here on it is never handed over again.
            let sent = engine
                .submit(vec![Command::MarkPayoutSent(order.payout)], None)
                .await;
            if !matches!(sent, Ok(engine::SubmissionReply::Applied(ref r)) if r[0].is_ok()) {
                continue;
            }
            let (engine, channel) = (engine.clone(), Arc::clone(&channel));
            tokio::spawn(async move {
                let payout = order.payout;
                let result = channel.send(order).await;
                let resolved = engine
                    .submit(vec![Command::ResolvePayout { payout, result }], None)
                    .await;
                if let Err(error) = resolved {
                    tracing::warn!(payout = payout.0, %error, "payout result not recorded");
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(DISPATCH_INTERVAL_MS)).await;
    }
}
