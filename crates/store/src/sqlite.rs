//! The embedded backend: one SQLite file in the data directory, WAL mode, `synchronous=FULL`
//! so that a committed batch survives power loss.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use domain::{Payment, PaymentId};
use ledger::{AccountId, Amount, Currency, Timestamp, Transfer, TransferFlags, TransferId};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::{
    ApiKeyRecord, BatchWrite, IdempotencyRecord, LoggedInput, PaymentPage, PaymentQuery, Recovery,
    Store, StoreError, StoreRead, StoreResult, codec,
};

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "dzero.db";
/// Read connections kept open for request handlers.
const READ_CONNECTIONS_MAX: usize = 8;
/// How long a connection waits for a lock held by another before failing.
const BUSY_TIMEOUT_MS: u64 = 5_000;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many have run.
/// Never edit a migration that has shipped: add a new one.
const MIGRATIONS: &[&str] = &[
    r"
-- Every input that changed the platform's state, except pay-ins (their payment rows below
-- are their log). Replayed in operation order on start.
CREATE TABLE inputs (
    op   INTEGER PRIMARY KEY,
    at   INTEGER NOT NULL,
    body TEXT    NOT NULL
) STRICT;

-- The ledger journal, for history. Append-only; seq is the rowid, so inserts are sequential.
CREATE TABLE transfers (
    seq          INTEGER PRIMARY KEY,
    id           BLOB    NOT NULL,
    debit        INTEGER NOT NULL,
    credit       INTEGER NOT NULL,
    amount       INTEGER NOT NULL,
    pending_id   BLOB    NOT NULL,
    timeout_s    INTEGER NOT NULL,
    flags        INTEGER NOT NULL,
    code         INTEGER NOT NULL,
    user_data    INTEGER NOT NULL,
    ts           INTEGER NOT NULL,
    debit_prev   INTEGER NOT NULL,
    credit_prev  INTEGER NOT NULL,
    fingerprint  INTEGER NOT NULL
) STRICT;

-- Append-only; id is the rowid. No secondary index: a merchant's payments are found by
-- following merchant_prev_id from its newest payment.
CREATE TABLE payments (
    id                INTEGER PRIMARY KEY,
    channel_id        TEXT    NOT NULL,
    merchant_id       TEXT    NOT NULL,
    channel_trade_no  TEXT    NOT NULL,
    merchant_order_no TEXT    NOT NULL,
    amount            INTEGER NOT NULL,
    currency          TEXT    NOT NULL,
    paid_at           INTEGER NOT NULL,
    merchant_fee      INTEGER NOT NULL,
    channel_cost      INTEGER NOT NULL,
    merchant_claim    INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    merchant_prev_id  INTEGER NOT NULL, -- the merchant's previous payment; 0 for none
    business_date     INTEGER NOT NULL, -- days since 1970-01-01
    op                INTEGER NOT NULL  -- the operation that recorded it
) STRICT;

CREATE TABLE idempotency (
    key          TEXT    PRIMARY KEY,
    request_hash BLOB    NOT NULL,
    status       INTEGER NOT NULL,
    body         BLOB    NOT NULL,
    created_at   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- The tamper-evident audit chain of merchant users' actions. Append-only.
CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    merchant  TEXT    NOT NULL,
    user_id   TEXT    NOT NULL,
    device    TEXT,
    action    TEXT    NOT NULL,
    factors   TEXT    NOT NULL,
    approver  TEXT,
    detail    TEXT    NOT NULL,
    prev_hash BLOB    NOT NULL,
    hash      BLOB    NOT NULL
) STRICT;

CREATE TABLE api_keys (
    id          TEXT    PRIMARY KEY,
    secret_hash BLOB    NOT NULL,
    scopes      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;
",
    r"
-- The merchant's store a payment was taken at (NULL: none given).
ALTER TABLE payments ADD COLUMN store_id TEXT;
",
];

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        db_err(e)
    }
}

fn open_connection(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = OFF;
         PRAGMA cache_size = -65536;",
    )?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let applied = usize::try_from(version)
        .map_err(|_| StoreError::Corrupt(format!("schema version {version}")))?;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "schema version {applied} is newer than this program ({})",
            MIGRATIONS.len()
        )));
    }
    let tx = conn.transaction()?;
    for migration in &MIGRATIONS[applied..] {
        tx.execute_batch(migration)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    tx.commit()?;
    Ok(())
}

/// The write side of the SQLite backend.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    /// Held for its `Drop`, which stops the checkpoint thread with the store.
    _checkpointer: Checkpointer,
}

/// How often the background checkpointer copies the WAL into the database file.
const CHECKPOINT_INTERVAL_MS: u64 = 50;

/// Copies committed WAL frames into the main database file from its own connection and thread,
/// so that the writer never pays for a checkpoint inside a commit (SQLite's automatic
/// checkpoint would run on the committing connection and stall every caller of that batch).
#[derive(Debug)]
struct Checkpointer {
    stop: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: PathBuf) -> StoreResult<Checkpointer> {
        let conn = open_connection(&path)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("dzero-checkpoint".into())
            .spawn(move || {
                let interval = std::time::Duration::from_millis(CHECKPOINT_INTERVAL_MS);
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(interval)
                {
                    // PASSIVE never blocks the writer or readers; frames it cannot copy yet
                    // are copied next time.
                    if let Err(error) =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        eprintln!("dzero: WAL checkpoint failed: {error}");
                    }
                }
            })?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The read side of the SQLite backend: a small pool of read connections.
#[derive(Debug)]
pub struct SqliteReader {
    path: PathBuf,
    pool: Mutex<Vec<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `data_dir`, applies migrations and returns
    /// the writer and a reader.
    pub fn open(data_dir: &Path) -> StoreResult<(SqliteStore, SqliteReader)> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join(DATABASE_FILE);
        let mut conn = open_connection(&path)?;
        migrate(&mut conn)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpointer = Checkpointer::start(path.clone())?;
        let reader = SqliteReader {
            path,
            pool: Mutex::new(Vec::new()),
        };
        Ok((
            SqliteStore {
                conn,
                _checkpointer: checkpointer,
            },
            reader,
        ))
    }
}

// ----- Conversions between rows and domain types. -----

fn u128_blob(value: u128) -> [u8; 16] {
    value.to_be_bytes()
}

fn blob_u128(bytes: &[u8]) -> StoreResult<u128> {
    let array: [u8; 16] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("transfer id is not 16 bytes".into()))?;
    Ok(u128::from_be_bytes(array))
}

/// SQLite integers are signed; u64 values are stored bit-for-bit.
fn u64_int(value: u64) -> i64 {
    value as i64
}

fn int_u64(value: i64) -> u64 {
    value as u64
}

fn currency(text: &str) -> StoreResult<Currency> {
    Currency::parse(text).ok_or_else(|| StoreError::Corrupt(format!("currency {text:?}")))
}

fn u16_of(value: i64, what: &str) -> StoreResult<u16> {
    u16::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value}")))
}

const TRANSFER_COLUMNS: &str = "seq, id, debit, credit, amount, pending_id, timeout_s, flags, \
                                code, user_data, ts, debit_prev, credit_prev, fingerprint";

fn transfer_from_row(row: &Row<'_>) -> StoreResult<(Transfer, u64)> {
    let flags: i64 = row.get(7)?;
    let transfer = Transfer {
        seq: int_u64(row.get(0)?),
        id: TransferId(blob_u128(&row.get::<_, Vec<u8>>(1)?)?),
        debit_account_id: AccountId(int_u64(row.get(2)?)),
        credit_account_id: AccountId(int_u64(row.get(3)?)),
        amount: Amount::from_minor(row.get(4)?),
        pending_id: TransferId(blob_u128(&row.get::<_, Vec<u8>>(5)?)?),
        timeout_seconds: u32::try_from(row.get::<_, i64>(6)?)
            .map_err(|_| StoreError::Corrupt("transfer timeout".into()))?,
        flags: TransferFlags::from_bits(u16_of(flags, "transfer flags")?)
            .ok_or_else(|| StoreError::Corrupt(format!("transfer flags {flags}")))?,
        code: u16_of(row.get(8)?, "transfer code")?,
        user_data: int_u64(row.get(9)?),
        timestamp: Timestamp(row.get(10)?),
        debit_prev_seq: int_u64(row.get(11)?),
        credit_prev_seq: int_u64(row.get(12)?),
    };
    Ok((transfer, int_u64(row.get(13)?)))
}

const PAYMENT_COLUMNS: &str = "id, channel_id, merchant_id, channel_trade_no, merchant_order_no, \
                               amount, currency, paid_at, merchant_fee, channel_cost, \
                               merchant_claim, created_at, merchant_prev_id, business_date, op, \
                               store_id";

fn payment_from_row(row: &Row<'_>) -> StoreResult<Payment> {
    Ok(Payment {
        id: PaymentId(int_u64(row.get(0)?)),
        channel_id: row.get(1)?,
        merchant_id: row.get(2)?,
        channel_trade_no: row.get(3)?,
        merchant_order_no: row.get(4)?,
        amount: Amount::from_minor(row.get(5)?),
        currency: currency(&row.get::<_, String>(6)?)?,
        paid_at: Timestamp(row.get(7)?),
        merchant_fee: Amount::from_minor(row.get(8)?),
        channel_cost: Amount::from_minor(row.get(9)?),
        merchant_claim: Amount::from_minor(row.get(10)?),
        created_at: Timestamp(row.get(11)?),
        merchant_prev_id: match int_u64(row.get(12)?) {
            0 => None,
            id => Some(PaymentId(id)),
        },
        business_date: domain::Date::from_days(
            i32::try_from(row.get::<_, i64>(13)?)
                .map_err(|_| StoreError::Corrupt("business date".into()))?,
        ),
        op: int_u64(row.get(14)?),
        store_id: row.get(15)?,
    })
}

/// Runs `query` and hands each row to `each`, stopping at the first error.
fn for_each_row(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    mut each: impl FnMut(&Row<'_>) -> StoreResult<()>,
) -> StoreResult<()> {
    let mut statement = conn.prepare(sql)?;
    let mut rows = statement.query(params)?;
    while let Some(row) = rows.next()? {
        each(row)?;
    }
    Ok(())
}

/// Rows per multi-row `INSERT` on the hot tables: one statement execution per this many rows
/// instead of one per row.
const ROWS_PER_INSERT: usize = 32;

/// Binds one row's values at parameter positions `base + 1 ..`.
type BindRow<T> = fn(&mut rusqlite::Statement<'_>, usize, &T) -> rusqlite::Result<()>;

/// Inserts `rows` with cached multi-row statements (the remainder one row at a time).
fn insert_many<T>(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    columns: &str,
    rows: &[T],
    bind: BindRow<T>,
) -> StoreResult<()> {
    let width = columns.split(',').count();
    let statement = |rows: usize| {
        let row = format!("({})", vec!["?"; width].join(", "));
        format!(
            "INSERT INTO {table} ({columns}) VALUES {}",
            vec![row; rows].join(", ")
        )
    };
    let mut chunks = rows.chunks_exact(ROWS_PER_INSERT);
    if rows.len() >= ROWS_PER_INSERT {
        let mut many = tx.prepare_cached(&statement(ROWS_PER_INSERT))?;
        for chunk in &mut chunks {
            for (i, row) in chunk.iter().enumerate() {
                bind(&mut many, i * width, row)?;
            }
            many.raw_execute()?;
        }
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut one = tx.prepare_cached(&statement(1))?;
        for row in rest {
            bind(&mut one, 0, row)?;
            one.raw_execute()?;
        }
    }
    Ok(())
}

fn bind_transfer(
    s: &mut rusqlite::Statement<'_>,
    base: usize,
    (t, fingerprint): &(Transfer, u64),
) -> rusqlite::Result<()> {
    s.raw_bind_parameter(base + 1, u64_int(t.seq))?;
    s.raw_bind_parameter(base + 2, &u128_blob(t.id.0)[..])?;
    s.raw_bind_parameter(base + 3, u64_int(t.debit_account_id.0))?;
    s.raw_bind_parameter(base + 4, u64_int(t.credit_account_id.0))?;
    s.raw_bind_parameter(base + 5, t.amount.minor())?;
    s.raw_bind_parameter(base + 6, &u128_blob(t.pending_id.0)[..])?;
    s.raw_bind_parameter(base + 7, i64::from(t.timeout_seconds))?;
    s.raw_bind_parameter(base + 8, i64::from(t.flags.bits()))?;
    s.raw_bind_parameter(base + 9, i64::from(t.code))?;
    s.raw_bind_parameter(base + 10, u64_int(t.user_data))?;
    s.raw_bind_parameter(base + 11, t.timestamp.micros())?;
    s.raw_bind_parameter(base + 12, u64_int(t.debit_prev_seq))?;
    s.raw_bind_parameter(base + 13, u64_int(t.credit_prev_seq))?;
    s.raw_bind_parameter(base + 14, u64_int(*fingerprint))
}

fn bind_payment(
    s: &mut rusqlite::Statement<'_>,
    base: usize,
    p: &std::sync::Arc<Payment>,
) -> rusqlite::Result<()> {
    s.raw_bind_parameter(base + 1, u64_int(p.id.0))?;
    s.raw_bind_parameter(base + 2, p.channel_id.as_str())?;
    s.raw_bind_parameter(base + 3, p.merchant_id.as_str())?;
    s.raw_bind_parameter(base + 4, p.channel_trade_no.as_str())?;
    s.raw_bind_parameter(base + 5, p.merchant_order_no.as_str())?;
    s.raw_bind_parameter(base + 6, p.amount.minor())?;
    s.raw_bind_parameter(base + 7, p.currency.as_str())?;
    s.raw_bind_parameter(base + 8, p.paid_at.micros())?;
    s.raw_bind_parameter(base + 9, p.merchant_fee.minor())?;
    s.raw_bind_parameter(base + 10, p.channel_cost.minor())?;
    s.raw_bind_parameter(base + 11, p.merchant_claim.minor())?;
    s.raw_bind_parameter(base + 12, p.created_at.micros())?;
    s.raw_bind_parameter(base + 13, u64_int(p.merchant_prev_id.map_or(0, |id| id.0)))?;
    s.raw_bind_parameter(base + 14, i64::from(p.business_date.days()))?;
    s.raw_bind_parameter(base + 15, u64_int(p.op))?;
    s.raw_bind_parameter(base + 16, p.store_id.as_deref())
}

impl Store for SqliteStore {
    fn load(
        &mut self,
        recovery: &mut dyn Recovery,
        idempotency_since: Timestamp,
    ) -> StoreResult<()> {
        let conn = &self.conn;
        // Merge the two logs, inputs and payments, by operation number.
        let mut inputs_statement = conn.prepare("SELECT op, at, body FROM inputs ORDER BY op")?;
        let mut inputs = inputs_statement.query([])?;
        let mut payments_statement = conn.prepare(&format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments ORDER BY id"
        ))?;
        let mut payments = payments_statement.query([])?;
        let next_input = |rows: &mut rusqlite::Rows<'_>| -> StoreResult<Option<LoggedInput>> {
            match rows.next()? {
                Some(row) => Ok(Some(LoggedInput {
                    op: int_u64(row.get(0)?),
                    at: Timestamp(row.get(1)?),
                    input: codec::decode(&row.get::<_, String>(2)?)?,
                })),
                None => Ok(None),
            }
        };
        let next_payment = |rows: &mut rusqlite::Rows<'_>| -> StoreResult<Option<LoggedInput>> {
            match rows.next()? {
                Some(row) => Ok(Some(crate::payment_input(&payment_from_row(row)?))),
                None => Ok(None),
            }
        };
        let mut input = next_input(&mut inputs)?;
        let mut payment = next_payment(&mut payments)?;
        loop {
            let take_input = match (&input, &payment) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(i), Some(p)) => i.op < p.op,
            };
            if take_input {
                if let Some(logged) = input.take() {
                    recovery.input(logged)?;
                }
                input = next_input(&mut inputs)?;
            } else {
                if let Some(logged) = payment.take() {
                    recovery.input(logged)?;
                }
                payment = next_payment(&mut payments)?;
            }
        }
        for_each_row(
            conn,
            "SELECT key, request_hash, created_at FROM idempotency WHERE created_at >= ?1
             ORDER BY created_at",
            [idempotency_since.micros()],
            |row| {
                let key: String = row.get(0)?;
                let hash: Vec<u8> = row.get(1)?;
                let hash: [u8; 32] = hash
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("request hash is not 32 bytes".into()))?;
                recovery.idempotency(&key, hash, Timestamp(row.get(2)?))
            },
        )?;
        Ok(())
    }

    fn commit(&mut self, batch: BatchWrite<'_>) -> StoreResult<()> {
        let tx = self.conn.transaction()?;
        let effects = batch.effects;
        if !batch.inputs.is_empty() {
            let mut insert =
                tx.prepare_cached("INSERT INTO inputs (op, at, body) VALUES (?1, ?2, ?3)")?;
            for logged in batch.inputs {
                insert.execute(params![
                    u64_int(logged.op),
                    logged.at.micros(),
                    codec::encode(&logged.input)
                ])?;
            }
        }
        for entry in &effects.audit {
            let r = &entry.record;
            tx.prepare_cached(
                "INSERT INTO audit (seq, at, merchant, user_id, device, action, factors,
                                    approver, detail, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                u64_int(entry.seq),
                r.at_micros,
                r.merchant_id,
                r.user_id,
                r.device_id,
                r.action,
                r.factors.join(" "),
                r.approver,
                r.detail,
                &entry.prev_hash[..],
                &entry.hash[..],
            ])?;
        }
        insert_many(
            &tx,
            "transfers",
            TRANSFER_COLUMNS,
            &effects.journal.transfers,
            bind_transfer,
        )?;
        insert_many(
            &tx,
            "payments",
            PAYMENT_COLUMNS,
            &effects.payments,
            bind_payment,
        )?;
        for record in batch.idempotency {
            tx.prepare_cached(
                "INSERT INTO idempotency (key, request_hash, status, body, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                record.key,
                &record.request_hash[..],
                i64::from(record.status),
                record.body,
                record.created_at.micros(),
            ])?;
        }
        tx.commit()?;
        Ok(())
    }
}

impl SqliteReader {
    fn with<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let pooled = self
            .pool
            .lock()
            .map_err(|_| StoreError::Database("read pool poisoned".into()))?
            .pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_connection(&self.path)?,
        };
        let result = f(&conn);
        if let Ok(mut pool) = self.pool.lock()
            && pool.len() < READ_CONNECTIONS_MAX
        {
            pool.push(conn);
        }
        result
    }
}

impl StoreRead for SqliteReader {
    fn payment(&self, id: PaymentId) -> StoreResult<Option<Payment>> {
        self.with(|conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ?1"
            ))?;
            let mut rows = statement.query([u64_int(id.0)])?;
            match rows.next()? {
                Some(row) => Ok(Some(payment_from_row(row)?)),
                None => Ok(None),
            }
        })
    }

    fn payments(&self, query: &PaymentQuery) -> StoreResult<PaymentPage> {
        self.with(|conn| {
            let mut payments = Vec::new();
            let mut next = Some(query.start).filter(|id| id.0 != 0);
            let mut scanned = 0u32;
            while let Some(id) = next {
                if payments.len() >= query.limit as usize || scanned >= query.scan_rows_max {
                    break;
                }
                let Some(payment) = read_payment(conn, id)? else {
                    if query.merchant_id.is_some() {
                        return Err(StoreError::Corrupt(format!(
                            "payment chain broken at {}",
                            id.0
                        )));
                    }
                    next = None;
                    break;
                };
                scanned += 1;
                next = match &query.merchant_id {
                    Some(merchant) => {
                        if payment.merchant_id != *merchant {
                            return Err(StoreError::Corrupt(format!(
                                "payment {} is not in merchant {merchant}'s chain",
                                id.0
                            )));
                        }
                        payment.merchant_prev_id
                    }
                    None => (id.0 > 1).then(|| PaymentId(id.0 - 1)),
                };
                // Ids grow with recording time, so nothing older can be after `from`.
                if query.from.is_some_and(|from| payment.created_at < from) {
                    next = None;
                    break;
                }
                let wanted = query.to.is_none_or(|to| payment.created_at < to)
                    && query.stores.as_ref().is_none_or(|stores| {
                        payment
                            .store_id
                            .as_ref()
                            .is_some_and(|s| stores.contains(s))
                    })
                    && query
                        .merchant_order_no
                        .as_ref()
                        .is_none_or(|o| *o == payment.merchant_order_no)
                    && query
                        .channel_id
                        .as_ref()
                        .is_none_or(|c| *c == payment.channel_id);
                if wanted {
                    payments.push(payment);
                }
            }
            Ok(PaymentPage {
                payments,
                next_start: next,
            })
        })
    }

    fn transfer(&self, seq: u64) -> StoreResult<Option<Transfer>> {
        self.with(|conn| read_transfer(conn, seq))
    }

    fn account_history(
        &self,
        account: AccountId,
        start_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<Transfer>> {
        self.with(|conn| {
            let mut history = Vec::new();
            let mut seq = start_seq;
            while seq != 0 && history.len() < limit as usize {
                let Some(transfer) = read_transfer(conn, seq)? else {
                    return Err(StoreError::Corrupt(format!(
                        "history points at missing {seq}"
                    )));
                };
                let Some(previous) = transfer.prev_seq_for(account) else {
                    return Err(StoreError::Corrupt(format!(
                        "transfer {seq} is not in the history of account {}",
                        account.0
                    )));
                };
                history.push(transfer);
                seq = previous;
            }
            Ok(history)
        })
    }

    fn idempotency(&self, key: &str) -> StoreResult<Option<IdempotencyRecord>> {
        self.with(|conn| {
            conn.prepare_cached(
                "SELECT key, request_hash, status, body, created_at FROM idempotency
                 WHERE key = ?1",
            )?
            .query_row([key], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, Vec<u8>>(3)?,
                    row.get::<_, i64>(4)?,
                ))
            })
            .optional()?
            .map(|(key, hash, status, body, created_at)| {
                Ok(IdempotencyRecord {
                    key,
                    request_hash: hash
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("request hash length".into()))?,
                    status: u16::try_from(status)
                        .map_err(|_| StoreError::Corrupt(format!("status {status}")))?,
                    body,
                    created_at: Timestamp(created_at),
                })
            })
            .transpose()
        })
    }

    fn api_key(&self, id: &str) -> StoreResult<Option<ApiKeyRecord>> {
        self.with(|conn| {
            conn.prepare_cached(
                "SELECT id, secret_hash, scopes, created_at FROM api_keys WHERE id = ?1",
            )?
            .query_row([id], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })
            .optional()?
            .map(|(id, hash, scopes, created_at)| {
                Ok(ApiKeyRecord {
                    id,
                    secret_hash: hash
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("secret hash length".into()))?,
                    scopes: scopes
                        .split(' ')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    created_at: Timestamp(created_at),
                })
            })
            .transpose()
        })
    }

    fn insert_api_key(&self, key: &ApiKeyRecord) -> StoreResult<bool> {
        self.with(|conn| {
            let inserted = conn.execute(
                "INSERT INTO api_keys (id, secret_hash, scopes, created_at)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (id) DO NOTHING",
                params![
                    key.id,
                    &key.secret_hash[..],
                    key.scopes.join(" "),
                    key.created_at.micros()
                ],
            )?;
            Ok(inserted == 1)
        })
    }

    fn audit(&self, after_seq: u64, limit: u32) -> StoreResult<Vec<auth::AuditEntry>> {
        self.with(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT seq, at, merchant, user_id, device, action, factors, approver, detail,
                        prev_hash, hash
                 FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let mut rows = statement.query(params![u64_int(after_seq), i64::from(limit)])?;
            let mut entries = Vec::new();
            while let Some(row) = rows.next()? {
                let hash = |i: usize| -> StoreResult<[u8; 32]> {
                    row.get::<_, Vec<u8>>(i)?
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("audit hash length".into()))
                };
                let factors: String = row.get(6)?;
                entries.push(auth::AuditEntry {
                    seq: int_u64(row.get(0)?),
                    record: auth::AuditRecord {
                        at_micros: row.get(1)?,
                        merchant_id: row.get(2)?,
                        user_id: row.get(3)?,
                        device_id: row.get(4)?,
                        action: row.get(5)?,
                        factors: factors
                            .split(' ')
                            .filter(|f| !f.is_empty())
                            .map(str::to_owned)
                            .collect(),
                        approver: row.get(7)?,
                        detail: row.get(8)?,
                    },
                    prev_hash: hash(9)?,
                    hash: hash(10)?,
                });
            }
            Ok(entries)
        })
    }

    fn api_key_count(&self) -> StoreResult<u64> {
        self.with(|conn| {
            let count: i64 = conn.query_row("SELECT count(*) FROM api_keys", [], |r| r.get(0))?;
            Ok(int_u64(count))
        })
    }
}

fn read_payment(conn: &Connection, id: PaymentId) -> StoreResult<Option<Payment>> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ?1"
    ))?;
    let mut rows = statement.query([u64_int(id.0)])?;
    match rows.next()? {
        Some(row) => Ok(Some(payment_from_row(row)?)),
        None => Ok(None),
    }
}

fn read_transfer(conn: &Connection, seq: u64) -> StoreResult<Option<Transfer>> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE seq = ?1"
    ))?;
    let mut rows = statement.query([u64_int(seq)])?;
    match rows.next()? {
        Some(row) => Ok(Some(transfer_from_row(row)?.0)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{self, Backend};

    struct TempSqlite(tempfile::TempDir);

    impl Backend for TempSqlite {
        type Writer = SqliteStore;
        type Reader = SqliteReader;
        fn open(&self) -> StoreResult<(SqliteStore, SqliteReader)> {
            SqliteStore::open(self.0.path())
        }
    }

    fn fresh() -> TempSqlite {
        TempSqlite(tempfile::tempdir().expect("temp dir"))
    }

    #[test]
    fn sqlite_passes_the_conformance_suite() {
        conformance::run_all(fresh);
    }

    #[test]
    fn opening_twice_keeps_the_schema_version() {
        let backend = fresh();
        drop(backend.open().expect("first open"));
        let (store, _) = backend.open().expect("second open");
        let version: i64 = store
            .conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .expect("version");
        assert_eq!(version, MIGRATIONS.len() as i64);
    }
}
