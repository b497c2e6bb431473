//! Merchant sign-in, devices and sessions through the real server, and the attacks on them.
//! Each test is named after what it proves; each refusal is checked by its stable code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::app::MerchantApp;
use common::{TestServer, worked_example_parties};
use dzero::client::HttpResponse;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

fn code(response: &HttpResponse) -> Value {
    response.json()["error"]["code"].clone()
}

/// A server with merchant M1 and its master `boss`, and merchant M2 with master `other`.
async fn merchants() -> TestServer {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    worked_example_parties(&mut admin).await;
    let m2 = admin
        .post(
            "/v1/merchants",
            &json!({"id": "M2", "name": "Merchant two", "currency": "CNY", "fee": {"rate_ppm": 3800}}),
        )
        .await
        .unwrap();
    assert_eq!(m2.status, 201);
    for (merchant, username) in [("M1", "boss"), ("M2", "other")] {
        let created = admin
            .post(
                &format!("/v1/merchants/{merchant}/users"),
                &json!({"username": username, "password": PASSWORD}),
            )
            .await
            .unwrap();
        assert_eq!(created.status, 201, "{:?}", created.json());
    }
    server
}

async fn signed_in(
    server: &TestServer,
    merchant: &str,
    user: &str,
    device: &str,
    seed: u8,
) -> MerchantApp {
    let mut app = MerchantApp::install(server.addr, device, seed).await;
    let response = app.sign_in(merchant, user, PASSWORD).await;
    assert_eq!(response.status, 200, "{:?}", response.json());
    app
}

#[tokio::test]
async fn metadata_advertises_s256_es256_and_the_code_flow_only() {
    let server = TestServer::start().await;
    let mut client = server.anonymous().await;
    let metadata = client
        .get("/.well-known/oauth-authorization-server")
        .await
        .unwrap()
        .json();
    assert_eq!(
        metadata["code_challenge_methods_supported"],
        json!(["S256"])
    );
    assert_eq!(
        metadata["dpop_signing_alg_values_supported"],
        json!(["ES256"])
    );
    assert_eq!(
        metadata["grant_types_supported"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(metadata["response_types_supported"], json!(["code"]));
    server.stop().await;
}

#[tokio::test]
async fn the_masters_first_device_signs_in_and_its_tokens_work_with_its_key() {
    let server = merchants().await;
    let mut app = signed_in(&server, "M1", "boss", "phone-1", 1).await;
    let me = app.call("GET", "/v1/me", None).await;
    assert_eq!(me.status, 200, "{:?}", me.json());
    let me = me.json();
    assert_eq!(me["merchant_id"], "M1");
    assert_eq!(me["device_id"], "phone-1");
    assert!(
        me["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("refund"))
    );
    let devices = app.call("GET", "/v1/me/devices", None).await.json();
    assert_eq!(devices["data"][0]["state"], "active");
    server.stop().await;
}

#[tokio::test]
async fn unknown_users_and_wrong_passwords_get_the_same_answer() {
    let server = merchants().await;
    let mut app = MerchantApp::install(server.addr, "phone-1", 1).await;
    let wrong = app.sign_in("M1", "boss", "not the password").await;
    let unknown = app.sign_in("M1", "nobody", "not the password").await;
    assert_eq!((wrong.status, unknown.status), (401, 401));
    assert_eq!(wrong.json(), unknown.json());
    assert_eq!(code(&wrong), "invalid_credentials");
    server.stop().await;
}

#[tokio::test]
async fn brute_force_meets_the_throttle_even_with_the_right_password_at_the_end() {
    let server = merchants().await;
    let mut app = MerchantApp::install(server.addr, "phone-1", 1).await;
    for _ in 0..5 {
        let guess = app.sign_in("M1", "boss", "guess guess guess").await;
        assert_eq!(code(&guess), "invalid_credentials");
    }
    let blocked = app.sign_in("M1", "boss", PASSWORD).await;
    assert_eq!(blocked.status, 429);
    assert_eq!(code(&blocked), "too_many_attempts");
    // The failures are audited against the account.
    let mut admin = server.admin().await;
    let audit = admin.get("/v1/audit").await.unwrap().json();
    let failed = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "login_failed")
        .count();
    assert_eq!(failed, 5);
    server.stop().await;
}

#[tokio::test]
async fn a_plain_or_missing_pkce_challenge_is_refused() {
    let server = merchants().await;
    let mut app = MerchantApp::install(server.addr, "phone-1", 1).await;
    for (method, challenge) in [
        (
            json!("plain"),
            json!("a-verifier-a-verifier-a-verifier-a-verifier-01"),
        ),
        (Value::Null, Value::Null),
    ] {
        let body = json!({
            "merchant_id": "M1", "username": "boss", "password": PASSWORD,
            "client_id": "dzero-app", "redirect_uri": "dzero-app://signed-in", "device_id": "phone-1",
            "code_challenge": challenge, "code_challenge_method": method,
        });
        let refused = app.http.post("/v1/oauth/authorize", &body).await.unwrap();
        assert_eq!(code(&refused), "invalid_grant");
    }
    server.stop().await;
}

#[tokio::test]
async fn an_authorization_code_works_once_and_only_with_its_verifier() {
    let server = merchants().await;
    let mut app = MerchantApp::install(server.addr, "phone-1", 1).await;
    let verifier = "the-right-verifier-the-right-verifier-0123456789";
    let code_value = app.authorize("M1", "boss", PASSWORD, verifier).await.json()["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let wrong = app
        .redeem(&code_value, "a-wrong-verifier-a-wrong-verifier-0123456789")
        .await;
    assert_eq!(code(&wrong), "invalid_grant");
    // The failed try consumed the code: an attacker who saw it cannot retry.
    let again = app.redeem(&code_value, verifier).await;
    assert_eq!(code(&again), "invalid_grant");
    server.stop().await;
}

#[tokio::test]
async fn a_replayed_dpop_proof_is_refused() {
    let server = merchants().await;
    let mut app = signed_in(&server, "M1", "boss", "phone-1", 1).await;
    let token = app.access_token.clone().unwrap();
    let proof = app.proof("GET", "/v1/me", Some(&token));
    assert_eq!(
        app.send("GET", "/v1/me", &token, &proof, None).await.status,
        200
    );
    let replayed = app.send("GET", "/v1/me", &token, &proof, None).await;
    assert_eq!(replayed.status, 401);
    assert_eq!(code(&replayed), "invalid_dpop_proof");
    server.stop().await;
}

#[tokio::test]
async fn a_proof_for_another_method_or_url_is_refused() {
    let server = merchants().await;
    let mut app = signed_in(&server, "M1", "boss", "phone-1", 1).await;
    let token = app.access_token.clone().unwrap();
    let for_post = app.proof("POST", "/v1/me", Some(&token));
    assert_eq!(
        code(&app.send("GET", "/v1/me", &token, &for_post, None).await),
        "invalid_dpop_proof"
    );
    let for_devices = app.proof("GET", "/v1/me/devices", Some(&token));
    assert_eq!(
        code(&app.send("GET", "/v1/me", &token, &for_devices, None).await),
        "invalid_dpop_proof"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_stolen_token_used_with_another_key_is_refused() {
    let server = merchants().await;
    let mut victim = signed_in(&server, "M1", "boss", "phone-1", 1).await;
    let stolen = victim.access_token.clone().unwrap();
    let mut thief = MerchantApp::install(server.addr, "thief", 9).await;
    // The nonce is public: every response carries it.
    thief.nonce = victim.nonce.clone();
    let proof = thief.proof("GET", "/v1/me", Some(&stolen));
    let refused = thief.send("GET", "/v1/me", &stolen, &proof, None).await;
    assert_eq!(refused.status, 401);
    assert_eq!(code(&refused), "invalid_access_token");
    // Nor can the thief refresh the victim's session with its own key.
    thief.refresh_token = victim.refresh_token.clone();
    assert_eq!(code(&thief.refresh().await), "invalid_dpop_proof");
    assert_eq!(victim.call("GET", "/v1/me", None).await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn an_alg_none_proof_is_refused() {
    let server = merchants().await;
    let mut app = signed_in(&server, "M1", "boss", "phone-1", 1).await;
    let token = app.access_token.clone().unwrap();
    let header = json!({ "typ": "dpop+jwt", "alg": "none", "jwk": app.jwk() });
    let claims = json!({
        "jti": "none-1", "htm": "GET", "htu": format!("http://{}/v1/me", server.addr),
        "iat": jiff::Timestamp::now().as_second(), "ath": auth::dpop::token_hash(&token),
    });
    let signed = app.sign(&header, &claims);
    let unsigned = format!("{}.", signed.rsplit_once('.').unwrap().0);
    let refused = app.send("GET", "/v1/me", &token, &unsigned, None).await;
    assert_eq!(code(&refused), "invalid_dpop_proof");
    server.stop().await;
}

#[tokio::test]
async fn a_new_device_waits_for_confirmation_and_a_revoked_one_stops_at_once() {
    let server = merchants().await;
    let mut first = signed_in(&server, "M1", "boss", "phone-1", 1).await;
    let mut second = MerchantApp::install(server.addr, "phone-2", 2).await;
    let pending = second.sign_in("M1", "boss", PASSWORD).await;
    assert_eq!(code(&pending), "device_not_active");
    // The second device cannot confirm itself: it has no session.
    let confirmed = first
        .call("POST", "/v1/me/devices/phone-2/confirm", None)
        .await;
    assert_eq!(confirmed.status, 200, "{:?}", confirmed.json());
    assert_eq!(confirmed.json()["state"], "active");
    let response = second.sign_in("M1", "boss", PASSWORD).await;
    assert_eq!(response.status, 200, "{:?}", response.json());
    assert_eq!(second.call("GET", "/v1/me", None).await.status, 200);

    let revoked = first
        .call("POST", "/v1/me/devices/phone-2/revoke", None)
        .await;
    assert_eq!(revoked.json()["state"], "revoked");
    let after = second.call("GET", "/v1/me", None).await;
    assert_eq!(after.status, 401);
    assert_eq!(code(&after), "session_ended");
    assert_eq!(code(&second.refresh().await), "session_ended");
    let again = second.sign_in("M1", "boss", PASSWORD).await;
    assert_eq!(code(&again), "device_not_active");
    server.stop().await;
}

#[tokio::test]
async fn a_lost_device_is_stopped_and_can_be_found_again() {
    let server = merchants().await;
    let mut first = signed_in(&server, "M1", "boss", "phone-1", 1).await;
    let mut second = MerchantApp::install(server.addr, "phone-2", 2).await;
    second.sign_in("M1", "boss", PASSWORD).await;
    first
        .call("POST", "/v1/me/devices/phone-2/confirm", None)
        .await;
    assert_eq!(second.sign_in("M1", "boss", PASSWORD).await.status, 200);
    let lost = first
        .call(
            "POST",
            "/v1/me/devices/phone-2/lost",
            Some(&json!({"lost": true})),
        )
        .await;
    assert_eq!(lost.json()["state"], "lost");
    assert_eq!(
        code(&second.call("GET", "/v1/me", None).await),
        "session_ended"
    );
    let found = first
        .call(
            "POST",
            "/v1/me/devices/phone-2/lost",
            Some(&json!({"lost": false})),
        )
        .await;
    assert_eq!(found.json()["state"], "active");
    assert_eq!(second.sign_in("M1", "boss", PASSWORD).await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_reused_refresh_token_ends_the_session() {
    let server = merchants().await;
    let mut app = signed_in(&server, "M1", "boss", "phone-1", 1).await;
    let first_refresh = app.refresh_token.clone().unwrap();
    let rotated = app.refresh().await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.json());
    assert_ne!(app.refresh_token.clone().unwrap(), first_refresh);
    assert_eq!(app.call("GET", "/v1/me", None).await.status, 200);

    let current = app.refresh_token.clone();
    app.refresh_token = Some(first_refresh);
    let reused = app.refresh().await;
    assert_eq!(code(&reused), "session_ended");
    // The whole family is gone: the current refresh token and the access token stop too.
    app.refresh_token = current;
    assert_eq!(code(&app.refresh().await), "session_ended");
    assert_eq!(
        code(&app.call("GET", "/v1/me", None).await),
        "session_ended"
    );
    server.stop().await;
}

#[tokio::test]
async fn single_session_policy_signs_the_older_device_out() {
    let server = merchants().await;
    let mut first = signed_in(&server, "M1", "boss", "phone-1", 1).await;
    let set = first
        .call(
            "PUT",
            "/v1/me/login-policy",
            Some(&json!({"mode": "single_session"})),
        )
        .await;
    assert_eq!(set.status, 200, "{:?}", set.json());
    let mut second = MerchantApp::install(server.addr, "phone-2", 2).await;
    second.sign_in("M1", "boss", PASSWORD).await;
    first
        .call("POST", "/v1/me/devices/phone-2/confirm", None)
        .await;
    assert_eq!(second.sign_in("M1", "boss", PASSWORD).await.status, 200);
    let told = first.call("GET", "/v1/me", None).await;
    assert_eq!(code(&told), "session_ended");
    assert!(
        told.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("signed_in_elsewhere")
    );
    server.stop().await;
}

#[tokio::test]
async fn another_merchants_devices_and_sessions_answer_404() {
    let server = merchants().await;
    let mut boss = signed_in(&server, "M1", "boss", "phone-1", 1).await;
    let other = signed_in(&server, "M2", "other", "phone-m2", 3).await;
    let revoke = boss
        .call("POST", "/v1/me/devices/phone-m2/revoke", None)
        .await;
    assert_eq!(revoke.status, 404);
    let session = other.access_token.clone().unwrap();
    let session_id = session.split('.').nth(1).unwrap();
    let end = boss
        .call("DELETE", &format!("/v1/me/sessions/{session_id}"), None)
        .await;
    assert_eq!(end.status, 404);
    let unknown = boss
        .call("POST", "/v1/me/devices/no-such/revoke", None)
        .await;
    assert_eq!(unknown.status, 404, "unknown and foreign look the same");
    server.stop().await;
}

#[tokio::test]
async fn sessions_are_listed_and_ended() {
    let server = merchants().await;
    let mut app = signed_in(&server, "M1", "boss", "phone-1", 1).await;
    let sessions = app.call("GET", "/v1/me/sessions", None).await.json();
    let id = sessions["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(sessions["data"][0]["ended"], Value::Null);
    let ended = app
        .call("DELETE", &format!("/v1/me/sessions/{id}"), None)
        .await;
    assert_eq!(ended.json()["ended"], "signed_out");
    assert_eq!(
        code(&app.call("GET", "/v1/me", None).await),
        "session_ended"
    );
    server.stop().await;
}

/// The master creates operator `name` with `permissions`; it signs in on its own device,
/// which the master confirms.
async fn operator(
    server: &TestServer,
    boss: &mut MerchantApp,
    name: &str,
    permissions: &[&str],
    seed: u8,
) -> MerchantApp {
    let created = boss
        .call(
            "POST",
            "/v1/me/users",
            Some(
                &json!({"username": name, "password": PASSWORD, "permissions": permissions,
                         "refund_cap_single": 10_000, "refund_cap_daily": 50_000}),
            ),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.json());
    let device = format!("phone-{name}");
    let mut app = MerchantApp::install(server.addr, &device, seed).await;
    assert_eq!(
        code(&app.sign_in("M1", name, PASSWORD).await),
        "device_not_active"
    );
    let confirmed = boss
        .call("POST", &format!("/v1/me/devices/{device}/confirm"), None)
        .await;
    assert_eq!(confirmed.status, 200, "{:?}", confirmed.json());
    let signed = app.sign_in("M1", name, PASSWORD).await;
    assert_eq!(signed.status, 200, "{:?}", signed.json());
    app
}

#[tokio::test]
async fn a_view_only_operator_reads_orders_but_cannot_manage_users() {
    let server = merchants().await;
    let mut boss = signed_in(&server, "M1", "boss", "phone-1", 1).await;
    let mut clerk = operator(&server, &mut boss, "clerk", &["view"], 4).await;
    assert_eq!(clerk.call("GET", "/v1/me/payments", None).await.status, 200);
    assert_eq!(clerk.call("GET", "/v1/me/balances", None).await.status, 200);
    let refused = clerk
        .call(
            "POST",
            "/v1/me/users",
            Some(&json!({"username": "mole", "password": PASSWORD, "permissions": ["view"]})),
        )
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(code(&refused), "forbidden");
    server.stop().await;
}

#[tokio::test]
async fn an_operator_cannot_grant_what_it_does_not_hold() {
    let server = merchants().await;
    let mut boss = signed_in(&server, "M1", "boss", "phone-1", 1).await;
    let mut manager = operator(&server, &mut boss, "manager", &["view", "manage_users"], 4).await;
    let refused = manager
        .call(
            "POST",
            "/v1/me/users",
            Some(&json!({"username": "refunder", "password": PASSWORD, "permissions": ["refund"]})),
        )
        .await;
    assert_eq!(code(&refused), "permission_not_held");
    let allowed = manager
        .call(
            "POST",
            "/v1/me/users",
            Some(&json!({"username": "viewer", "password": PASSWORD, "permissions": ["view"]})),
        )
        .await;
    assert_eq!(allowed.status, 201, "{:?}", allowed.json());
    server.stop().await;
}

#[tokio::test]
async fn a_revoked_permission_applies_from_the_next_request_and_disabling_ends_sessions() {
    let server = merchants().await;
    let mut boss = signed_in(&server, "M1", "boss", "phone-1", 1).await;
    let mut clerk = operator(&server, &mut boss, "clerk", &["view"], 4).await;
    assert_eq!(clerk.call("GET", "/v1/me/balances", None).await.status, 200);
    boss.call(
        "PUT",
        "/v1/me/payment-password",
        Some(&json!({"login_password": PASSWORD, "payment_password": PIN})),
    )
    .await;
    // A permission change without step-up is refused.
    let bare = boss
        .call(
            "PUT",
            "/v1/me/users/M1.clerk/permissions",
            Some(&json!({"permissions": [], "challenge_id": "chl_none", "signature": "x.y.z", "payment_password": PIN})),
        )
        .await;
    assert_eq!(code(&bare), "step_up_failed");
    let challenge = boss
        .signed_challenge(&json!({"action": "permissions", "amount": 0, "currency": "", "destination": "M1.clerk"}))
        .await
        .unwrap();
    let changed = boss
        .call(
            "PUT",
            "/v1/me/users/M1.clerk/permissions",
            Some(&json!({"permissions": [], "challenge_id": challenge.0, "signature": challenge.1, "payment_password": PIN})),
        )
        .await;
    assert_eq!(changed.status, 200, "{:?}", changed.json());
    assert_eq!(
        code(&clerk.call("GET", "/v1/me/balances", None).await),
        "forbidden"
    );

    let disabled = boss
        .call(
            "POST",
            "/v1/me/users/M1.clerk/disabled",
            Some(&json!({"disabled": true})),
        )
        .await;
    assert_eq!(disabled.status, 200, "{:?}", disabled.json());
    let after = clerk.call("GET", "/v1/me", None).await;
    assert_eq!(code(&after), "session_ended");
    assert_eq!(
        code(&clerk.sign_in("M1", "clerk", PASSWORD).await),
        "invalid_credentials"
    );
    server.stop().await;
}

#[tokio::test]
async fn another_merchants_payment_answers_404_and_the_order_query_keeps_to_the_caller() {
    let server = merchants().await;
    let mut admin = server.admin().await;
    let mine = admin
        .post("/v1/payments", &common::payin("T-M1", 10_000))
        .await
        .unwrap();
    assert_eq!(mine.status, 201);
    let mut theirs_body = common::payin("T-M2", 20_000);
    theirs_body["merchant_id"] = json!("M2");
    let theirs = admin.post("/v1/payments", &theirs_body).await.unwrap();
    assert_eq!(theirs.status, 201, "{:?}", theirs.json());
    let (mine_id, theirs_id) = (
        mine.json()["id"].as_str().unwrap().to_owned(),
        theirs.json()["id"].as_str().unwrap().to_owned(),
    );

    let mut boss = signed_in(&server, "M1", "boss", "phone-1", 1).await;
    assert_eq!(
        boss.call("GET", &format!("/v1/me/payments/{mine_id}"), None)
            .await
            .status,
        200
    );
    let foreign = boss
        .call("GET", &format!("/v1/me/payments/{theirs_id}"), None)
        .await;
    assert_eq!(foreign.status, 404);
    let listed = boss
        .call("GET", "/v1/me/payments?merchant_id=M2", None)
        .await
        .json();
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [mine_id.as_str()],
        "merchant_id cannot widen the query"
    );
    server.stop().await;
}

const PIN: &str = "480917";

/// M1 with one paid 10,000.00 payment, and its master signed in with a payment password.
async fn refundable() -> (TestServer, MerchantApp, String) {
    let server = merchants().await;
    let mut admin = server.admin().await;
    let paid = admin
        .post("/v1/payments", &common::payin("T-R", 1_000_000))
        .await
        .unwrap();
    assert_eq!(paid.status, 201);
    let payment_id = paid.json()["id"].as_str().unwrap().to_owned();
    let mut boss = signed_in(&server, "M1", "boss", "phone-1", 1).await;
    let set = boss
        .call(
            "PUT",
            "/v1/me/payment-password",
            Some(&json!({"login_password": PASSWORD, "payment_password": PIN})),
        )
        .await;
    assert_eq!(set.status, 200, "{:?}", set.json());
    (server, boss, payment_id)
}

fn refund_operation(payment_id: &str, amount: i64) -> Value {
    json!({"action": "refund", "amount": amount, "currency": "CNY", "destination": payment_id})
}

fn refund_body(payment_id: &str, amount: i64, challenge: &(String, String), pin: &str) -> Value {
    json!({
        "payment_id": payment_id, "amount": amount, "challenge_id": challenge.0,
        "signature": challenge.1, "payment_password": pin,
    })
}

async fn refunded(server: &TestServer, payment_id: &str) -> i64 {
    let mut admin = server.admin().await;
    let payment = admin
        .get(&format!("/v1/payments/{payment_id}"))
        .await
        .unwrap()
        .json();
    payment["refunded"].as_i64().unwrap()
}

#[tokio::test]
async fn a_refund_with_a_signed_challenge_and_the_payment_password_goes_through_and_is_audited() {
    let (server, mut boss, payment_id) = refundable().await;
    let challenge = boss
        .signed_challenge(&refund_operation(&payment_id, 50_000))
        .await
        .unwrap();
    let done = boss
        .call(
            "POST",
            "/v1/me/refunds",
            Some(&refund_body(&payment_id, 50_000, &challenge, PIN)),
        )
        .await;
    assert_eq!(done.status, 201, "{:?}", done.json());
    assert_eq!(done.json()["verification_level"], "signed_two_factor");
    assert_eq!(refunded(&server, &payment_id).await, 50_000);
    let mut admin = server.admin().await;
    let audit = admin.get("/v1/audit").await.unwrap().json();
    let entry = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "refund")
        .cloned()
        .unwrap();
    assert_eq!(
        entry["factors"],
        json!(["device_signature", "payment_password"])
    );
    assert_eq!(entry["device_id"], "phone-1");
    let text = audit.to_string();
    assert!(!text.contains(PIN) && !text.contains(PASSWORD));
    server.stop().await;
}

#[tokio::test]
async fn a_changed_amount_under_a_signed_challenge_is_refused_and_writes_nothing() {
    let (server, mut boss, payment_id) = refundable().await;
    let challenge = boss
        .signed_challenge(&refund_operation(&payment_id, 100))
        .await
        .unwrap();
    let refused = boss
        .call(
            "POST",
            "/v1/me/refunds",
            Some(&refund_body(&payment_id, 900_000, &challenge, PIN)),
        )
        .await;
    assert_eq!(code(&refused), "step_up_failed");
    assert_eq!(refunded(&server, &payment_id).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_reused_challenge_is_refused() {
    let (server, mut boss, payment_id) = refundable().await;
    let challenge = boss
        .signed_challenge(&refund_operation(&payment_id, 100))
        .await
        .unwrap();
    let body = refund_body(&payment_id, 100, &challenge, PIN);
    assert_eq!(
        boss.call("POST", "/v1/me/refunds", Some(&body))
            .await
            .status,
        201
    );
    let again = boss.call("POST", "/v1/me/refunds", Some(&body)).await;
    assert_eq!(code(&again), "step_up_failed");
    assert_eq!(refunded(&server, &payment_id).await, 100);
    server.stop().await;
}

#[tokio::test]
async fn a_challenge_signed_by_another_key_is_refused() {
    let (server, mut boss, payment_id) = refundable().await;
    let (id, _) = boss
        .signed_challenge(&refund_operation(&payment_id, 100))
        .await
        .unwrap();
    let thief = MerchantApp::install(server.addr, "thief", 9).await;
    let claims = json!({"challenge": id});
    let forged = thief.sign(
        &json!({"typ": "dzero-stepup+jwt", "alg": "ES256", "jwk": thief.jwk()}),
        &claims,
    );
    let refused = boss
        .call(
            "POST",
            "/v1/me/refunds",
            Some(&refund_body(&payment_id, 100, &(id, forged), PIN)),
        )
        .await;
    assert_eq!(code(&refused), "step_up_failed");
    assert_eq!(refunded(&server, &payment_id).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_view_only_operator_refunding_is_refused() {
    let (server, mut boss, payment_id) = refundable().await;
    let mut clerk = operator(&server, &mut boss, "clerk", &["view"], 4).await;
    let refused = clerk
        .signed_challenge(&refund_operation(&payment_id, 100))
        .await
        .unwrap_err();
    assert_eq!(code(&refused), "forbidden");
    let direct = clerk
        .call(
            "POST",
            "/v1/me/refunds",
            Some(&refund_body(
                &payment_id,
                100,
                &("chl_x".into(), "x.y.z".into()),
                PIN,
            )),
        )
        .await;
    assert_eq!(code(&direct), "forbidden");
    assert_eq!(refunded(&server, &payment_id).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn an_over_cap_refund_is_refused() {
    let (server, mut boss, payment_id) = refundable().await;
    // The helper gives operators a single-refund cap of 100.00.
    let mut refunder = operator(&server, &mut boss, "refunder", &["view", "refund"], 5).await;
    let set = refunder
        .call(
            "PUT",
            "/v1/me/payment-password",
            Some(&json!({"login_password": PASSWORD, "payment_password": PIN})),
        )
        .await;
    assert_eq!(set.status, 200);
    let challenge = refunder
        .signed_challenge(&refund_operation(&payment_id, 10_001))
        .await
        .unwrap();
    let refused = refunder
        .call(
            "POST",
            "/v1/me/refunds",
            Some(&refund_body(&payment_id, 10_001, &challenge, PIN)),
        )
        .await;
    assert_eq!(code(&refused), "refund_cap_exceeded");
    let challenge = refunder
        .signed_challenge(&refund_operation(&payment_id, 10_000))
        .await
        .unwrap();
    let within = refunder
        .call(
            "POST",
            "/v1/me/refunds",
            Some(&refund_body(&payment_id, 10_000, &challenge, PIN)),
        )
        .await;
    assert_eq!(within.status, 201, "{:?}", within.json());
    assert_eq!(refunded(&server, &payment_id).await, 10_000);
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_payment_password_locks_after_five_tries() {
    let (server, mut boss, payment_id) = refundable().await;
    for _ in 0..5 {
        let challenge = boss
            .signed_challenge(&refund_operation(&payment_id, 100))
            .await
            .unwrap();
        let refused = boss
            .call(
                "POST",
                "/v1/me/refunds",
                Some(&refund_body(&payment_id, 100, &challenge, "000000")),
            )
            .await;
        assert_eq!(code(&refused), "wrong_payment_password");
    }
    let challenge = boss
        .signed_challenge(&refund_operation(&payment_id, 100))
        .await
        .unwrap();
    let locked = boss
        .call(
            "POST",
            "/v1/me/refunds",
            Some(&refund_body(&payment_id, 100, &challenge, PIN)),
        )
        .await;
    assert_eq!(code(&locked), "payment_password_locked");
    assert_eq!(refunded(&server, &payment_id).await, 0);
    // The lock is a logged state change (so it survives a restart) and is audited.
    let mut admin = server.admin().await;
    let audit = admin.get("/v1/audit").await.unwrap().json();
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "payment_password_failed")
            .count(),
        4
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "payment_password_locked")
            .count(),
        1
    );
    server.stop().await;
}

#[tokio::test]
async fn a_common_payment_password_is_refused() {
    let (server, mut boss, _) = refundable().await;
    for pin in ["123456", "111111", "12345"] {
        let refused = boss
            .call(
                "PUT",
                "/v1/me/payment-password",
                Some(&json!({"login_password": PASSWORD, "payment_password": pin})),
            )
            .await;
        assert_eq!(code(&refused), "invalid_payment_password", "{pin}");
    }
    server.stop().await;
}

#[tokio::test]
async fn twenty_identical_refund_requests_in_parallel_make_exactly_one_refund() {
    let (server, mut boss, payment_id) = refundable().await;
    let challenge = boss
        .signed_challenge(&refund_operation(&payment_id, 12_345))
        .await
        .unwrap();
    let body = refund_body(&payment_id, 12_345, &challenge, PIN);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut twin = boss.twin(server.addr, &format!("t{i}")).await;
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            twin.call("POST", "/v1/me/refunds", Some(&body))
                .await
                .status
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 403),
        "{statuses:?}"
    );
    assert_eq!(refunded(&server, &payment_id).await, 12_345);
    server.stop().await;
}

/// The master sets refunds above 1,000.00 to need approval and asks for one of 2,000.00.
async fn pending_approval() -> (TestServer, MerchantApp, String, String) {
    let (server, mut boss, payment_id) = refundable().await;
    let set = boss
        .call(
            "PUT",
            "/v1/me/approval-policy",
            Some(&json!({"refund_above": 100_000})),
        )
        .await;
    assert_eq!(set.status, 200, "{:?}", set.json());
    let challenge = boss
        .signed_challenge(&refund_operation(&payment_id, 200_000))
        .await
        .unwrap();
    let waiting = boss
        .call(
            "POST",
            "/v1/me/refunds",
            Some(&refund_body(&payment_id, 200_000, &challenge, PIN)),
        )
        .await;
    assert_eq!(waiting.status, 202, "{:?}", waiting.json());
    assert_eq!(waiting.json()["status"], "pending");
    let approval_id = waiting.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        refunded(&server, &payment_id).await,
        0,
        "nothing runs before approval"
    );
    (server, boss, payment_id, approval_id)
}

fn approve_operation(approval_id: &str, amount: i64) -> Value {
    json!({"action": "approve", "amount": amount, "currency": "CNY", "destination": approval_id})
}

#[tokio::test]
async fn self_approval_is_refused() {
    let (server, mut boss, payment_id, approval_id) = pending_approval().await;
    let challenge = boss
        .signed_challenge(&approve_operation(&approval_id, 200_000))
        .await
        .unwrap();
    let refused = boss
        .call(
            "POST",
            &format!("/v1/me/approvals/{approval_id}/approve"),
            Some(&json!({"challenge_id": challenge.0, "signature": challenge.1, "payment_password": PIN})),
        )
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(code(&refused), "self_approval");
    assert_eq!(refunded(&server, &payment_id).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_refund_above_the_threshold_runs_only_when_another_user_approves_it() {
    let (server, mut boss, payment_id, approval_id) = pending_approval().await;
    let mut checker = operator(&server, &mut boss, "checker", &["view", "approve"], 6).await;
    checker
        .call(
            "PUT",
            "/v1/me/payment-password",
            Some(&json!({"login_password": PASSWORD, "payment_password": PIN})),
        )
        .await;
    let challenge = checker
        .signed_challenge(&approve_operation(&approval_id, 200_000))
        .await
        .unwrap();
    let approved = checker
        .call(
            "POST",
            &format!("/v1/me/approvals/{approval_id}/approve"),
            Some(&json!({"challenge_id": challenge.0, "signature": challenge.1, "payment_password": PIN})),
        )
        .await;
    assert_eq!(approved.status, 200, "{:?}", approved.json());
    assert_eq!(approved.json()["status"], "approved");
    assert_eq!(approved.json()["checker"], "M1.checker");
    assert_eq!(refunded(&server, &payment_id).await, 200_000);
    // Decided once: a second decision is refused.
    let again = checker
        .call(
            "POST",
            &format!("/v1/me/approvals/{approval_id}/reject"),
            None,
        )
        .await;
    assert_eq!(code(&again), "approval_conflict");
    let listed = boss.call("GET", "/v1/me/approvals", None).await.json();
    assert_eq!(listed["data"][0]["status"], "approved");
    // The audit names the maker as the user and the checker as the approver.
    let mut admin = server.admin().await;
    let audit = admin.get("/v1/audit").await.unwrap().json();
    let entry = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "approval_approved")
        .cloned()
        .unwrap();
    assert_eq!(entry["user_id"], "M1.boss");
    assert_eq!(entry["approver"], "M1.checker");
    server.stop().await;
}

#[tokio::test]
async fn a_rejected_refund_never_runs_and_a_user_without_approve_cannot_decide() {
    let (server, mut boss, payment_id, approval_id) = pending_approval().await;
    let mut clerk = operator(&server, &mut boss, "clerk", &["view"], 4).await;
    let refused = clerk
        .call(
            "POST",
            &format!("/v1/me/approvals/{approval_id}/reject"),
            None,
        )
        .await;
    assert_eq!(code(&refused), "forbidden");
    let mut checker = operator(&server, &mut boss, "checker", &["view", "approve"], 6).await;
    let rejected = checker
        .call(
            "POST",
            &format!("/v1/me/approvals/{approval_id}/reject"),
            None,
        )
        .await;
    assert_eq!(rejected.json()["status"], "rejected");
    assert_eq!(refunded(&server, &payment_id).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn refunds_beyond_the_operators_daily_cap_are_refused() {
    let (server, mut boss, payment_id) = refundable().await;
    // The helper gives operators a daily cap of 500.00 and a single cap of 100.00.
    let mut refunder = operator(&server, &mut boss, "refunder", &["view", "refund"], 5).await;
    refunder
        .call(
            "PUT",
            "/v1/me/payment-password",
            Some(&json!({"login_password": PASSWORD, "payment_password": PIN})),
        )
        .await;
    for _ in 0..5 {
        let challenge = refunder
            .signed_challenge(&refund_operation(&payment_id, 10_000))
            .await
            .unwrap();
        let done = refunder
            .call(
                "POST",
                "/v1/me/refunds",
                Some(&refund_body(&payment_id, 10_000, &challenge, PIN)),
            )
            .await;
        assert_eq!(done.status, 201, "{:?}", done.json());
    }
    let challenge = refunder
        .signed_challenge(&refund_operation(&payment_id, 1))
        .await
        .unwrap();
    let refused = refunder
        .call(
            "POST",
            "/v1/me/refunds",
            Some(&refund_body(&payment_id, 1, &challenge, PIN)),
        )
        .await;
    assert_eq!(code(&refused), "refund_cap_exceeded");
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("daily")
    );
    assert_eq!(refunded(&server, &payment_id).await, 50_000);
    server.stop().await;
}

#[tokio::test]
async fn the_app_exports_its_own_statement_as_csv_and_cannot_name_another_merchant() {
    let (server, mut boss, _) = refundable().await;
    // The business day runs from 01:00 to 01:00 Asia/Shanghai (UTC+8).
    let seconds = jiff::Timestamp::now().as_second() + 8 * 3600 - 3600;
    let date = jiff::civil::date(1970, 1, 1)
        .checked_add(jiff::Span::new().days(seconds.div_euclid(86_400)))
        .unwrap();
    let csv = boss
        .call(
            "GET",
            &format!("/v1/me/statement?date={date}&format=csv"),
            None,
        )
        .await;
    assert_eq!(csv.status, 200, "{:?}", String::from_utf8_lossy(&csv.body));
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    let text = String::from_utf8(csv.body.clone()).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(
            "line,reference,channel_id,state,claims,drawn,paid,refunded,remaining,amount,fee,status"
        )
    );
    assert!(lines.next().unwrap().starts_with("lot,"), "{text}");
    let foreign = boss
        .call(
            "GET",
            &format!("/v1/me/statement?date={date}&merchant_id=M2"),
            None,
        )
        .await;
    assert_eq!(foreign.status, 400);
    server.stop().await;
}

/// Enrolls an authenticator for the app's user; returns its seed, as the authenticator app
/// would hold it.
async fn enroll_totp(app: &mut MerchantApp) -> Vec<u8> {
    let started = app.call("POST", "/v1/me/totp", None).await.json();
    let seed = auth::totp::from_base32(started["secret"].as_str().unwrap()).unwrap();
    assert!(
        started["otpauth_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/")
    );
    let confirmed = app
        .call(
            "POST",
            "/v1/me/totp/confirm",
            Some(&json!({"nonce": started["nonce"], "code": totp_now(&seed)})),
        )
        .await;
    assert_eq!(confirmed.status, 200, "{:?}", confirmed.json());
    seed
}

fn totp_now(seed: &[u8]) -> String {
    let step = auth::totp::step_at(jiff::Timestamp::now().as_second());
    format!("{:06}", auth::totp::code(seed, step))
}

fn otp_refund_body(payment_id: &str, amount: i64, challenge_id: &str, otp: &str) -> Value {
    json!({
        "payment_id": payment_id, "amount": amount, "challenge_id": challenge_id,
        "otp": otp, "payment_password": PIN,
    })
}

#[tokio::test]
async fn a_one_time_code_stands_in_for_the_signature_once_and_only_up_to_the_level_cap() {
    let (server, mut boss, payment_id) = refundable().await;
    let seed = enroll_totp(&mut boss).await;
    let (challenge, _) = boss
        .signed_challenge(&refund_operation(&payment_id, 300_000))
        .await
        .unwrap();
    let code_now = totp_now(&seed);
    let done = boss
        .call(
            "POST",
            "/v1/me/refunds",
            Some(&otp_refund_body(
                &payment_id,
                300_000,
                &challenge,
                &code_now,
            )),
        )
        .await;
    assert_eq!(done.status, 201, "{:?}", done.json());
    assert_eq!(done.json()["verification_level"], "two_factor");
    let mut admin = server.admin().await;
    let audit = admin.get("/v1/audit").await.unwrap().json();
    let refund_entry = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "refund")
        .cloned()
        .unwrap();
    assert_eq!(
        refund_entry["factors"],
        json!(["one_time_code", "payment_password"]),
        "the audit names the factors actually used"
    );
    // The same code again is refused, even with a fresh challenge.
    let (challenge, _) = boss
        .signed_challenge(&refund_operation(&payment_id, 100))
        .await
        .unwrap();
    let reused = boss
        .call(
            "POST",
            "/v1/me/refunds",
            Some(&otp_refund_body(&payment_id, 100, &challenge, &code_now)),
        )
        .await;
    assert_eq!(code(&reused), "step_up_failed");
    // Without the device's signature the day stops at 5,000.00: 3,000.00 done, 2,000.01 more
    // is refused; signed, it goes through.
    let (challenge, _) = boss
        .signed_challenge(&refund_operation(&payment_id, 200_001))
        .await
        .unwrap();
    let next_step = auth::totp::step_at(jiff::Timestamp::now().as_second()) + 1;
    let next = format!("{:06}", auth::totp::code(&seed, next_step));
    let capped = boss
        .call(
            "POST",
            "/v1/me/refunds",
            Some(&otp_refund_body(&payment_id, 200_001, &challenge, &next)),
        )
        .await;
    assert_eq!(code(&capped), "level_cap_exceeded");
    let signed = boss
        .signed_challenge(&refund_operation(&payment_id, 200_001))
        .await
        .unwrap();
    let through = boss
        .call(
            "POST",
            "/v1/me/refunds",
            Some(&refund_body(&payment_id, 200_001, &signed, PIN)),
        )
        .await;
    assert_eq!(through.status, 201, "{:?}", through.json());
    assert_eq!(refunded(&server, &payment_id).await, 500_001);
    server.stop().await;
}

#[tokio::test]
async fn wrong_one_time_codes_lock_the_fallback_after_five_tries() {
    let (server, mut boss, payment_id) = refundable().await;
    let seed = enroll_totp(&mut boss).await;
    let wrong = if totp_now(&seed) == "000000" {
        "000001"
    } else {
        "000000"
    };
    for _ in 0..5 {
        let (challenge, _) = boss
            .signed_challenge(&refund_operation(&payment_id, 100))
            .await
            .unwrap();
        let refused = boss
            .call(
                "POST",
                "/v1/me/refunds",
                Some(&otp_refund_body(&payment_id, 100, &challenge, wrong)),
            )
            .await;
        assert_eq!(code(&refused), "step_up_failed");
    }
    let (challenge, _) = boss
        .signed_challenge(&refund_operation(&payment_id, 100))
        .await
        .unwrap();
    let locked = boss
        .call(
            "POST",
            "/v1/me/refunds",
            Some(&otp_refund_body(
                &payment_id,
                100,
                &challenge,
                &totp_now(&seed),
            )),
        )
        .await;
    assert_eq!(code(&locked), "step_up_failed");
    assert!(
        locked.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("locked")
    );
    assert_eq!(refunded(&server, &payment_id).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn session_fixation_fails() {
    let server = merchants().await;
    // An attacker cannot choose the session a sign-in creates: a client-chosen session id is
    // refused outright...
    let mut victim = MerchantApp::install(server.addr, "phone-1", 1).await;
    let verifier = "fixation-verifier-fixation-verifier-0123456789";
    let code_value = victim
        .authorize("M1", "boss", PASSWORD, verifier)
        .await
        .json()["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({
        "grant_type": "authorization_code", "code": code_value, "code_verifier": verifier,
        "client_id": common::app::CLIENT_ID, "redirect_uri": common::app::REDIRECT_URI,
        "session_id": "ses_chosen_by_attacker",
    });
    let proof = victim.proof("POST", "/v1/oauth/token", None);
    let refused = victim
        .http
        .request(
            "POST",
            "/v1/oauth/token",
            &[("dpop", &proof)],
            Some(body.to_string().as_bytes()),
        )
        .await
        .unwrap();
    assert_eq!(refused.status, 400);
    // ...and every sign-in gets a fresh server-drawn session, bound to its own device key: an
    // attacker's earlier session on the same account is neither reused nor usable by others.
    let mut attacker = victim.twin(server.addr, "attacker").await;
    let signed = attacker.sign_in("M1", "boss", PASSWORD).await;
    assert_eq!(signed.status, 200, "{:?}", signed.json());
    let attacker_session = attacker.call("GET", "/v1/me", None).await.json()["session_id"].clone();
    let response = victim.sign_in("M1", "boss", PASSWORD).await;
    assert_eq!(response.status, 200, "{:?}", response.json());
    let victim_session = response.json()["session_id"].clone();
    assert_ne!(victim_session, attacker_session);
    assert!(victim_session.as_str().unwrap().starts_with("ses_"));
    // Signing in again on the device ended the earlier session there.
    assert_eq!(
        code(&attacker.call("GET", "/v1/me", None).await),
        "session_ended"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_payout_is_bound_to_the_bank_account_and_runs_only_on_another_users_approval() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let channel = admin
        .post(
            "/v1/channels",
            &json!({"id": "C1", "name": "c", "currency": "CNY", "cost": {"rate_ppm": 2500}}),
        )
        .await
        .unwrap();
    assert_eq!(channel.status, 201);
    let merchant = admin
        .post(
            "/v1/merchants",
            &json!({"id": "M3", "name": "m", "currency": "CNY", "fee": {"rate_ppm": 3800},
                    "bank_account": {"holder": "m", "number": "6222000000000001", "bank": "b"}}),
        )
        .await
        .unwrap();
    assert_eq!(merchant.status, 201, "{:?}", merchant.json());
    let master = admin
        .post(
            "/v1/merchants/M3/users",
            &json!({"username": "boss", "password": PASSWORD}),
        )
        .await
        .unwrap();
    assert_eq!(master.status, 201);
    let mut boss = signed_in(&server, "M3", "boss", "phone-1", 1).await;
    boss.call(
        "PUT",
        "/v1/me/payment-password",
        Some(&json!({"login_password": PASSWORD, "payment_password": PIN})),
    )
    .await;
    let payout = |destination: &str| json!({"action": "payout", "amount": 1_000, "currency": "CNY", "destination": destination});
    let body = |challenge: &(String, String)| {
        json!({"amount": 1_000, "kind": "withdrawal", "challenge_id": challenge.0,
               "signature": challenge.1, "payment_password": PIN})
    };
    // A challenge naming another account is refused.
    let elsewhere = boss
        .signed_challenge(&payout("6222999999999999"))
        .await
        .unwrap();
    let refused = boss
        .call("POST", "/v1/me/payouts", Some(&body(&elsewhere)))
        .await;
    assert_eq!(code(&refused), "step_up_failed");

    let challenge = boss
        .signed_challenge(&payout("6222000000000001"))
        .await
        .unwrap();
    let waiting = boss
        .call("POST", "/v1/me/payouts", Some(&body(&challenge)))
        .await;
    assert_eq!(waiting.status, 202, "{:?}", waiting.json());
    assert_eq!(waiting.json()["action"], "payout");
    let approval_id = waiting.json()["id"].as_str().unwrap().to_owned();

    // The checker's approval runs the payout now: with nothing available it is refused, and
    // the approval stays pending with nothing written.
    let created = boss
        .call(
            "POST",
            "/v1/me/users",
            Some(&json!({"username": "checker", "password": PASSWORD, "permissions": ["view", "approve"]})),
        )
        .await;
    assert_eq!(created.status, 201);
    let mut checker = MerchantApp::install(server.addr, "phone-checker", 6).await;
    checker.sign_in("M3", "checker", PASSWORD).await;
    boss.call("POST", "/v1/me/devices/phone-checker/confirm", None)
        .await;
    assert_eq!(checker.sign_in("M3", "checker", PASSWORD).await.status, 200);
    checker
        .call(
            "PUT",
            "/v1/me/payment-password",
            Some(&json!({"login_password": PASSWORD, "payment_password": PIN})),
        )
        .await;
    let approve = checker
        .signed_challenge(&approve_operation(&approval_id, 1_000))
        .await
        .unwrap();
    let decided = checker
        .call(
            "POST",
            &format!("/v1/me/approvals/{approval_id}/approve"),
            Some(&json!({"challenge_id": approve.0, "signature": approve.1, "payment_password": PIN})),
        )
        .await;
    assert_eq!(code(&decided), "insufficient_funds");
    let listed = boss.call("GET", "/v1/me/approvals", None).await.json();
    assert_eq!(listed["data"][0]["status"], "pending");
    let payouts = admin
        .get("/v1/payouts?merchant_id=M3")
        .await
        .unwrap()
        .json();
    assert_eq!(payouts["data"].as_array().unwrap().len(), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_bank_account_change_needs_step_up_and_another_users_approval() {
    let server = merchants().await;
    let mut boss = signed_in(&server, "M1", "boss", "phone-1", 1).await;
    boss.call(
        "PUT",
        "/v1/me/payment-password",
        Some(&json!({"login_password": PASSWORD, "payment_password": PIN})),
    )
    .await;
    let challenge = boss
        .signed_challenge(&json!({"action": "bank_account", "amount": 0, "currency": "", "destination": "6222000000000009"}))
        .await
        .unwrap();
    let body = |number: &str, challenge: &(String, String)| {
        json!({"holder": "Merchant one", "number": number, "bank": "ICBC",
               "challenge_id": challenge.0, "signature": challenge.1, "payment_password": PIN})
    };
    // The challenge names the new account: another number under it is refused.
    let swapped = boss
        .call(
            "PUT",
            "/v1/me/bank-account",
            Some(&body("6222000000000666", &challenge)),
        )
        .await;
    assert_eq!(code(&swapped), "step_up_failed");
    let challenge = boss
        .signed_challenge(&json!({"action": "bank_account", "amount": 0, "currency": "", "destination": "6222000000000009"}))
        .await
        .unwrap();
    let waiting = boss
        .call(
            "PUT",
            "/v1/me/bank-account",
            Some(&body("6222000000000009", &challenge)),
        )
        .await;
    assert_eq!(waiting.status, 202, "{:?}", waiting.json());
    let approval_id = waiting.json()["id"].as_str().unwrap().to_owned();
    let mut admin = server.admin().await;
    let before = admin.get("/v1/merchants/M1").await.unwrap().json();
    assert!(
        !before.to_string().contains("6222000000000009"),
        "not in force before approval"
    );

    let mut checker = operator(&server, &mut boss, "checker", &["view", "approve"], 6).await;
    checker
        .call(
            "PUT",
            "/v1/me/payment-password",
            Some(&json!({"login_password": PASSWORD, "payment_password": PIN})),
        )
        .await;
    let approve = checker
        .signed_challenge(
            &json!({"action": "approve", "amount": 0, "currency": "", "destination": approval_id}),
        )
        .await
        .unwrap();
    let decided = checker
        .call(
            "POST",
            &format!("/v1/me/approvals/{approval_id}/approve"),
            Some(&json!({"challenge_id": approve.0, "signature": approve.1, "payment_password": PIN})),
        )
        .await;
    assert_eq!(decided.status, 200, "{:?}", decided.json());
    let after = admin.get("/v1/merchants/M1").await.unwrap().json();
    assert!(after.to_string().contains("6222000000000009"), "{after}");
    server.stop().await;
}

#[tokio::test]
async fn an_approved_withdrawal_from_the_app_is_paid_from_available_claims() {
    let server = TestServer::sandbox("2026-11-24T09:00:00+08:00").await;
    let mut admin = server.admin().await;
    for (path, body) in [
        (
            "/v1/channels",
            json!({"id": "C1", "name": "c", "currency": "CNY", "cost": {"rate_ppm": 2500}}),
        ),
        (
            "/v1/merchants",
            json!({"id": "M1", "name": "m", "currency": "CNY", "fee": {"rate_ppm": 3800},
            "bank_account": {"holder": "m", "number": "6222000000000001", "bank": "b"}}),
        ),
        (
            "/v1/payments",
            json!({"channel_id": "C1", "merchant_id": "M1", "channel_trade_no": "T1",
            "merchant_order_no": "O1", "amount": 1_000_000, "currency": "CNY",
            "paid_at": "2026-11-24T09:00:00+08:00"}),
        ),
        (
            "/v1/test-clock/advance",
            json!({"to": "2026-11-25T02:00:00+08:00"}),
        ),
        (
            "/v1/channel-settlements",
            json!({"channel_id": "C1", "business_date": "2026-11-24",
            "amount": 997_500, "bank_reference": "B1"}),
        ),
        (
            "/v1/merchants/M1/users",
            json!({"username": "boss", "password": PASSWORD}),
        ),
    ] {
        let response = admin.post(path, &body).await.unwrap();
        assert!(response.status < 300, "{path}: {:?}", response.json());
    }
    let balances = admin.get("/v1/merchants/M1/balances").await.unwrap().json();
    assert_eq!(balances["available"], 996_200);
    // The apps run on the sandbox's time.
    let clock = admin.get("/v1/test-clock").await.unwrap().json();
    let server_time = clock["now"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_second();
    assert_eq!(server_time, 1_795_543_200, "2026-11-25T02:00:00+08:00");
    let mut boss = MerchantApp::install(server.addr, "phone-1", 1).await;
    boss.server_time = Some(server_time);
    assert_eq!(boss.sign_in("M1", "boss", PASSWORD).await.status, 200);
    boss.call(
        "PUT",
        "/v1/me/payment-password",
        Some(&json!({"login_password": PASSWORD, "payment_password": PIN})),
    )
    .await;
    let created = boss
        .call(
            "POST",
            "/v1/me/users",
            Some(&json!({"username": "checker", "password": PASSWORD, "permissions": ["view", "approve"]})),
        )
        .await;
    assert_eq!(created.status, 201);
    let mut checker = MerchantApp::install(server.addr, "phone-checker", 6).await;
    checker.server_time = Some(server_time);
    checker.sign_in("M1", "checker", PASSWORD).await;
    boss.call("POST", "/v1/me/devices/phone-checker/confirm", None)
        .await;
    assert_eq!(checker.sign_in("M1", "checker", PASSWORD).await.status, 200);
    checker
        .call(
            "PUT",
            "/v1/me/payment-password",
            Some(&json!({"login_password": PASSWORD, "payment_password": PIN})),
        )
        .await;

    let challenge = boss
        .signed_challenge(&json!({"action": "payout", "amount": 500_000, "currency": "CNY", "destination": "6222000000000001"}))
        .await
        .unwrap();
    let waiting = boss
        .call(
            "POST",
            "/v1/me/payouts",
            Some(
                &json!({"amount": 500_000, "kind": "withdrawal", "challenge_id": challenge.0,
                         "signature": challenge.1, "payment_password": PIN}),
            ),
        )
        .await;
    assert_eq!(waiting.status, 202, "{:?}", waiting.json());
    let approval_id = waiting.json()["id"].as_str().unwrap().to_owned();
    let approve = checker
        .signed_challenge(&approve_operation(&approval_id, 500_000))
        .await
        .unwrap();
    let decided = checker
        .call(
            "POST",
            &format!("/v1/me/approvals/{approval_id}/approve"),
            Some(&json!({"challenge_id": approve.0, "signature": approve.1, "payment_password": PIN})),
        )
        .await;
    assert_eq!(decided.status, 200, "{:?}", decided.json());
    let decided = decided.json();
    assert_eq!(decided["status"], "approved");
    assert_eq!(decided["payout"]["amount"], 500_000);
    assert_eq!(decided["payout"]["kind"], "withdrawal");
    let payouts = admin
        .get("/v1/payouts?merchant_id=M1")
        .await
        .unwrap()
        .json();
    assert_eq!(payouts["data"].as_array().unwrap().len(), 1);
    let trial = admin.get("/v1/ledger/trial-balance").await.unwrap().json();
    assert_eq!(trial["balanced"], true);
    server.stop().await;
}

#[tokio::test]
async fn a_users_devices_are_told_of_a_new_device_and_of_its_confirmation() {
    let server = merchants().await;
    let mut first = signed_in(&server, "M1", "boss", "phone-1", 1).await;
    let mut second = MerchantApp::install(server.addr, "phone-2", 2).await;
    assert_eq!(
        code(&second.sign_in("M1", "boss", PASSWORD).await),
        "device_not_active"
    );
    let told = first.call("GET", "/v1/me/notifications", None).await.json();
    let events: Vec<&str> = told["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(events.contains(&"device_registered"), "{told}");
    first
        .call("POST", "/v1/me/devices/phone-2/confirm", None)
        .await;
    let after = told["next_after"].as_u64().unwrap();
    let newer = first
        .call("GET", &format!("/v1/me/notifications?after={after}"), None)
        .await
        .json();
    let events: Vec<&str> = newer["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["device_confirmed"], "{newer}");
    // Another merchant's user hears nothing of it.
    let mut other = signed_in(&server, "M2", "other", "phone-m2", 3).await;
    let theirs = other.call("GET", "/v1/me/notifications", None).await.json();
    assert!(
        theirs["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["by"] == "M2.other"),
        "{theirs}"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_app_reads_transaction_detail_of_its_own_accounts_only() {
    let (server, mut boss, _) = refundable().await;
    let pending = boss
        .call("GET", "/v1/me/transactions?account=pending", None)
        .await;
    assert_eq!(pending.status, 200, "{:?}", pending.json());
    let amounts: Vec<i64> = pending.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, [996_200], "the pay-in's claim");
    let bad = boss
        .call("GET", "/v1/me/transactions?account_id=1", None)
        .await;
    assert_eq!(bad.status, 400, "no raw account ids from the app");
    server.stop().await;
}

#[tokio::test]
async fn a_proof_without_the_current_server_nonce_is_refused() {
    let server = merchants().await;
    let mut app = signed_in(&server, "M1", "boss", "phone-1", 1).await;
    let token = app.access_token.clone().unwrap();
    let current = app.nonce.clone().unwrap();
    for stale in [None, Some("a-nonce-the-server-never-gave".to_owned())] {
        app.nonce = stale;
        let proof = app.proof("GET", "/v1/me", Some(&token));
        let refused = app.send("GET", "/v1/me", &token, &proof, None).await;
        assert_eq!(refused.status, 401);
        assert_eq!(code(&refused), "use_dpop_nonce");
        assert_eq!(refused.header("dpop-nonce"), Some(current.as_str()));
    }
    app.nonce = Some(current);
    assert_eq!(app.call("GET", "/v1/me", None).await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn behind_a_tls_proxy_the_advertised_urls_are_https() {
    let server = TestServer::start().await;
    let mut client = server.anonymous().await;
    let metadata = client
        .request(
            "GET",
            "/.well-known/oauth-authorization-server",
            &[("x-forwarded-proto", "https")],
            None,
        )
        .await
        .unwrap()
        .json();
    let issuer = metadata["issuer"].as_str().unwrap();
    assert_eq!(issuer, format!("https://{}", server.addr));
    assert_eq!(
        metadata["token_endpoint"],
        format!("{issuer}/v1/oauth/token")
    );
    server.stop().await;
}

#[tokio::test]
async fn an_operator_limited_to_a_store_sees_and_refunds_only_that_stores_payments() {
    let server = merchants().await;
    let mut admin = server.admin().await;
    let mut ids = Vec::new();
    for (trade, store) in [("T-S1", "S1"), ("T-S2", "S2")] {
        let mut body = common::payin(trade, 100_000);
        body["store_id"] = json!(store);
        let paid = admin.post("/v1/payments", &body).await.unwrap();
        assert_eq!(paid.status, 201, "{:?}", paid.json());
        assert_eq!(paid.json()["store_id"], store);
        ids.push(paid.json()["id"].as_str().unwrap().to_owned());
    }
    let mut boss = signed_in(&server, "M1", "boss", "phone-1", 1).await;
    let created = boss
        .call(
            "POST",
            "/v1/me/users",
            Some(&json!({"username": "shop1", "password": PASSWORD, "permissions": ["view", "refund"],
                         "stores": ["S1"]})),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.json());
    assert_eq!(created.json()["stores"], json!(["S1"]));
    let mut shop = MerchantApp::install(server.addr, "phone-shop1", 7).await;
    shop.sign_in("M1", "shop1", PASSWORD).await;
    boss.call("POST", "/v1/me/devices/phone-shop1/confirm", None)
        .await;
    assert_eq!(shop.sign_in("M1", "shop1", PASSWORD).await.status, 200);

    let listed = shop.call("GET", "/v1/me/payments", None).await.json();
    let seen: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(seen, [ids[0].as_str()]);
    assert_eq!(
        shop.call("GET", &format!("/v1/me/payments/{}", ids[1]), None)
            .await
            .status,
        404
    );
    assert_eq!(
        code(&shop.call("GET", "/v1/me/balances", None).await),
        "forbidden"
    );

    shop.call(
        "PUT",
        "/v1/me/payment-password",
        Some(&json!({"login_password": PASSWORD, "payment_password": PIN})),
    )
    .await;
    let other_store = shop
        .signed_challenge(&refund_operation(&ids[1], 100))
        .await
        .unwrap();
    let refused = shop
        .call(
            "POST",
            "/v1/me/refunds",
            Some(&refund_body(&ids[1], 100, &other_store, PIN)),
        )
        .await;
    assert_eq!(refused.status, 404);
    let own_store = shop
        .signed_challenge(&refund_operation(&ids[0], 100))
        .await
        .unwrap();
    let done = shop
        .call(
            "POST",
            "/v1/me/refunds",
            Some(&refund_body(&ids[0], 100, &own_store, PIN)),
        )
        .await;
    assert_eq!(done.status, 201, "{:?}", done.json());
    // The master sees both stores.
    let all = boss.call("GET", "/v1/me/payments", None).await.json();
    assert_eq!(all["data"].as_array().unwrap().len(), 2);

    // The master moves the operator to the other store, behind step-up; it applies from the
    // operator's next request.
    boss.call(
        "PUT",
        "/v1/me/payment-password",
        Some(&json!({"login_password": PASSWORD, "payment_password": PIN})),
    )
    .await;
    let challenge = boss
        .signed_challenge(
            &json!({"action": "stores", "amount": 0, "currency": "", "destination": "M1.shop1"}),
        )
        .await
        .unwrap();
    let moved = boss
        .call(
            "PUT",
            "/v1/me/users/M1.shop1/stores",
            Some(&json!({"stores": ["S2"], "challenge_id": challenge.0, "signature": challenge.1, "payment_password": PIN})),
        )
        .await;
    assert_eq!(moved.status, 200, "{:?}", moved.json());
    assert_eq!(
        shop.call("GET", &format!("/v1/me/payments/{}", ids[0]), None)
            .await
            .status,
        404
    );
    assert_eq!(
        shop.call("GET", &format!("/v1/me/payments/{}", ids[1]), None)
            .await
            .status,
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn malformed_step_up_requests_are_refused_with_stable_codes_and_write_nothing() {
    let (server, mut boss, payment_id) = refundable().await;
    let challenge = boss
        .signed_challenge(&refund_operation(&payment_id, 100))
        .await
        .unwrap();
    // Both second factors, or neither.
    let mut both = refund_body(&payment_id, 100, &challenge, PIN);
    both["otp"] = json!("123456");
    assert_eq!(
        code(&boss.call("POST", "/v1/me/refunds", Some(&both)).await),
        "invalid_request"
    );
    let mut neither = refund_body(&payment_id, 100, &challenge, PIN);
    neither.as_object_mut().unwrap().remove("signature");
    assert_eq!(
        code(&boss.call("POST", "/v1/me/refunds", Some(&neither)).await),
        "invalid_request"
    );
    // An unknown action, a malformed enrollment nonce, an empty bank-account holder.
    let unknown = boss
        .call(
            "POST",
            "/v1/me/challenges",
            Some(&json!({"action": "wire_everything", "amount": 1, "currency": "CNY", "destination": "x"})),
        )
        .await;
    assert_eq!(code(&unknown), "invalid_request");
    let bad_nonce = boss
        .call(
            "POST",
            "/v1/me/totp/confirm",
            Some(&json!({"nonce": "../../etc", "code": "123456"})),
        )
        .await;
    assert_eq!(code(&bad_nonce), "invalid_request");
    let account = boss
        .call(
            "PUT",
            "/v1/me/bank-account",
            Some(&json!({"holder": " ", "number": "6222000000000009", "bank": "ICBC",
                         "challenge_id": challenge.0, "signature": challenge.1, "payment_password": PIN})),
        )
        .await;
    assert_eq!(code(&account), "invalid_request");
    // The challenge was not spent by any of these: it still makes its one refund.
    let done = boss
        .call(
            "POST",
            "/v1/me/refunds",
            Some(&refund_body(&payment_id, 100, &challenge, PIN)),
        )
        .await;
    assert_eq!(done.status, 201, "{:?}", done.json());
    assert_eq!(refunded(&server, &payment_id).await, 100);
    server.stop().await;
}
