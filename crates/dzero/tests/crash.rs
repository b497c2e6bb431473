//! Crash safety: the real `dzero serve` binary takes pay-ins from concurrent clients, is killed
//! with SIGKILL mid-load, and restarted on the same data directory. Every acknowledged pay-in
//! must be there; an unacknowledged one may be there or not, but never half (its postings and
//! its record come together); the books balance.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{payin, worked_example_parties};
use dzero::client::HttpClient;

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn spawn_server(dir: &std::path::Path, addr: SocketAddr) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dzero"))
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--listen", &addr.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_ready(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut client) = HttpClient::connect(addr).await
            && let Ok(response) = client.get("/healthz").await
            && response.status == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_no_acknowledged_payin_and_leaves_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut child = spawn_server(dir.path(), addr);
    wait_ready(addr).await;
    let key = std::fs::read_to_string(dir.path().join("admin.key"))
        .unwrap()
        .trim()
        .to_owned();
    let mut admin = HttpClient::connect(addr).await.unwrap().with_key(&key);
    worked_example_parties(&mut admin).await;

    let acknowledged = Arc::new(Mutex::new(Vec::<(String, i64)>::new()));
    let attempted = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for writer in 0..16 {
        let (acknowledged, attempted, key) = (
            Arc::clone(&acknowledged),
            Arc::clone(&attempted),
            key.clone(),
        );
        writers.push(tokio::spawn(async move {
            let Ok(client) = HttpClient::connect(addr).await else {
                return;
            };
            let mut client = client.with_key(&key);
            for i in 0.. {
                let trade = format!("W{writer}-{i}");
                let amount = 10_000 + i64::from(writer) * 1_000 + i;
                attempted.lock().unwrap().push(trade.clone());
                match client.post("/v1/payments", &payin(&trade, amount)).await {
                    Ok(response) if response.status == 201 => {
                        acknowledged.lock().unwrap().push((trade, amount));
                    }
                    _ => return,
                }
            }
        }));
    }
    // Let the load build up, then kill the server without warning.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acknowledged.lock().unwrap().len() < 2_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    for writer in writers {
        let _ = writer.await;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let attempted = attempted.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 100,
        "only {} acknowledged before the kill",
        acknowledged.len()
    );

    let mut child = spawn_server(dir.path(), addr);
    wait_ready(addr).await;
    let mut client = HttpClient::connect(addr).await.unwrap().with_key(&key);

    // Every payment the restarted server holds, oldest last.
    let mut stored = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = client
            .get(&format!("/v1/payments?limit=500{cursor}"))
            .await
            .unwrap()
            .json();
        stored.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    let stored_trades: HashSet<String> = stored
        .iter()
        .map(|p| p["channel_trade_no"].as_str().unwrap().to_owned())
        .collect();

    eprintln!(
        "{} acknowledged, {} attempted, {} stored after restart",
        acknowledged.len(),
        attempted.len(),
        stored.len()
    );
    // Nothing acknowledged is lost.
    for (trade, amount) in &acknowledged {
        assert!(
            stored_trades.contains(trade),
            "acknowledged {trade} is missing"
        );
        let found = stored
            .iter()
            .find(|p| p["channel_trade_no"] == trade.as_str())
            .unwrap();
        assert_eq!(found["amount"], *amount);
    }
    // Nothing appears that was never sent.
    let attempted: HashSet<String> = attempted.into_iter().collect();
    assert!(stored_trades.is_subset(&attempted));

    // Nothing is half there: the ledger holds exactly the postings of the stored payments.
    let claims: i64 = stored
        .iter()
        .map(|p| p["merchant_claim"].as_i64().unwrap())
        .sum();
    let expected_from_channel: i64 = stored
        .iter()
        .map(|p| p["amount"].as_i64().unwrap() - p["channel_cost"].as_i64().unwrap())
        .sum();
    let balances = client
        .get("/v1/merchants/M1/balances")
        .await
        .unwrap()
        .json();
    assert_eq!(balances["pending"], claims);
    let channel = client.get("/v1/channels/C1").await.unwrap().json();
    let receivable = channel["receivable_account_id"].as_u64().unwrap();
    let account = client
        .get(&format!("/v1/ledger/accounts/{receivable}"))
        .await
        .unwrap()
        .json();
    assert_eq!(account["balance"], expected_from_channel);
    let trial = client.get("/v1/ledger/trial-balance").await.unwrap().json();
    assert_eq!(trial["balanced"], true);

    // The restarted server keeps working, and recognises retries of what it already holds.
    let (trade, amount) = &acknowledged[0];
    let retry = client
        .post("/v1/payments", &payin(trade, *amount))
        .await
        .unwrap();
    assert_eq!(retry.status, 200);
    let fresh = client
        .post("/v1/payments", &payin("after-restart", 777))
        .await
        .unwrap();
    assert_eq!(fresh.status, 201);

    child.kill().unwrap();
    child.wait().unwrap();
}
