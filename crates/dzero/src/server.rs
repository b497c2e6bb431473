//! `dzero serve`: opens the data directory, rebuilds the state, and serves the API until
//! interrupted or until the engine stops after a storage failure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use engine::{Clock, Engine, EngineConfig, SystemClock, TestClock};
use store::SqliteStore;

/// Options of `dzero serve`.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// Directory holding the database and the admin key; created on first start.
    #[arg(long, default_value = "./dzero-data")]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7300")]
    pub listen: SocketAddr,
    /// Largest number of commands committed together.
    #[arg(long, default_value_t = EngineConfig::default().batch_commands_max)]
    pub batch_commands_max: usize,
    /// How long the sequencer waits for more requests after the first of a batch.
    #[arg(long, default_value_t = EngineConfig::default().batch_window_us)]
    pub batch_window_us: u64,
    /// Requests that may wait for the sequencer; beyond it requests get 503 overloaded.
    #[arg(long, default_value_t = EngineConfig::default().queue_depth_max)]
    pub queue_depth_max: usize,
    /// Sandbox mode: a test clock that moves only by `POST /v1/test-clock/advance`, starting
    /// at the real time. Payouts go to the built-in sandbox payout channel in every mode.
    #[arg(long)]
    pub sandbox: bool,
    /// With --sandbox: where the test clock starts (RFC 3339); default now.
    #[arg(long, requires = "sandbox")]
    pub sandbox_start: Option<String>,
}

impl ServeArgs {
    /// Defaults for a data directory, as the command line would give them.
    pub fn for_dir(data_dir: PathBuf) -> ServeArgs {
        let config = EngineConfig::default();
        ServeArgs {
            data_dir,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            batch_commands_max: config.batch_commands_max,
            batch_window_us: config.batch_window_us,
            queue_depth_max: config.queue_depth_max,
            sandbox: false,
            sandbox_start: None,
        }
    }

    fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            batch_commands_max: self.batch_commands_max,
            batch_window_us: self.batch_window_us,
            queue_depth_max: self.queue_depth_max,
            ..EngineConfig::default()
        }
    }
}

/// A started server: its address and the state it serves.
#[derive(Debug)]
pub struct Started {
    pub addr: SocketAddr,
    pub state: api::AppState,
    pub listener: tokio::net::TcpListener,
}

/// Opens the store, rebuilds the engine, creates the admin key on first start and binds.
pub async fn start(args: &ServeArgs) -> anyhow::Result<Started> {
    let (store, reader) = SqliteStore::open(&args.data_dir)
        .with_context(|| format!("opening the store in {}", args.data_dir.display()))?;
    let test_clock = if args.sandbox {
        let start = match &args.sandbox_start {
            Some(text) => ledger::Timestamp(
                text.parse::<jiff::Timestamp>()
                    .with_context(|| format!("--sandbox-start {text:?} is not RFC 3339"))?
                    .as_microsecond(),
            ),
            None => SystemClock.now(),
        };
        Some(Arc::new(TestClock::starting_at(start)))
    } else {
        None
    };
    let clock: Arc<dyn Clock> = match &test_clock {
        Some(test) => test.clone(),
        None => Arc::new(SystemClock),
    };
    if let Some(path) = api::ensure_admin_key(&reader, &args.data_dir, clock.now())
        .map_err(|e| anyhow::anyhow!("creating the admin key: {}", e.message))?
    {
        tracing::info!(path = %path.display(), "first start: admin API key written");
    }
    let engine =
        Engine::start(store, args.engine_config(), clock.clone()).context("starting the engine")?;
    let missing = engine
        .query(crate::calendars::bundled_missing)
        .await
        .context("reading calendars")??;
    if !missing.is_empty() {
        let years = missing.len();
        engine
            .submit(missing, None)
            .await
            .context("loading calendars")?;
        tracing::info!(years, "bundled calendar years loaded");
    }
    tokio::spawn(crate::payouts::dispatch(
        engine.clone(),
        Arc::new(crate::payouts::SandboxPayoutChannel),
    ));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let pepper =
        crate::secrets::load_or_create_pepper(&args.data_dir).context("reading the pepper")?;
    let hasher = Arc::new(auth::SecretHasher::new(&pepper));
    let state = api::AppState::new(engine, Arc::new(reader), clock, test_clock, hasher);
    Ok(Started {
        addr,
        state,
        listener,
    })
}

/// Runs the server until Ctrl-C / SIGTERM, or until the engine stops (then it fails).
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let started = start(&args).await?;
    tracing::info!(addr = %started.addr, data_dir = %args.data_dir.display(), "dzero listening");
    let engine = started.state.engine.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<&'static str>();
    let watcher_engine = engine.clone();
    tokio::spawn(async move {
        let reason = tokio::select! {
            () = shutdown_signal() => "signal",
            () = engine_stopped(&watcher_engine) => "engine stopped",
        };
        let _ = stop.send(reason);
    });
    let (reason_tx, reason_rx) = tokio::sync::oneshot::channel();
    api::serve(started.listener, started.state, async move {
        let reason = stopped.await.unwrap_or("signal");
        let _ = reason_tx.send(reason);
    })
    .await?;
    let reason = reason_rx.await.unwrap_or("signal");
    if engine.is_stopped() || reason == "engine stopped" {
        anyhow::bail!("the engine stopped after a storage failure; see the log above");
    }
    engine.shutdown();
    tracing::info!("dzero stopped");
    Ok(())
}

async fn engine_stopped(engine: &Engine) {
    while !engine.is_stopped() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
