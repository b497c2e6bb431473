//! Clearing, settlement and advances through the real server, played on the sandbox test
//! clock: the chat's 01:00–05:00 scenario end to end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use dzero::client::HttpClient;
use serde_json::{Value, json};

async fn ok(client: &mut HttpClient, path: &str, body: Value) -> Value {
    let response = client.post(path, &body).await.unwrap();
    assert!(
        response.status == 200 || response.status == 201,
        "{path}: {} {}",
        response.status,
        response.json()
    );
    response.json()
}

async fn clock_to(client: &mut HttpClient, to: &str) {
    ok(client, "/v1/test-clock/advance", json!({ "to": to })).await;
}

async fn payouts(client: &mut HttpClient) -> Vec<Value> {
    client
        .get("/v1/payouts?merchant_id=M1")
        .await
        .unwrap()
        .json()["data"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits (on the wall clock) until the sandbox payout channel has answered every payout.
async fn wait_payouts_done(client: &mut HttpClient) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while payouts(client)
        .await
        .iter()
        .any(|p| p["status"] == "created" || p["status"] == "sent")
    {
        assert!(Instant::now() < deadline, "payouts still in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn balances(client: &mut HttpClient) -> Value {
    client
        .get("/v1/merchants/M1/balances")
        .await
        .unwrap()
        .json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_scenario_advance_at_two_then_settlement_never_pays_more_than_the_claims() {
    let server = TestServer::sandbox("2026-11-24T09:00:00+08:00").await;
    let mut c = server.admin().await;
    ok(&mut c, "/v1/channels", json!({"id": "C1", "name": "Channel one", "currency": "CNY", "cost": {"rate_ppm": 2500}, "settlement_cycle": "T1"})).await;
    ok(&mut c, "/v1/merchants", json!({
        "id": "M1", "name": "Merchant one", "currency": "CNY",
        "fee": {"rate_ppm": 3800},
        "settlement": {"cycle": "T1", "cutoff": "01:00", "run_at": ["05:00"], "payout_fee": 200},
        "advance": {"enabled": true, "rate_ppm": 500, "fixed_fee": 200},
        "bank_account": {"holder": "Merchant one", "number": "6222020000000001", "bank": "ICBC"}
    })).await;
    ok(&mut c, "/v1/funders", json!({"id": "position", "name": "Platform position", "kind": "position", "line": "overnight", "limit": 100_000_000, "priority": 1})).await;

    // Day D (Tuesday 2026-11-24): claims of exactly 100,000.00.
    let payment = ok(&mut c, "/v1/payments", json!({
        "channel_id": "C1", "merchant_id": "M1", "channel_trade_no": "T1", "merchant_order_no": "O1",
        "amount": 10_038_145, "currency": "CNY", "paid_at": "2026-11-24T09:00:00+08:00"
    })).await;
    assert_eq!(payment["merchant_claim"], 10_000_000);

    // 01:00 cutoff, then 02:00: the merchant asks for 60,000.00 in advance.
    clock_to(&mut c, "2026-11-25T02:00:00+08:00").await;
    let lots = c.get("/v1/merchants/M1/lots").await.unwrap().json();
    assert_eq!(lots["data"][0]["state"], "sealed");
    let quote = c
        .get("/v1/payouts/quote?merchant_id=M1&amount=6000000&kind=advance")
        .await
        .unwrap()
        .json();
    assert_eq!(quote["fee"], 3_200, "0.05% + 2.00");
    let b = balances(&mut c).await;
    assert!(b["advance_available"].as_i64().unwrap() > 9_990_000);
    let advance = ok(&mut c, "/v1/payouts", json!({"merchant_id": "M1", "amount": 6_000_000, "kind": "advance", "request_id": "adv-0200"})).await;
    assert_eq!(advance["fee"], 3_200);
    assert_eq!(advance["funder_id"], "position");
    let b = balances(&mut c).await;
    assert_eq!(b["pending"], 3_996_800, "claims drawn at once: 60,032.00");
    assert_eq!(b["advanced"], 6_003_200);
    let exposure = c.get("/v1/reports/exposure?format=csv").await.unwrap();
    let csv = String::from_utf8(exposure.body).unwrap();
    assert!(csv.contains("merchant,M1,6003200"), "{csv}");
    assert!(csv.contains("funder,position,6003200,100000000"), "{csv}");
    // Asking again for more than what is left is refused.
    let refused = c
        .post(
            "/v1/payouts",
            &json!({"merchant_id": "M1", "amount": 4_000_000, "kind": "advance"}),
        )
        .await
        .unwrap();
    assert_eq!(refused.json()["error"]["code"], "insufficient_funds");
    wait_payouts_done(&mut c).await;

    // 05:00: lot D is due but unfunded; nothing more is paid.
    clock_to(&mut c, "2026-11-25T05:30:00+08:00").await;
    assert_eq!(payouts(&mut c).await.len(), 1);

    // 11:00: the channel pays lot D (gross less its 0.25% cost).
    clock_to(&mut c, "2026-11-25T11:00:00+08:00").await;
    let settled = ok(&mut c, "/v1/channel-settlements", json!({"channel_id": "C1", "business_date": "2026-11-24", "amount": 10_013_050, "bank_reference": "B20261125"})).await;
    assert_eq!(settled["discrepancy"], 0);
    let b = balances(&mut c).await;
    assert_eq!(
        (
            b["pending"].clone(),
            b["available"].clone(),
            b["advanced"].clone()
        ),
        (json!(0), json!(3_996_800), json!(0))
    );

    // The next 05:00 run pays what is left, less its own 2.00 fee.
    clock_to(&mut c, "2026-11-26T05:00:00+08:00").await;
    wait_payouts_done(&mut c).await;
    let all = payouts(&mut c).await;
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["kind"], "settlement");
    assert_eq!(all[0]["amount"], 3_996_600);
    assert!(all.iter().all(|p| p["status"] == "succeeded"));
    let paid: i64 = all
        .iter()
        .map(|p| p["amount"].as_i64().unwrap() + p["fee"].as_i64().unwrap())
        .sum();
    assert_eq!(
        paid, 10_000_000,
        "amount plus fees of every payout: exactly the claims"
    );
    let trial = c.get("/v1/ledger/trial-balance").await.unwrap().json();
    assert_eq!(trial["balanced"], true);

    // Reports: the day's margin, the statement (also as CSV) and the exposure, now zero.
    let margin = c
        .get("/v1/reports/margin?date=2026-11-24")
        .await
        .unwrap()
        .json();
    assert_eq!(
        margin["total"],
        38_145 - 25_095,
        "fee 0.38% less cost 0.25% of the pay-in"
    );
    let statement = c
        .get("/v1/reports/settlement-statement?merchant_id=M1&date=2026-11-26&format=csv")
        .await
        .unwrap();
    assert_eq!(
        statement.header("content-type"),
        Some("text/csv; charset=utf-8")
    );
    let text = String::from_utf8(statement.body).unwrap();
    assert!(text.starts_with("line,reference,channel_id"));
    assert!(text.contains("settlement,po_2"), "{text}");
    let exposure = c.get("/v1/reports/exposure").await.unwrap().json();
    assert_eq!(exposure["total"], 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payouts_fail_or_go_unknown_by_the_sandbox_channel_and_operators_resolve_them() {
    let server = TestServer::sandbox("2026-11-24T09:00:00+08:00").await;
    let mut c = server.admin().await;
    ok(
        &mut c,
        "/v1/channels",
        json!({"id": "C1", "name": "c", "currency": "CNY", "cost": {"rate_ppm": 2500}}),
    )
    .await;
    ok(&mut c, "/v1/funders", json!({"id": "position", "name": "p", "kind": "position", "line": "overnight", "limit": 100_000_000})).await;
    for (merchant, number) in [("M1", "6222000000000000"), ("M2", "6222000000009999")] {
        ok(
            &mut c,
            "/v1/merchants",
            json!({
                "id": merchant, "name": merchant, "currency": "CNY", "fee": {"rate_ppm": 3800},
                "advance": {"enabled": true, "rate_ppm": 500, "fixed_fee": 200},
                "bank_account": {"holder": merchant, "number": number, "bank": "b"}
            }),
        )
        .await;
        ok(&mut c, "/v1/payments", json!({
            "channel_id": "C1", "merchant_id": merchant, "channel_trade_no": format!("T-{merchant}"), "merchant_order_no": "O",
            "amount": 1_000_000, "currency": "CNY", "paid_at": "2026-11-24T09:00:00+08:00"
        })).await;
    }
    let failing = ok(
        &mut c,
        "/v1/payouts",
        json!({"merchant_id": "M1", "amount": 100_000, "kind": "advance"}),
    )
    .await;
    let unknown = ok(
        &mut c,
        "/v1/payouts",
        json!({"merchant_id": "M2", "amount": 100_000, "kind": "advance"}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let f = c
            .get(&format!("/v1/payouts/{}", failing["id"].as_str().unwrap()))
            .await
            .unwrap()
            .json();
        let u = c
            .get(&format!("/v1/payouts/{}", unknown["id"].as_str().unwrap()))
            .await
            .unwrap()
            .json();
        if f["status"] == "failed" && u["status"] == "unknown" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "statuses: {} {}",
            f["status"],
            u["status"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m1 = c.get("/v1/merchants/M1/balances").await.unwrap().json();
    assert_eq!(m1["pending"], 996_200, "a failed payout's claims come back");
    assert_eq!(m1["advanced"], 0);
    let resolved = ok(
        &mut c,
        &format!("/v1/payouts/{}/resolve", unknown["id"].as_str().unwrap()),
        json!({"result": "succeeded"}),
    )
    .await;
    assert_eq!(resolved["status"], "succeeded");
    let again = c
        .post(
            &format!("/v1/payouts/{}/resolve", unknown["id"].as_str().unwrap()),
            &json!({"result": "failed"}),
        )
        .await
        .unwrap();
    assert_eq!(again.json()["error"]["code"], "payout_state_conflict");
    server.stop().await;
}

#[tokio::test]
async fn the_test_clock_exists_only_in_sandbox_and_never_goes_back() {
    let plain = TestServer::start().await;
    let mut c = plain.admin().await;
    let refused = c
        .post(
            "/v1/test-clock/advance",
            &json!({"to": "2030-01-01T00:00:00Z"}),
        )
        .await
        .unwrap();
    assert_eq!(refused.status, 404);
    plain.stop().await;

    let sandbox = TestServer::sandbox("2026-11-24T09:00:00+08:00").await;
    let mut c = sandbox.admin().await;
    let back = c
        .post(
            "/v1/test-clock/advance",
            &json!({"to": "2026-11-24T08:00:00+08:00"}),
        )
        .await
        .unwrap();
    assert_eq!(back.json()["error"]["code"], "clock_backwards");
    let calendar = c.get("/v1/calendars/cn").await.unwrap().json();
    assert_eq!(
        calendar["years"].as_array().unwrap().len(),
        2,
        "2025 and 2026 are bundled"
    );
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_reversals_holds_and_freezes_over_http() {
    let server = TestServer::sandbox("2026-11-24T09:00:00+08:00").await;
    let mut c = server.admin().await;
    ok(
        &mut c,
        "/v1/channels",
        json!({"id": "C1", "name": "c", "currency": "CNY", "cost": {"rate_ppm": 2500}}),
    )
    .await;
    ok(&mut c, "/v1/merchants", json!({
        "id": "M1", "name": "m", "currency": "CNY", "fee": {"rate_ppm": 3800}, "refund_fee_returned": true,
        "settlement": {"payout_fee": 200},
        "bank_account": {"holder": "m", "number": "6222000000000001", "bank": "b"}
    })).await;
    let payment = ok(&mut c, "/v1/payments", json!({
        "channel_id": "C1", "merchant_id": "M1", "channel_trade_no": "T1", "merchant_order_no": "O1",
        "amount": 1_000_000, "currency": "CNY", "paid_at": "2026-11-24T09:00:00+08:00"
    })).await;
    let id = payment["id"].as_str().unwrap().to_owned();

    let refund = ok(
        &mut c,
        "/v1/refunds",
        json!({"payment_id": id, "amount": 400_000, "request_id": "rf-1"}),
    )
    .await;
    assert_eq!(
        refund["fee_returned"], 1_520,
        "0.38% of 4,000.00 comes back"
    );
    assert_eq!(refund["from_claims"], 398_480);
    let again = ok(
        &mut c,
        "/v1/refunds",
        json!({"payment_id": id, "amount": 400_000, "request_id": "rf-1"}),
    )
    .await;
    assert_eq!(
        again, refund,
        "the same request id returns the first refund"
    );
    let too_much = c
        .post("/v1/refunds", &json!({"payment_id": id, "amount": 600_001}))
        .await
        .unwrap();
    assert_eq!(too_much.json()["error"]["code"], "refund_exceeds_payment");
    let unknown = c
        .post(
            "/v1/refunds",
            &json!({"payment_id": "pay_999", "amount": 1}),
        )
        .await
        .unwrap();
    assert_eq!(unknown.json()["error"]["code"], "unknown_payment");
    let fetched = c.get(&format!("/v1/payments/{id}")).await.unwrap().json();
    assert_eq!(fetched["refunded"], 400_000);

    // A chargeback of the rest: the claims cover it (fee kept on reversals by the same rule).
    let reversal = ok(
        &mut c,
        "/v1/reversals",
        json!({"payment_id": id, "amount": 600_000, "reference": "CB-1"}),
    )
    .await;
    assert_eq!(reversal["kind"], "reversal");
    let b = c.get("/v1/merchants/M1/balances").await.unwrap().json();
    assert_eq!(b["pending"], 0);
    assert_eq!(b["debt"], 0);

    // Holds need available money; freezing stops payouts.
    let p2 = ok(&mut c, "/v1/payments", json!({
        "channel_id": "C1", "merchant_id": "M1", "channel_trade_no": "T2", "merchant_order_no": "O2",
        "amount": 2_000_000, "currency": "CNY", "paid_at": "2026-11-24T10:00:00+08:00"
    })).await;
    assert_eq!(p2["merchant_claim"], 1_992_400);
    let no_money = c
        .post(
            "/v1/merchants/M1/holds",
            &json!({"amount": 100, "reason": "risk"}),
        )
        .await
        .unwrap();
    assert_eq!(
        no_money.json()["error"]["code"],
        "insufficient_funds",
        "nothing is funded yet"
    );
    clock_to(&mut c, "2026-11-25T02:00:00+08:00").await;
    ok(&mut c, "/v1/channel-settlements", json!({"channel_id": "C1", "business_date": "2026-11-24", "amount": 995_000, "bank_reference": "B1"})).await;
    let hold = ok(
        &mut c,
        "/v1/merchants/M1/holds",
        json!({"hold_id": "h1", "amount": 1_000_000, "reason": "risk review"}),
    )
    .await;
    assert_eq!(hold["active"], true);
    let b = c.get("/v1/merchants/M1/balances").await.unwrap().json();
    assert_eq!(
        (b["available"].clone(), b["frozen"].clone()),
        (json!(992_400), json!(1_000_000))
    );
    ok(&mut c, "/v1/merchants/M1/freeze", json!({"frozen": true})).await;
    let frozen = c
        .post(
            "/v1/payouts",
            &json!({"merchant_id": "M1", "amount": 1_000, "kind": "withdrawal"}),
        )
        .await
        .unwrap();
    assert_eq!(frozen.json()["error"]["code"], "merchant_frozen");
    ok(&mut c, "/v1/merchants/M1/freeze", json!({"frozen": false})).await;
    let released = ok(&mut c, "/v1/holds/h1/release", json!({})).await;
    assert_eq!(released["active"], false);
    ok(
        &mut c,
        "/v1/payouts",
        json!({"merchant_id": "M1", "amount": 1_000_000, "kind": "withdrawal"}),
    )
    .await;
    let trial = c.get("/v1/ledger/trial-balance").await.unwrap().json();
    assert_eq!(trial["balanced"], true);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_statement_with_its_reversals_puts_the_shortfall_on_the_merchant() {
    let server = TestServer::sandbox("2026-11-24T09:00:00+08:00").await;
    let mut c = server.admin().await;
    ok(
        &mut c,
        "/v1/channels",
        json!({"id": "C1", "name": "c", "currency": "CNY", "cost": {"rate_ppm": 2500}}),
    )
    .await;
    ok(
        &mut c,
        "/v1/merchants",
        json!({"id": "M1", "name": "m", "currency": "CNY", "fee": {"rate_ppm": 3800}}),
    )
    .await;
    let mut ids = Vec::new();
    for trade in ["T1", "T2"] {
        let p = ok(&mut c, "/v1/payments", json!({
            "channel_id": "C1", "merchant_id": "M1", "channel_trade_no": trade, "merchant_order_no": trade,
            "amount": 1_000_000, "currency": "CNY", "paid_at": "2026-11-24T09:00:00+08:00"
        })).await;
        ids.push(p["id"].as_str().unwrap().to_owned());
    }
    clock_to(&mut c, "2026-11-25T02:00:00+08:00").await;
    // The channel owed 2 × 9,975.00, but T2 was charged back: it takes T2's gross back and
    // keeps its fee, so it pays 19,950.00 − 10,000.00.
    let statement = ok(&mut c, "/v1/channel-settlements", json!({
        "channel_id": "C1", "business_date": "2026-11-24", "amount": 995_000, "bank_reference": "B1",
        "reversals": [{"payment_id": ids[1], "amount": 1_000_000, "reference": "CB-T2"}]
    })).await;
    assert_eq!(statement["reversals"][0]["kind"], "reversal");
    assert_eq!(
        statement["discrepancy"], 0,
        "the shortfall is explained by the reversal"
    );
    let b = c.get("/v1/merchants/M1/balances").await.unwrap().json();
    assert_eq!(
        b["available"], 992_400,
        "T1's claim less the 38.00 fee the platform keeps on T2 (refund_fee_returned is off)"
    );
    assert_eq!(b["debt"], 0);
    let trial = c.get("/v1/ledger/trial-balance").await.unwrap().json();
    assert_eq!(trial["balanced"], true);
    server.stop().await;
}

#[tokio::test]
async fn bad_settlement_input_gets_stable_codes_and_writes_nothing() {
    let server = TestServer::sandbox("2026-11-24T09:00:00+08:00").await;
    let mut c = server.admin().await;
    ok(
        &mut c,
        "/v1/channels",
        json!({"id": "C1", "name": "c", "currency": "CNY", "cost": {"rate_ppm": 2500}}),
    )
    .await;
    ok(
        &mut c,
        "/v1/merchants",
        json!({"id": "M1", "name": "m", "currency": "CNY", "fee": {"rate_ppm": 3800}}),
    )
    .await;
    let before = c.get("/v1/ledger/trial-balance").await.unwrap().json();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/v1/merchants",
            json!({"id": "M2", "name": "m", "currency": "CNY", "fee": {"rate_ppm": 1}, "settlement": {"cycle": "T2"}}),
            "invalid_terms",
        ),
        (
            "/v1/merchants",
            json!({"id": "M2", "name": "m", "currency": "CNY", "fee": {"rate_ppm": 1}, "settlement": {"cutoff": "25:00"}}),
            "invalid_terms",
        ),
        (
            "/v1/merchants",
            json!({"id": "M2", "name": "m", "currency": "CNY", "fee": {"rate_ppm": 1}, "settlement": {"run_at": []}}),
            "invalid_terms",
        ),
        (
            "/v1/merchants",
            json!({"id": "M2", "name": "m", "currency": "CNY", "fee": {"rate_ppm": 1}, "advance": {"limit_daily": -1}}),
            "invalid_terms",
        ),
        (
            "/v1/merchants/M404/terms",
            json!({"fee": {"rate_ppm": 1}}),
            "unknown_merchant",
        ),
        (
            "/v1/payouts",
            json!({"merchant_id": "M1", "amount": 100, "kind": "loan"}),
            "invalid_request",
        ),
        (
            "/v1/payouts",
            json!({"merchant_id": "M1", "amount": 0, "kind": "advance"}),
            "amount_must_be_positive",
        ),
        (
            "/v1/payouts",
            json!({"merchant_id": "M1", "amount": 100, "kind": "withdrawal"}),
            "no_bank_account",
        ),
        (
            "/v1/payouts",
            json!({"merchant_id": "M404", "amount": 100, "kind": "withdrawal"}),
            "unknown_merchant",
        ),
        (
            "/v1/funders",
            json!({"id": "f", "name": "f", "kind": "bank", "line": "overnight", "limit": 1}),
            "invalid_request",
        ),
        (
            "/v1/funders",
            json!({"id": "f", "name": "f", "kind": "position", "line": "overnight", "limit": 1.5}),
            "invalid_amount",
        ),
        (
            "/v1/channel-settlements",
            json!({"channel_id": "C1", "business_date": "2026-13-01", "amount": 1, "bank_reference": "B"}),
            "invalid_request",
        ),
        (
            "/v1/channel-settlements",
            json!({"channel_id": "C1", "business_date": "2026-11-23", "amount": 1, "bank_reference": "B"}),
            "nothing_to_fund",
        ),
        (
            "/v1/channel-settlements",
            json!({"channel_id": "C9", "business_date": "2026-11-23", "amount": 1, "bank_reference": "B"}),
            "unknown_channel",
        ),
        (
            "/v1/calendars/cn/years/2027",
            json!({"holidays": ["2026-01-01"], "workdays": [], "source": "x"}),
            "invalid_calendar",
        ),
        (
            "/v1/calendars/cn/years/2027",
            json!({"holidays": ["01/01/2027"], "workdays": [], "source": "x"}),
            "invalid_request",
        ),
        (
            "/v1/refunds",
            json!({"payment_id": "pay_1", "amount": 1}),
            "unknown_payment",
        ),
        (
            "/v1/merchants/M1/holds",
            json!({"amount": 1, "reason": "r"}),
            "insufficient_funds",
        ),
        (
            "/v1/exposure-limit",
            json!({"limit": -1}),
            "amount_must_be_positive",
        ),
    ];
    for (path, body, code) in cases {
        let response = c.post(path, &body).await.unwrap();
        assert_eq!(response.json()["error"]["code"], code, "{path} {body}");
        assert!(response.status >= 400, "{path} {body}");
    }
    assert_eq!(
        c.get("/v1/ledger/trial-balance").await.unwrap().json(),
        before
    );
    assert!(payouts(&mut c).await.is_empty());
    let quote = c
        .get("/v1/payouts/quote?merchant_id=M1&amount=100&kind=advance")
        .await
        .unwrap();
    assert_eq!(quote.json()["error"]["code"], "advance_not_enabled");
    server.stop().await;
}
