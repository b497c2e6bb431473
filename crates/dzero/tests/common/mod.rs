//! Shared set-up for integration tests: a real server on 127.0.0.1:0 over a temporary data
//! directory, and a client holding its admin key.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod app;

use std::net::SocketAddr;

use dzero::client::HttpClient;
use dzero::server::{ServeArgs, start};
use serde_json::{Value, json};

pub struct TestServer {
    pub addr: SocketAddr,
    pub admin_key: String,
    pub dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// A server under `--sandbox` whose test clock starts at `at` (RFC 3339).
    pub async fn sandbox(at: &str) -> TestServer {
        let at = at.to_owned();
        TestServer::start_with(move |args| {
            args.sandbox = true;
            args.sandbox_start = Some(at);
        })
        .await
    }

    pub async fn start_with(configure: impl FnOnce(&mut ServeArgs)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut args = ServeArgs::for_dir(dir.path().to_path_buf());
        configure(&mut args);
        let started = start(&args).await.unwrap();
        let admin_key = std::fs::read_to_string(dir.path().join("admin.key"))
            .unwrap()
            .trim()
            .to_owned();
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let addr = started.addr;
        let task = tokio::spawn(async move {
            api::serve(started.listener, started.state, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            addr,
            admin_key,
            dir,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    pub async fn admin(&self) -> HttpClient {
        HttpClient::connect(self.addr)
            .await
            .unwrap()
            .with_key(&self.admin_key)
    }

    pub async fn anonymous(&self) -> HttpClient {
        HttpClient::connect(self.addr).await.unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Creates channel C1 (0.25%) and merchant M1 (0.38%), the worked example's parties.
pub async fn worked_example_parties(client: &mut HttpClient) {
    let channel = client
        .post(
            "/v1/channels",
            &json!({"id": "C1", "name": "Channel one", "currency": "CNY", "cost": {"rate_ppm": 2500}}),
        )
        .await
        .unwrap();
    assert_eq!(channel.status, 201, "{:?}", channel.json());
    let merchant = client
        .post(
            "/v1/merchants",
            &json!({"id": "M1", "name": "Merchant one", "currency": "CNY", "fee": {"rate_ppm": 3800}}),
        )
        .await
        .unwrap();
    assert_eq!(merchant.status, 201, "{:?}", merchant.json());
}

pub fn payin(trade: &str, amount: i64) -> Value {
    json!({
        "channel_id": "C1",
        "merchant_id": "M1",
        "channel_trade_no": trade,
        "merchant_order_no": format!("order-{trade}"),
        "amount": amount,
        "currency": "CNY",
        "paid_at": "2026-11-25T10:00:00+08:00",
    })
}
