//! A small merchant app: it holds a P-256 device key, signs in with the authorization-code
//! flow and PKCE, and signs every request with a DPoP proof. The sign-in tests drive the real
//! server with it, and it shows a client author the whole flow.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dzero::client::{HttpClient, HttpResponse};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{Value, json};

pub const CLIENT_ID: &str = "dzero-app";
pub const REDIRECT_URI: &str = "dzero-app://signed-in";

pub struct MerchantApp {
    pub key: SigningKey,
    pub device_id: String,
    pub http: HttpClient,
    base: String,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    proofs: u64,
    /// Distinguishes the proofs of twins (same device, other connections).
    tag: String,
    /// The server's time when it runs on the sandbox clock (seconds); `None`: the real clock.
    pub server_time: Option<i64>,
    /// The server's DPoP nonce, learnt from the `DPoP-Nonce` header of its responses.
    pub nonce: Option<String>,
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl MerchantApp {
    /// An app install whose device key is derived from `seed` (any nonzero byte).
    pub async fn install(addr: SocketAddr, device_id: &str, seed: u8) -> MerchantApp {
        MerchantApp {
            key: SigningKey::from_bytes(&[seed; 32].into()).unwrap(),
            device_id: device_id.to_owned(),
            http: HttpClient::connect(addr).await.unwrap(),
            base: format!("http://{addr}"),
            access_token: None,
            refresh_token: None,
            proofs: 0,
            tag: String::new(),
            server_time: None,
            nonce: None,
        }
    }

    /// The same signed-in device on another connection (for parallel requests).
    pub async fn twin(&self, addr: SocketAddr, tag: &str) -> MerchantApp {
        MerchantApp {
            key: self.key.clone(),
            device_id: self.device_id.clone(),
            http: HttpClient::connect(addr).await.unwrap(),
            base: self.base.clone(),
            access_token: self.access_token.clone(),
            refresh_token: self.refresh_token.clone(),
            proofs: 0,
            tag: tag.to_owned(),
            server_time: self.server_time,
            nonce: self.nonce.clone(),
        }
    }

    /// Asks for a step-up challenge and signs it with the device key: (challenge id,
    /// signature), or the refusal.
    pub async fn signed_challenge(
        &mut self,
        operation: &Value,
    ) -> Result<(String, String), HttpResponse> {
        let issued = self
            .call("POST", "/v1/me/challenges", Some(operation))
            .await;
        if issued.status != 201 {
            return Err(issued);
        }
        let issued = issued.json();
        let header = json!({ "typ": issued["typ"], "alg": "ES256", "jwk": self.jwk() });
        let signature = self.sign(&header, &issued["sign"]);
        Ok((
            issued["challenge_id"].as_str().unwrap().to_owned(),
            signature,
        ))
    }

    pub fn jwk(&self) -> Value {
        let point = self.key.verifying_key().to_encoded_point(false);
        json!({
            "kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        })
    }

    /// Signs a JWT with the device key.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature: Signature = self.key.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    /// A fresh DPoP proof for `method` and `path` (its URL without the query, as RFC 9449
    /// says), carrying the access token's hash if given.
    pub fn proof(&mut self, method: &str, path: &str, access_token: Option<&str>) -> String {
        let path = path.split_once('?').map_or(path, |(path, _)| path);
        self.proofs += 1;
        let now = self.server_time.unwrap_or_else(now_seconds);
        let mut claims = json!({
            "jti": format!("{}-{}-{}-{}", self.device_id, self.tag, now, self.proofs),
            "htm": method,
            "htu": format!("{}{path}", self.base),
            "iat": now,
        });
        if let Some(token) = access_token {
            claims["ath"] = json!(auth::dpop::token_hash(token));
        }
        if let Some(nonce) = &self.nonce {
            claims["nonce"] = json!(nonce);
        }
        let header = json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk() });
        self.sign(&header, &claims)
    }

    /// Step one: the password for a code (PKCE S256 with `verifier`).
    pub async fn authorize(
        &mut self,
        merchant_id: &str,
        username: &str,
        password: &str,
        verifier: &str,
    ) -> HttpResponse {
        let body = json!({
            "merchant_id": merchant_id,
            "username": username,
            "password": password,
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT_URI,
            "device_id": self.device_id,
            "code_challenge": auth::pkce::challenge_of(verifier),
            "code_challenge_method": "S256",
        });
        let response = self.http.post("/v1/oauth/authorize", &body).await.unwrap();
        self.learn(&response);
        response
    }

    /// Keeps the server's current DPoP nonce.
    pub fn learn(&mut self, response: &HttpResponse) {
        if let Some(nonce) = response.header("dpop-nonce") {
            self.nonce = Some(nonce.to_owned());
        }
    }

    fn asks_for_nonce(response: &HttpResponse) -> bool {
        response.status == 401 && response.json()["error"]["code"] == "use_dpop_nonce"
    }

    /// POSTs to the token endpoint with a fresh proof, once more if the nonce was stale.
    async fn token_request(&mut self, body: &Value) -> HttpResponse {
        for _ in 0..2 {
            let proof = self.proof("POST", "/v1/oauth/token", None);
            let response = self
                .http
                .request(
                    "POST",
                    "/v1/oauth/token",
                    &[("dpop", &proof)],
                    Some(body.to_string().as_bytes()),
                )
                .await
                .unwrap();
            self.learn(&response);
            if !Self::asks_for_nonce(&response) {
                return response;
            }
        }
        panic!("the server kept asking for a nonce")
    }

    /// Step two: the code, the verifier and a proof for the tokens.
    pub async fn redeem(&mut self, code: &str, verifier: &str) -> HttpResponse {
        let body = json!({
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT_URI,
            "device_name": format!("phone {}", self.device_id),
        });
        let response = self.token_request(&body).await;
        self.keep_tokens(&response);
        response
    }

    fn keep_tokens(&mut self, response: &HttpResponse) {
        if response.status == 200 {
            let tokens = response.json();
            self.access_token = tokens["access_token"].as_str().map(str::to_owned);
            self.refresh_token = tokens["refresh_token"].as_str().map(str::to_owned);
        }
    }

    /// Both steps; the token response comes back (or the authorize refusal).
    pub async fn sign_in(
        &mut self,
        merchant_id: &str,
        username: &str,
        password: &str,
    ) -> HttpResponse {
        let verifier = format!(
            "verifier-{}-{}-0123456789abcdefghijklmnopq",
            self.device_id, self.proofs
        );
        let authorized = self
            .authorize(merchant_id, username, password, &verifier)
            .await;
        if authorized.status != 200 {
            return authorized;
        }
        let code = authorized.json()["code"].as_str().unwrap().to_owned();
        self.redeem(&code, &verifier).await
    }

    /// Rotates the refresh token.
    pub async fn refresh(&mut self) -> HttpResponse {
        let body = json!({
            "grant_type": "refresh_token",
            "refresh_token": self.refresh_token.clone().unwrap(),
        });
        let response = self.token_request(&body).await;
        self.keep_tokens(&response);
        response
    }

    /// A merchant request with the access token and a fresh proof.
    pub async fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> HttpResponse {
        let token = self.access_token.clone().unwrap();
        let proof = self.proof(method, path, Some(&token));
        let response = self.send(method, path, &token, &proof, body).await;
        if !Self::asks_for_nonce(&response) {
            return response;
        }
        let proof = self.proof(method, path, Some(&token));
        self.send(method, path, &token, &proof, body).await
    }

    /// A merchant request with the given token and proof, as an attacker would send it.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        proof: &str,
        body: Option<&Value>,
    ) -> HttpResponse {
        let authorization = format!("DPoP {token}");
        let body = body.map(Value::to_string);
        let response = self
            .http
            .request(
                method,
                path,
                &[("authorization", &authorization), ("dpop", proof)],
                body.as_deref().map(str::as_bytes),
            )
            .await
            .unwrap();
        self.learn(&response);
        response
    }
}
