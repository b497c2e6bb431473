//! The HTTP API end to end: the real server on 127.0.0.1:0 with real SQLite, over real sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestServer, payin, worked_example_parties};
use dzero::client::HttpClient;
use serde_json::{Value, json};

/// Payment count and trial-balance totals, to prove a refused request wrote nothing.
async fn footprint(client: &mut HttpClient) -> (usize, Value) {
    let payments = client.get("/v1/payments?limit=500").await.unwrap().json();
    let trial = client.get("/v1/ledger/trial-balance").await.unwrap().json();
    (payments["data"].as_array().map_or(0, Vec::len), trial)
}

#[tokio::test]
async fn worked_example_numbers_come_back_from_the_server() {
    let server = TestServer::start().await;
    let mut client = server.admin().await;
    worked_example_parties(&mut client).await;

    let created = client
        .post("/v1/payments", &payin("T1", 1_000_000))
        .await
        .unwrap();
    assert_eq!(created.status, 201);
    let payment = created.json();
    assert_eq!(payment["merchant_fee"], 3_800);
    assert_eq!(payment["channel_cost"], 2_500);
    assert_eq!(payment["merchant_claim"], 996_200);
    assert_eq!(payment["amount"], 1_000_000);

    let balances = client
        .get("/v1/merchants/M1/balances")
        .await
        .unwrap()
        .json();
    assert_eq!(balances["pending"], 996_200);
    assert_eq!(balances["available"], 0);

    let channel = client.get("/v1/channels/C1").await.unwrap().json();
    let receivable = channel["receivable_account_id"].as_u64().unwrap();
    let account = client
        .get(&format!("/v1/ledger/accounts/{receivable}"))
        .await
        .unwrap()
        .json();
    assert_eq!(
        account["balance"], 997_500,
        "the channel owes gross less cost"
    );

    let history = client
        .get(&format!("/v1/ledger/transfers?account_id={receivable}"))
        .await
        .unwrap()
        .json();
    let amounts: Vec<i64> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, [2_500, 3_800, 996_200], "newest first");

    let trial = client.get("/v1/ledger/trial-balance").await.unwrap().json();
    assert_eq!(trial["balanced"], true);
    assert_eq!(trial["currencies"][0]["debits_posted"], 1_002_500);

    let mut fetched = client
        .get(&format!("/v1/payments/{}", payment["id"].as_str().unwrap()))
        .await
        .unwrap()
        .json();
    assert_eq!(
        fetched["refunded"], 0,
        "one payment also says how much was refunded"
    );
    fetched.as_object_mut().unwrap().remove("refunded");
    assert_eq!(fetched, payment);
    server.stop().await;
}

async fn send_keyed(client: &mut HttpClient, body: String) -> dzero::client::HttpResponse {
    client
        .request(
            "POST",
            "/v1/payments",
            &[("idempotency-key", "key-1")],
            Some(body.as_bytes()),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn idempotency_key_replays_the_first_response_and_refuses_another_body() {
    let server = TestServer::start().await;
    let mut client = server.admin().await;
    worked_example_parties(&mut client).await;
    let body = payin("T1", 1_000).to_string();
    let first = send_keyed(&mut client, body.clone()).await;
    assert_eq!(first.status, 201);
    let again = send_keyed(&mut client, body).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let other = send_keyed(&mut client, payin("T2", 1_000).to_string()).await;
    assert_eq!(other.status, 409);
    assert_eq!(other.json()["error"]["code"], "idempotency_key_reused");
    assert_eq!(footprint(&mut client).await.0, 1);

    // An error is replayed too: the key keeps its first answer even after the cause is gone.
    let unknown = json!({"id": "C9", "name": "x", "currency": "usd", "cost": {"rate_ppm": 1}})
        .to_string()
        .into_bytes();
    let refused = client
        .request(
            "POST",
            "/v1/channels",
            &[("idempotency-key", "key-2")],
            Some(&unknown),
        )
        .await
        .unwrap();
    assert_eq!(refused.json()["error"]["code"], "invalid_currency");
    server.stop().await;
}

#[tokio::test]
async fn repeated_trade_number_returns_the_same_payment_or_conflicts() {
    let server = TestServer::start().await;
    let mut client = server.admin().await;
    worked_example_parties(&mut client).await;
    let first = client
        .post("/v1/payments", &payin("T1", 1_000))
        .await
        .unwrap();
    let repeat = client
        .post("/v1/payments", &payin("T1", 1_000))
        .await
        .unwrap();
    assert_eq!(repeat.status, 200);
    assert_eq!(repeat.json(), first.json());
    let conflict = client
        .post("/v1/payments", &payin("T1", 1_001))
        .await
        .unwrap();
    assert_eq!(conflict.status, 409);
    assert_eq!(conflict.json()["error"]["code"], "trade_no_conflict");
    assert_eq!(footprint(&mut client).await.0, 1);
    server.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_stable_code_and_writes_nothing() {
    let server = TestServer::start().await;
    let mut client = server.admin().await;
    worked_example_parties(&mut client).await;
    client
        .post("/v1/payments", &payin("T0", 500))
        .await
        .unwrap();
    let before = footprint(&mut client).await;

    let with = |field: &str, value: Value| {
        let mut body = payin("T1", 1_000);
        body[field] = value;
        body.to_string().into_bytes()
    };
    let oversized = format!(r#"{{"pad":"{}"}}"#, "x".repeat(70_000)).into_bytes();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "truncated JSON",
            br#"{"channel_id":"C1""#.to_vec(),
            400,
            "malformed_json",
        ),
        ("not JSON", b"hello".to_vec(), 400, "malformed_json"),
        ("oversized body", oversized, 413, "payload_too_large"),
        (
            "unknown field",
            with("tip", json!(1)),
            400,
            "invalid_request",
        ),
        (
            "missing field",
            br#"{"channel_id":"C1"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "zero amount",
            with("amount", json!(0)),
            422,
            "amount_must_be_positive",
        ),
        (
            "negative amount",
            with("amount", json!(-5)),
            422,
            "amount_must_be_positive",
        ),
        (
            "fractional amount",
            with("amount", json!(10.5)),
            422,
            "invalid_amount",
        ),
        (
            "overflowing amount",
            String::from_utf8(with("amount", json!(12_345)))
                .unwrap()
                .replace("12345", "99999999999999999999")
                .into_bytes(),
            422,
            "invalid_amount",
        ),
        (
            "too large amount",
            with("amount", json!(i64::MAX)),
            422,
            "amount_too_large",
        ),
        (
            "unknown merchant",
            with("merchant_id", json!("M404")),
            422,
            "unknown_merchant",
        ),
        (
            "unknown channel",
            with("channel_id", json!("C404")),
            422,
            "unknown_channel",
        ),
        (
            "currency mismatch",
            with("currency", json!("USD")),
            422,
            "currency_mismatch",
        ),
        (
            "bad currency",
            with("currency", json!("cny")),
            422,
            "invalid_currency",
        ),
        (
            "bad timestamp",
            with("paid_at", json!("yesterday")),
            422,
            "invalid_timestamp",
        ),
        (
            "bad trade number",
            with("channel_trade_no", json!("a b")),
            422,
            "invalid_id",
        ),
        (
            "same trade, other content",
            payin("T0", 501).to_string().into_bytes(),
            409,
            "trade_no_conflict",
        ),
    ];
    for (name, body, status, code) in cases {
        let response = client
            .request("POST", "/v1/payments", &[], Some(&body))
            .await
            .unwrap();
        assert_eq!(response.status, status, "{name}: {:?}", response.json());
        assert_eq!(response.json()["error"]["code"], code, "{name}");
    }
    assert_eq!(footprint(&mut client).await, before, "nothing was written");
    server.stop().await;
}

#[tokio::test]
async fn api_keys_and_scopes_are_enforced() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    worked_example_parties(&mut admin).await;
    let before = footprint(&mut admin).await;

    let mut anonymous = server.anonymous().await;
    let missing = anonymous
        .post("/v1/payments", &payin("T1", 100))
        .await
        .unwrap();
    assert_eq!(
        (missing.status, missing.json()["error"]["code"].clone()),
        (401, json!("unauthorized"))
    );

    let mut forged = HttpClient::connect(server.addr)
        .await
        .unwrap()
        .with_key(&format!("{}x", server.admin_key));
    let bad = forged.get("/v1/channels").await.unwrap();
    assert_eq!(bad.status, 401);

    let minted = admin
        .post("/v1/api-keys", &json!({"scopes": ["read"]}))
        .await
        .unwrap();
    assert_eq!(minted.status, 201);
    let read_key = minted.json()["key"].as_str().unwrap().to_owned();
    let mut reader = HttpClient::connect(server.addr)
        .await
        .unwrap()
        .with_key(&read_key);
    assert_eq!(reader.get("/v1/channels").await.unwrap().status, 200);
    let denied = reader
        .post("/v1/payments", &payin("T1", 100))
        .await
        .unwrap();
    assert_eq!(denied.status, 403);
    assert_eq!(denied.json()["error"]["code"], "forbidden");
    let no_minting = reader
        .post("/v1/api-keys", &json!({"scopes": ["admin"]}))
        .await
        .unwrap();
    assert_eq!(no_minting.status, 403);
    let unknown_scope = admin
        .post("/v1/api-keys", &json!({"scopes": ["root"]}))
        .await
        .unwrap();
    assert_eq!(unknown_scope.status, 400);

    assert_eq!(footprint(&mut admin).await, before);
    server.stop().await;
}

#[tokio::test]
async fn order_query_filters_and_pages_newest_first() {
    let server = TestServer::start().await;
    let mut client = server.admin().await;
    worked_example_parties(&mut client).await;
    for i in 0..7 {
        let response = client
            .post("/v1/payments", &payin(&format!("T{i}"), 1_000 + i))
            .await
            .unwrap();
        assert_eq!(response.status, 201);
    }
    let page = client
        .get("/v1/payments?merchant_id=M1&limit=3")
        .await
        .unwrap()
        .json();
    let trades = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap_or_else(|| panic!("not a page: {page}"))
            .iter()
            .map(|p| p["channel_trade_no"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(trades(&page), ["T6", "T5", "T4"]);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let next = client
        .get(&format!(
            "/v1/payments?merchant_id=M1&limit=3&cursor={cursor}"
        ))
        .await
        .unwrap()
        .json();
    assert_eq!(trades(&next), ["T3", "T2", "T1"]);
    let last = client
        .get(&format!(
            "/v1/payments?merchant_id=M1&limit=3&cursor={}",
            next["next_cursor"].as_str().unwrap()
        ))
        .await
        .unwrap()
        .json();
    assert_eq!(trades(&last), ["T0"]);
    assert_eq!(last["next_cursor"], Value::Null);

    let by_order = client
        .get("/v1/payments?merchant_id=M1&merchant_order_no=order-T3")
        .await
        .unwrap()
        .json();
    assert_eq!(trades(&by_order), ["T3"]);
    let by_trade = client
        .get("/v1/payments?channel_id=C1&channel_trade_no=T5")
        .await
        .unwrap()
        .json();
    assert_eq!(trades(&by_trade), ["T5"]);
    let all = client.get("/v1/payments?limit=4").await.unwrap().json();
    assert_eq!(trades(&all), ["T6", "T5", "T4", "T3"]);
    let orphan_order = client
        .get("/v1/payments?merchant_order_no=order-T3")
        .await
        .unwrap();
    assert_eq!(orphan_order.json()["error"]["code"], "invalid_request");
    let future = client
        .get("/v1/payments?from=2100-01-01T00:00:00Z")
        .await
        .unwrap()
        .json();
    assert!(future["data"].as_array().unwrap().is_empty());
    let bad_cursor = client.get("/v1/payments?cursor=nope").await.unwrap();
    assert_eq!(bad_cursor.json()["error"]["code"], "invalid_cursor");
    let bad_limit = client.get("/v1/payments?limit=100000").await.unwrap();
    assert_eq!(bad_limit.json()["error"]["code"], "invalid_request");
    server.stop().await;
}

#[tokio::test]
async fn bulk_payins_answer_each_item() {
    let server = TestServer::start().await;
    let mut client = server.admin().await;
    worked_example_parties(&mut client).await;
    let bulk =
        json!({"payments": [payin("B1", 1_000_000), payin("B2", 0), payin("B1", 1_000_000)]});
    let response = client.post("/v1/payments/bulk", &bulk).await.unwrap();
    assert_eq!(response.status, 200);
    let results = response.json()["results"].clone();
    assert_eq!(results[0]["status"], 201);
    assert_eq!(results[0]["payment"]["merchant_claim"], 996_200);
    assert_eq!(results[1]["status"], 422);
    assert_eq!(results[1]["error"]["code"], "amount_must_be_positive");
    assert_eq!(
        results[2]["status"], 200,
        "the repeat in the same batch finds the first"
    );
    assert_eq!(results[2]["payment"]["id"], results[0]["payment"]["id"]);
    let empty = client
        .post("/v1/payments/bulk", &json!({"payments": []}))
        .await
        .unwrap();
    assert_eq!(empty.json()["error"]["code"], "batch_too_large");
    server.stop().await;
}

#[tokio::test]
async fn operational_endpoints_and_unknown_routes() {
    let server = TestServer::start().await;
    let mut client = server.anonymous().await;
    assert_eq!(client.get("/healthz").await.unwrap().status, 200);
    let metrics = client.get("/metrics").await.unwrap();
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(text.contains("dzero_engine_commit_latency_microseconds_bucket"));
    assert!(text.contains("dzero_engine_queue_depth"));
    let served = client.get("/v1/openapi.json").await.unwrap().json();
    assert_eq!(served, api::openapi::document());
    let missing = client.get("/v1/nothing-here").await.unwrap();
    assert_eq!(
        (missing.status, missing.json()["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    let wrong = client
        .request("DELETE", "/v1/channels", &[], None)
        .await
        .unwrap();
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.json()["error"]["code"], "method_not_allowed");
    server.stop().await;
}

#[tokio::test]
async fn creating_parties_is_idempotent_and_listable() {
    let server = TestServer::start().await;
    let mut client = server.admin().await;
    worked_example_parties(&mut client).await;
    let same = client
        .post("/v1/merchants", &json!({"id": "M1", "name": "Merchant one", "currency": "CNY", "fee": {"rate_ppm": 3800}}))
        .await
        .unwrap();
    assert_eq!(same.status, 200);
    let conflict = client
        .post(
            "/v1/merchants",
            &json!({"id": "M1", "name": "Merchant one", "currency": "CNY", "fee": {"rate_ppm": 1}}),
        )
        .await
        .unwrap();
    assert_eq!(conflict.json()["error"]["code"], "merchant_conflict");
    let bad_fee = client
        .post("/v1/merchants", &json!({"id": "M2", "name": "m", "currency": "CNY", "fee": {"rate_ppm": 1, "min": 10, "max": 5}}))
        .await
        .unwrap();
    assert_eq!(bad_fee.json()["error"]["code"], "invalid_fee_schedule");
    let list = client.get("/v1/merchants").await.unwrap().json();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(client.get("/v1/merchants/M404").await.unwrap().status, 404);
    server.stop().await;
}

#[tokio::test]
async fn a_merchant_master_account_is_created_audited_and_never_shows_its_password() {
    let server = TestServer::start().await;
    let mut client = server.admin().await;
    worked_example_parties(&mut client).await;
    let created = client
        .post(
            "/v1/merchants/M1/users",
            &json!({"username": "boss", "password": "correct horse battery"}),
        )
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{:?}", created.json());
    let user = created.json();
    assert_eq!(user["role"], "master");
    let text = String::from_utf8(created.body.clone()).unwrap();
    assert!(!text.contains("correct horse") && !text.contains("argon2"));
    let again = client
        .post(
            "/v1/merchants/M1/users",
            &json!({"username": "boss2", "password": "correct horse battery"}),
        )
        .await
        .unwrap();
    assert_eq!(
        again.json()["error"]["code"],
        "user_conflict",
        "one master per merchant"
    );
    let short = client
        .post(
            "/v1/merchants/M1/users",
            &json!({"username": "x", "password": "short"}),
        )
        .await
        .unwrap();
    assert_eq!(short.json()["error"]["code"], "invalid_password");
    let unknown = client
        .post(
            "/v1/merchants/M404/users",
            &json!({"username": "boss", "password": "correct horse battery"}),
        )
        .await
        .unwrap();
    assert_eq!(unknown.json()["error"]["code"], "unknown_merchant");
    let users = client.get("/v1/merchants/M1/users").await.unwrap().json();
    assert_eq!(users["data"].as_array().unwrap().len(), 1);
    let audit = client.get("/v1/audit").await.unwrap().json();
    assert_eq!(audit["data"][0]["action"], "user_created");

    // The stored chain verifies with the command-line tool, and nothing stored holds the
    // password in clear.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dzero"))
        .args(["audit", "verify", "--data-dir"])
        .arg(server.dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("intact: 1 entries"));
    let database = std::fs::read(server.dir.path().join("dzero.db")).unwrap_or_default();
    let wal = std::fs::read(server.dir.path().join("dzero.db-wal")).unwrap_or_default();
    for bytes in [database, wal] {
        assert!(!bytes.windows(13).any(|w| w == b"correct horse"));
    }
    server.stop().await;
}
