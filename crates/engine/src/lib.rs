//! The sequencer: one writer thread that owns the platform state, batches requests, applies
//! them in a fixed order and group-commits their effects before anyone is answered.
//!
//! Requests arrive on a bounded queue. The writer takes a batch (up to `batch_commands_max`
//! commands, waiting at most `batch_window_us` for more after the first), stamps it with one
//! timestamp, applies every command to the in-memory [`Platform`] (pure code, no IO), writes the
//! batch's effects in one storage transaction, and only after that transaction is durable
//! answers the callers. Queries ride the same stream, so they never see an unacknowledged
//! effect. If a commit fails the engine stops for good (fail-stop): memory is then ahead of
//! storage and no further answer could be trusted.
//!
//! Architecture invariant: the platform state is touched only by the writer thread; every
//! acknowledged effect is durable; a storage error stops the engine rather than being retried.

mod metrics;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use domain::{Command, CommandResult, Platform};
use ledger::Timestamp;
use store::{
    BatchWrite, IdempotencyRecord, Input, LoggedInput, Store, StoreError, load_platform, log_entry,
};

pub use metrics::{HISTOGRAM_BOUNDS, Histogram, Metrics, MetricsSnapshot};

/// Tuning and limits of one engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Requests that may wait in the queue; submitters are refused (or wait) beyond it.
    pub queue_depth_max: usize,
    /// Commands applied and committed together at most.
    pub batch_commands_max: usize,
    /// After the first request of a batch, how long to wait for more before committing.
    pub batch_window_us: u64,
    /// How long idempotency keys are remembered in memory for deduplication.
    pub idempotency_retention_s: u64,
    /// Cutoffs and settlement runs done per batch at most, so that a run over many merchants
    /// is spread over batches and pay-ins keep flowing between them.
    pub scheduled_work_per_batch_max: usize,
    /// How often the sequencer wakes up without requests, to fire scheduled work on time.
    pub idle_tick_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            queue_depth_max: 65_536,
            batch_commands_max: 8_192,
            batch_window_us: 200,
            idempotency_retention_s: 24 * 3600,
            scheduled_work_per_batch_max: 256,
            idle_tick_ms: 100,
        }
    }
}

/// Where the engine gets its time. The engine never reads the system clock directly, so that
/// tests and the sandbox can move time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// A clock that only moves when told: `dzero serve --sandbox` and tests play whole business
/// weeks with it. It never goes backwards.
#[derive(Debug, Default)]
pub struct TestClock {
    micros: std::sync::atomic::AtomicI64,
}

impl TestClock {
    pub fn starting_at(at: Timestamp) -> TestClock {
        TestClock {
            micros: std::sync::atomic::AtomicI64::new(at.micros()),
        }
    }

    /// Moves the clock to `to`; false (and no change) if that is in the past.
    pub fn advance_to(&self, to: Timestamp) -> bool {
        self.micros.fetch_max(to.micros(), Ordering::AcqRel) <= to.micros()
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.micros.load(Ordering::Acquire))
    }
}

/// The real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        Timestamp(micros)
    }
}

/// Why the engine could not take or answer a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("the engine has stopped after a storage failure")]
    Stopped,
    #[error("the engine queue is full")]
    Overloaded,
}

/// Renders the stored response of an idempotent submission from its results. It runs on the
/// writer thread so that the response is committed in the same transaction as the effects.
pub type Renderer = Box<dyn FnOnce(&[CommandResult]) -> (u16, Vec<u8>) + Send>;

/// A client's idempotency key for one submission.
pub struct Idempotency {
    /// The key, already scoped to the client by the caller.
    pub key: String,
    pub request_hash: [u8; 32],
    pub render: Renderer,
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// How a submission of commands ended.
#[derive(Debug)]
pub enum SubmissionReply {
    /// One result per command, in order; every effect is durable.
    Applied(Vec<CommandResult>),
    /// The key was used before with the same request: the stored response applies.
    Replay,
    /// The key was used before with a different request.
    KeyConflict,
}

/// A read of the state, run in sequence; it returns the delivery of its answer, which is held
/// until everything before it is durable.
type Query = Box<dyn FnOnce(&Platform) -> Delivery + Send>;
type Delivery = Box<dyn FnOnce() + Send>;

enum Request {
    Commands {
        commands: Vec<Command>,
        idempotency: Option<Idempotency>,
        reply: tokio::sync::oneshot::Sender<SubmissionReply>,
    },
    Query(Query),
}

impl Request {
    fn weight(&self) -> usize {
        match self {
            Request::Commands { commands, .. } => commands.len().max(1),
            Request::Query(_) => 1,
        }
    }
}

struct Shared {
    stopped: AtomicBool,
    metrics: Metrics,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// A handle to a running engine; cheap to clone. The writer thread ends when every handle is
/// dropped (after finishing what is queued) or when a commit fails.
#[derive(Clone)]
pub struct Engine {
    sender: SyncSender<Request>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("stopped", &self.is_stopped())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Rebuilds the state from `store` and starts the writer thread.
    pub fn start(
        mut store: impl Store,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Engine, StoreError> {
        let started = Instant::now();
        let horizon = Timestamp(
            clock
                .now()
                .micros()
                .saturating_sub(secs_to_micros(config.idempotency_retention_s)),
        );
        let (platform, keys) = load_platform(&mut store, horizon)?;
        tracing::info!(
            accounts = platform.ledger().accounts().len(),
            journal_entries = platform.ledger().last_seq(),
            payments = platform.payment_count(),
            idempotency_keys = keys.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "state rebuilt from storage"
        );
        let (sender, receiver) = mpsc::sync_channel(config.queue_depth_max);
        let shared = Arc::new(Shared {
            stopped: AtomicBool::new(false),
            metrics: Metrics::default(),
            writer: Mutex::new(None),
        });
        let mut writer = Writer {
            platform,
            store,
            receiver,
            config,
            clock,
            shared: Arc::clone(&shared),
            keys: RecentKeys::default(),
            last_timestamp: Timestamp(0),
        };
        for (key, hash, created_at) in keys {
            writer.keys.insert(key, hash, created_at);
        }
        let handle = std::thread::Builder::new()
            .name("dzero-sequencer".into())
            .spawn(move || writer.run())?;
        if let Ok(mut slot) = shared.writer.lock() {
            *slot = Some(handle);
        }
        Ok(Engine { sender, shared })
    }

    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::Acquire)
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    fn enqueue(&self, request: Request, wait: bool) -> Result<(), EngineError> {
        if self.is_stopped() {
            return Err(EngineError::Stopped);
        }
        self.shared.metrics.queued(1);
        let sent = if wait {
            self.sender.send(request).map_err(|_| EngineError::Stopped)
        } else {
            self.sender.try_send(request).map_err(|e| match e {
                TrySendError::Full(_) => EngineError::Overloaded,
                TrySendError::Disconnected(_) => EngineError::Stopped,
            })
        };
        if sent.is_err() {
            self.shared.metrics.dequeued(1);
        }
        sent
    }

    /// Submits commands to be applied in order in one batch, and waits for their durable
    /// results. A full queue is refused at once with [`EngineError::Overloaded`].
    pub async fn submit(
        &self,
        commands: Vec<Command>,
        idempotency: Option<Idempotency>,
    ) -> Result<SubmissionReply, EngineError> {
        let (reply, receiver) = tokio::sync::oneshot::channel();
        self.enqueue(
            Request::Commands {
                commands,
                idempotency,
                reply,
            },
            false,
        )?;
        receiver.await.map_err(|_| EngineError::Stopped)
    }

    /// Like [`Engine::submit`] for callers outside an async runtime (benchmarks, tools); waits
    /// for room in the queue instead of refusing.
    pub fn submit_blocking(
        &self,
        commands: Vec<Command>,
    ) -> Result<Vec<CommandResult>, EngineError> {
        let (reply, receiver) = tokio::sync::oneshot::channel();
        self.enqueue(
            Request::Commands {
                commands,
                idempotency: None,
                reply,
            },
            true,
        )?;
        match receiver.blocking_recv() {
            Ok(SubmissionReply::Applied(results)) => Ok(results),
            Ok(_) | Err(_) => Err(EngineError::Stopped),
        }
    }

    /// Reads the platform state in sequence: the answer reflects every command acknowledged
    /// before it and nothing that is not yet durable.
    pub async fn query<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Platform) -> T + Send + 'static,
    ) -> Result<T, EngineError> {
        let (reply, receiver) = tokio::sync::oneshot::channel();
        self.enqueue(
            Request::Query(Box::new(move |platform| {
                let answer = read(platform);
                Box::new(move || {
                    let _ = reply.send(answer);
                })
            })),
            false,
        )?;
        receiver.await.map_err(|_| EngineError::Stopped)
    }

    /// Blocking form of [`Engine::query`].
    pub fn query_blocking<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Platform) -> T + Send + 'static,
    ) -> Result<T, EngineError> {
        let (reply, receiver) = tokio::sync::oneshot::channel();
        self.enqueue(
            Request::Query(Box::new(move |platform| {
                let answer = read(platform);
                Box::new(move || {
                    let _ = reply.send(answer);
                })
            })),
            true,
        )?;
        receiver.blocking_recv().map_err(|_| EngineError::Stopped)
    }

    /// Drops this handle and waits for the writer thread to finish, if this was the last
    /// handle. Queued requests are completed first.
    pub fn shutdown(self) {
        let shared = Arc::clone(&self.shared);
        drop(self);
        if Arc::strong_count(&shared) <= 2
            && let Ok(mut slot) = shared.writer.lock()
            && let Some(handle) = slot.take()
        {
            let _ = handle.join();
        }
    }
}

fn secs_to_micros(seconds: u64) -> i64 {
    i64::try_from(seconds.saturating_mul(1_000_000)).unwrap_or(i64::MAX)
}

/// Idempotency keys seen recently, with the digest of their request, oldest first for expiry.
#[derive(Default)]
struct RecentKeys {
    by_key: HashMap<String, [u8; 32]>,
    order: VecDeque<(Timestamp, String)>,
}

impl RecentKeys {
    fn insert(&mut self, key: String, hash: [u8; 32], at: Timestamp) {
        if self.by_key.insert(key.clone(), hash).is_none() {
            self.order.push_back((at, key));
        }
    }

    fn forget_before(&mut self, horizon: Timestamp) {
        while let Some((at, _)) = self.order.front() {
            if *at >= horizon {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.by_key.remove(&key);
            }
        }
    }
}

/// A batch applied in memory, on its way to storage, with the answers held until it is durable.
struct AppliedBatch {
    effects: domain::Effects,
    inputs: Vec<LoggedInput>,
    records: Vec<IdempotencyRecord>,
    commands: usize,
    replies: Vec<(
        tokio::sync::oneshot::Sender<SubmissionReply>,
        SubmissionReply,
    )>,
    deliveries: Vec<Delivery>,
}

/// Batches applied but not yet committed, at most: one being written, this many waiting. The
/// writer applies the next batch while the committer writes the previous one.
const COMMIT_PIPELINE_DEPTH: usize = 1;

struct Writer<S: Store> {
    platform: Platform,
    store: S,
    receiver: Receiver<Request>,
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    shared: Arc<Shared>,
    keys: RecentKeys,
    last_timestamp: Timestamp,
}

impl<S: Store> Writer<S> {
    /// Splits into the apply loop (this thread) and the commit loop (a second thread), joined
    /// by a bounded channel so that applying never runs far ahead of storage.
    fn run(self) {
        let Writer {
            platform,
            mut store,
            receiver,
            config,
            clock,
            shared,
            keys,
            last_timestamp,
        } = self;
        let (to_commit, committing) = mpsc::sync_channel::<AppliedBatch>(COMMIT_PIPELINE_DEPTH);
        let committer_shared = Arc::clone(&shared);
        let committer = std::thread::Builder::new()
            .name("dzero-committer".into())
            .spawn(move || commit_loop(&mut store, &committing, &committer_shared));
        let committer = match committer {
            Ok(handle) => handle,
            Err(error) => {
                tracing::error!(%error, "cannot start the committer thread");
                shared.stopped.store(true, Ordering::Release);
                return;
            }
        };
        let mut applier = Applier {
            work_due: false,
            platform,
            receiver,
            config,
            clock,
            shared,
            keys,
            last_timestamp,
        };
        let mut batch: Vec<Request> = Vec::with_capacity(applier.config.batch_commands_max);
        while applier.collect(&mut batch) {
            let applied = applier.apply(&mut batch);
            if to_commit.send(applied).is_err() {
                // The committer has stopped after a failed commit; this batch's effects will
                // never be durable, so its callers are answered with nothing (Stopped).
                break;
            }
        }
        drop(to_commit);
        let _ = committer.join();
        tracing::info!("sequencer stopped");
    }
}

fn commit_loop(store: &mut impl Store, batches: &Receiver<AppliedBatch>, shared: &Shared) {
    for batch in batches {
        if !batch.effects.is_empty() || !batch.records.is_empty() || !batch.inputs.is_empty() {
            let started = Instant::now();
            let written = store.commit(BatchWrite {
                effects: &batch.effects,
                inputs: &batch.inputs,
                idempotency: &batch.records,
            });
            if let Err(error) = written {
                // Stop before the held replies are dropped, so that a caller who learns its
                // request failed also sees the engine stopped.
                shared.stopped.store(true, Ordering::Release);
                tracing::error!(%error, "commit failed: the engine stops (fail-stop)");
                return;
            }
            shared.metrics.committed(started.elapsed(), batch.commands);
        }
        for deliver in batch.deliveries {
            deliver();
        }
        for (reply, answer) in batch.replies {
            // A caller that went away no longer needs its answer; its effects stand.
            let _ = reply.send(answer);
        }
    }
}

struct Applier {
    /// Scheduled work was left over by the last tick: do not wait for requests.
    work_due: bool,
    platform: Platform,
    receiver: Receiver<Request>,
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    shared: Arc<Shared>,
    keys: RecentKeys,
    last_timestamp: Timestamp,
}

impl Applier {
    /// Waits for a request, then gathers more up to the batch limits. False when every handle
    /// is gone and the queue is empty.
    fn collect(&mut self, batch: &mut Vec<Request>) -> bool {
        // Without requests, wake up anyway to fire scheduled work on time; with work left
        // over from the last tick, do not wait at all.
        let wait = if self.work_due {
            Duration::ZERO
        } else {
            Duration::from_millis(self.config.idle_tick_ms)
        };
        let first = match self.receiver.recv_timeout(wait) {
            Ok(request) => request,
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => return false,
        };
        let mut weight = first.weight();
        batch.push(first);
        let deadline = Instant::now() + Duration::from_micros(self.config.batch_window_us);
        while weight < self.config.batch_commands_max {
            let next = match self.receiver.try_recv() {
                Ok(request) => request,
                Err(_) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    match self.receiver.recv_timeout(deadline - now) {
                        Ok(request) => request,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            weight += next.weight();
            batch.push(next);
        }
        self.shared.metrics.dequeued(batch.len());
        true
    }

    /// A timestamp for the batch: the clock, but strictly after the previous batch's.
    fn stamp(&mut self) -> Timestamp {
        let now = self
            .clock
            .now()
            .max(Timestamp(self.last_timestamp.micros() + 1));
        self.last_timestamp = now;
        now
    }

    /// Applies a batch in memory and returns what must be committed and answered.
    fn apply(&mut self, batch: &mut Vec<Request>) -> AppliedBatch {
        let now = self.stamp();
        let mut inputs = Vec::new();
        let tick = self
            .platform
            .tick(now, self.config.scheduled_work_per_batch_max);
        if tick.changed {
            inputs.push(LoggedInput {
                op: self.platform.ops(),
                at: now,
                input: Input::Tick { work: tick.work },
            });
        }
        self.work_due = tick.more_due;
        self.keys.forget_before(Timestamp(
            now.micros()
                .saturating_sub(secs_to_micros(self.config.idempotency_retention_s)),
        ));
        let mut replies = Vec::with_capacity(batch.len());
        let mut deliveries = Vec::new();
        let mut records: Vec<IdempotencyRecord> = Vec::new();
        let mut commands_applied = 0usize;
        for request in batch.drain(..) {
            match request {
                Request::Commands {
                    commands,
                    idempotency,
                    reply,
                } => {
                    if let Some(id) = &idempotency
                        && let Some(seen) = self.keys.by_key.get(&id.key)
                    {
                        let answer = if *seen == id.request_hash {
                            SubmissionReply::Replay
                        } else {
                            SubmissionReply::KeyConflict
                        };
                        replies.push((reply, answer));
                        continue;
                    }
                    let mut results = Vec::with_capacity(commands.len());
                    for command in &commands {
                        let result = self.platform.apply(now, command);
                        inputs.extend(log_entry(command, &result, self.platform.ops(), now));
                        results.push(result);
                    }
                    commands_applied += commands.len();
                    if let Some(id) = idempotency {
                        let (status, body) = (id.render)(&results);
                        self.keys.insert(id.key.clone(), id.request_hash, now);
                        records.push(IdempotencyRecord {
                            key: id.key,
                            request_hash: id.request_hash,
                            status,
                            body,
                            created_at: now,
                        });
                    }
                    replies.push((reply, SubmissionReply::Applied(results)));
                }
                Request::Query(query) => deliveries.push(query(&self.platform)),
            }
        }
        // Commands may have made work due (lots to mark funded): come back for it at once.
        self.work_due = self.work_due || self.platform.has_due_work(now);
        AppliedBatch {
            effects: self.platform.take_effects(),
            inputs,
            records,
            commands: commands_applied,
            replies,
            deliveries,
        }
    }
}
