//! `dzero bench accounts`: resident memory per ledger account, measured as the growth of the
//! process's resident set while the ledger creates many accounts (and, separately, merchants,
//! each of which owns five accounts plus its record and indexes).

use anyhow::{Context, bail};
use domain::{Command, FeeSchedule, NewMerchant, Platform};
use ledger::{
    AccountFlags, AccountId, AccountKind, Amount, Currency, Event, Ledger, NewAccount, Timestamp,
};

#[derive(Clone, Debug, clap::Args)]
pub struct AccountsArgs {
    /// Ledger accounts to create.
    #[arg(long, default_value_t = 2_000_000)]
    pub accounts: u64,
    /// Merchants to create in the second measurement.
    #[arg(long, default_value_t = 200_000)]
    pub merchants: u64,
}

/// Resident set size of this process in bytes, from /proc/self/statm.
fn resident_bytes() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").context("reading /proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .context("statm has no resident field")?
        .parse()?;
    Ok(pages * 4096)
}

pub fn run(args: &AccountsArgs) -> anyhow::Result<()> {
    let now = Timestamp(1_754_000_000_000_000);
    let before = resident_bytes()?;
    let mut ledger = Ledger::new();
    let chunk = 65_536u64;
    let mut next = 1u64;
    while next <= args.accounts {
        let end = (next + chunk).min(args.accounts + 1);
        let events: Vec<Event> = (next..end)
            .map(|id| Event::CreateAccount {
                account: NewAccount {
                    id: AccountId(id),
                    currency: Currency::CNY,
                    kind: AccountKind::Liability,
                    flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                    credit_limit: Amount::ZERO,
                    code: 10,
                    user_data: id,
                },
                linked: false,
            })
            .collect();
        if ledger.execute(now, &events).iter().any(Result::is_err) {
            bail!("account creation refused");
        }
        drop(ledger.take_journal());
        next = end;
    }
    let per_account = (resident_bytes()? - before) / args.accounts;
    eprintln!(
        "{} ledger accounts: {per_account} bytes each (size of the record: {} bytes)",
        args.accounts,
        std::mem::size_of::<ledger::Account>()
    );
    drop(ledger);

    let before = resident_bytes()?;
    let mut platform = Platform::new();
    for m in 0..args.merchants {
        let command = Command::CreateMerchant(NewMerchant {
            id: format!("M{m:08}"),
            name: format!("Merchant {m}"),
            currency: Currency::CNY,
            terms: domain::MerchantTerms::with_fee(FeeSchedule {
                rate_ppm: 3_800,
                ..FeeSchedule::default()
            }),
        });
        if platform.apply(now, &command).is_err() {
            bail!("merchant creation refused");
        }
        if m % 4_096 == 0 {
            drop(platform.take_effects());
        }
    }
    drop(platform.take_effects());
    let per_merchant = (resident_bytes()? - before) / args.merchants;
    eprintln!(
        "{} merchants: {per_merchant} bytes each, {} per account of its five",
        args.merchants,
        per_merchant / 5
    );
    println!("bytes_per_account={per_account} bytes_per_merchant={per_merchant}");
    Ok(())
}
