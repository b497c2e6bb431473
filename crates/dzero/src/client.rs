//! A small HTTP/1.1 client over one keep-alive TCP connection, for the benchmarks and the
//! integration tests: it speaks to the real server over real sockets and nothing more.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Largest response body accepted, in bytes.
const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// One response: status, headers (names lower-cased) and body.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (`null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Debug)]
pub struct HttpClient {
    stream: BufReader<TcpStream>,
    host: String,
    bearer: Option<String>,
}

impl HttpClient {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<HttpClient> {
        let stream = TcpStream::connect(addr).await.context("connecting")?;
        stream.set_nodelay(true)?;
        Ok(HttpClient {
            stream: BufReader::new(stream),
            host: addr.to_string(),
            bearer: None,
        })
    }

    /// Sends `Authorization: Bearer <key>` with every later request.
    pub fn with_key(mut self, key: &str) -> HttpClient {
        self.bearer = Some(key.to_owned());
        self
    }

    pub async fn get(&mut self, path: &str) -> anyhow::Result<HttpResponse> {
        self.request("GET", path, &[], None).await
    }

    pub async fn post(
        &mut self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<HttpResponse> {
        self.request("POST", path, &[], Some(body.to_string().as_bytes()))
            .await
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> anyhow::Result<HttpResponse> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {}\r\n", self.host);
        if let Some(key) = &self.bearer {
            head.push_str(&format!("authorization: Bearer {key}\r\n"));
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let body = body.unwrap_or_default();
        if method != "GET" || !body.is_empty() {
            head.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let mut message = head.into_bytes();
        message.extend_from_slice(body);
        self.stream.get_mut().write_all(&message).await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> anyhow::Result<HttpResponse> {
        let mut line = String::new();
        if self.stream.read_line(&mut line).await? == 0 {
            bail!("connection closed before a response");
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut headers = Vec::new();
        let mut length = None;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            let (name, value) = trimmed
                .split_once(':')
                .with_context(|| format!("bad header {trimmed:?}"))?;
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
            if name == "content-length" {
                length = Some(value.parse::<usize>()?);
            }
            headers.push((name, value));
        }
        let length = length.context("response without content-length")?;
        if length > RESPONSE_BYTES_MAX {
            bail!("response of {length} bytes is too large");
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}
