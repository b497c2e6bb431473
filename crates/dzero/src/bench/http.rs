//! `dzero bench http`: the real server over loopback. Phase one finds the throughput of single
//! pay-in requests from many keep-alive connections; phase two offers half that rate at a fixed
//! schedule (open loop) and measures latency from each request's scheduled start, so that a
//! stalled server cannot hide its queueing (no coordinated omission).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::client::HttpClient;
use crate::server::{ServeArgs, start};

#[derive(Clone, Debug, clap::Args)]
pub struct HttpArgs {
    /// Keep-alive connections sending requests.
    #[arg(long, default_value_t = 64)]
    pub connections: u64,
    /// Seconds of the throughput phase.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Seconds of the fixed-rate latency phase (at half the measured throughput).
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
    /// Merchants the pay-ins are spread over.
    #[arg(long, default_value_t = 1_000)]
    pub merchants: u64,
    /// Server worker threads.
    #[arg(long, default_value_t = 2)]
    pub server_threads: usize,
    /// Load-generator threads.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
}

pub fn run(args: &HttpArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads)
        .thread_name("server")
        .enable_all()
        .build()?;
    let started = server_runtime.block_on(start(&ServeArgs::for_dir(dir.path().to_path_buf())))?;
    let addr = started.addr;
    let engine = started.state.engine.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = server_runtime.spawn(api::serve(started.listener, started.state, async move {
        let _ = stopped.await;
    }));
    let key = std::fs::read_to_string(dir.path().join("admin.key"))?
        .trim()
        .to_owned();

    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .thread_name("load")
        .enable_all()
        .build()?;
    let result = client_runtime.block_on(drive(addr, &key, args));
    let _ = stop.send(());
    let _ = server_runtime.block_on(server);
    engine.shutdown();
    let (rate, p99_ms) = result?;
    println!(
        "requests_per_sec={} p99_ms={p99_ms:.2}",
        rate.round() as u64
    );
    Ok(())
}

async fn drive(addr: SocketAddr, key: &str, args: &HttpArgs) -> anyhow::Result<(f64, f64)> {
    let mut admin = HttpClient::connect(addr).await?.with_key(key);
    setup(&mut admin, args.merchants).await?;
    let next = Arc::new(AtomicU64::new(0));

    // Phase one: closed loop, as fast as the server answers.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let mut client = HttpClient::connect(addr).await?.with_key(key);
        let (next, merchants) = (Arc::clone(&next), args.merchants);
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let response = client.post("/v1/payments", &payin(n, merchants)).await?;
                if response.status != 201 {
                    bail!("pay-in {n} answered {}", response.status);
                }
                done += 1;
            }
            Ok(done)
        }));
    }
    let mut total = 0u64;
    for task in tasks {
        total += task.await??;
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "throughput: {total} pay-ins in {:.1} s = {rate:.0}/s over {} connections",
        started.elapsed().as_secs_f64(),
        args.connections
    );

    // Phase two: open loop at half the rate; latency measured from the scheduled send time.
    let offered = rate / 2.0;
    let per_connection = offered / args.connections as f64;
    let interval = Duration::from_secs_f64(1.0 / per_connection.max(1e-3));
    let start_at = Instant::now() + Duration::from_millis(100);
    let end_at = start_at + Duration::from_secs(args.latency_seconds);
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let mut client = HttpClient::connect(addr).await?.with_key(key);
        let (next, merchants) = (Arc::clone(&next), args.merchants);
        // Spread the connections' schedules evenly over one interval.
        let offset = interval.mul_f64(c as f64 / args.connections as f64);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut scheduled = start_at + offset;
            while scheduled < end_at {
                tokio::time::sleep_until(scheduled.into()).await;
                let n = next.fetch_add(1, Ordering::Relaxed);
                let response = client.post("/v1/payments", &payin(n, merchants)).await?;
                if response.status != 201 {
                    bail!("pay-in {n} answered {}", response.status);
                }
                latencies.push(scheduled.elapsed());
                scheduled += interval;
            }
            Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    latencies.sort();
    let p = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    eprintln!(
        "latency at {offered:.0}/s offered: {} requests, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        p(0.5),
        p(0.99),
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
    Ok((rate, p(0.99)))
}

async fn setup(admin: &mut HttpClient, merchants: u64) -> anyhow::Result<()> {
    let response = admin
        .post(
            "/v1/channels",
            &json!({"id": "C1", "name": "Hot channel", "currency": "CNY", "cost": {"rate_ppm": 2500}}),
        )
        .await?;
    if response.status != 201 {
        bail!("creating the channel answered {}", response.status);
    }
    for m in 0..merchants {
        let response = admin
            .post(
                "/v1/merchants",
                &json!({"id": format!("M{m}"), "name": format!("Merchant {m}"), "currency": "CNY", "fee": {"rate_ppm": 3800}}),
            )
            .await
            .context("creating merchants")?;
        if response.status != 201 {
            bail!("creating merchant M{m} answered {}", response.status);
        }
    }
    Ok(())
}

fn payin(n: u64, merchants: u64) -> serde_json::Value {
    json!({
        "channel_id": "C1",
        "merchant_id": format!("M{}", n % merchants),
        "channel_trade_no": format!("T{n}"),
        "merchant_order_no": format!("O{n}"),
        "amount": 1_000 + (n % 100_000),
        "currency": "CNY",
        "paid_at": "2026-11-25T10:00:00+08:00",
    })
}
