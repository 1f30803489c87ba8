//! The HTTP client every backend shares: JSON requests with retries,
//! rate-limit handling and secret redaction.

use std::fmt;
use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use ureq::http;

use crate::UploadError;

/// A credential. Its `Debug` and `Display` print `***`, so it cannot leak
/// through a log line or an error by accident.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The credential itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How a request authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No credentials (presigned upload URLs, image hosts).
    None,
    /// `Authorization: Bearer TOKEN` (DigitalOcean, Linode).
    Bearer(Secret),
    /// A header carrying the token (KakaoCloud's `X-Auth-Token`).
    Header(&'static str, Secret),
}

/// Retries for 429, 5xx and connection failures.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// First backoff; doubles each retry.
    pub base_delay: Duration,
    /// Longest wait, also the cap on a server's Retry-After.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
        }
    }
}

/// A poll loop's pace and patience.
#[derive(Debug, Clone)]
pub struct PollOptions {
    /// Time between polls (Packer uses 3 s for DigitalOcean and Linode).
    pub interval: Duration,
    /// Give up after this long.
    pub timeout: Duration,
}

impl Default for PollOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// A response: status, the headers we use, and the body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Lower-cased header names and values.
    pub headers: Vec<(String, String)>,
    /// Body parsed as JSON (`Null` when empty or not JSON).
    pub json: Value,
}

impl Reply {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What to do after one attempt.
#[derive(Debug)]
pub enum Step {
    /// Success.
    Done(Reply),
    /// Wait this long, then try again.
    RetryAfter(Duration),
}

/// Largest response body read (API answers are small JSON documents).
const MAX_BODY: u64 = 4 << 20;

/// A provider API client.
#[derive(Debug, Clone)]
pub struct Api {
    agent: ureq::Agent,
    base: String,
    auth: Auth,
    /// Retry behaviour.
    pub retry: RetryPolicy,
}

impl Api {
    /// A client for the API at `base` (no trailing slash needed).
    pub fn new(base: &str, auth: Auth) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .max_redirects(5)
            .user_agent(concat!("imgcheck/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self {
            agent,
            base: base.trim_end_matches('/').to_owned(),
            auth,
            retry: RetryPolicy::default(),
        }
    }

    /// Replaces the credentials (KakaoCloud renews its token).
    pub fn set_auth(&mut self, auth: Auth) {
        self.auth = auth;
    }

    /// `base + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// How a request would be sent, with credentials redacted (for
    /// `--dry-run`).
    pub fn describe(&self, method: &str, url: &str, body: Option<&Value>) -> String {
        let auth = match &self.auth {
            Auth::None => String::new(),
            Auth::Bearer(_) => " [Authorization: Bearer ***]".into(),
            Auth::Header(h, _) => format!(" [{h}: ***]"),
        };
        match body {
            Some(b) => format!("{method} {url}{auth} {b}"),
            None => format!("{method} {url}{auth}"),
        }
    }

    /// Sends a JSON request (retrying as the policy says) and returns the
    /// reply for any status below 400; 4xx/5xx after retries are errors.
    pub fn json(
        &self,
        method: &str,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Reply, UploadError> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        self.send(
            method,
            url,
            &[],
            || Ok(bytes.clone().unwrap_or_default()),
            bytes.is_some(),
        )
    }

    /// Sends a request whose body comes from `make_body` (called again for
    /// each retry), retrying as the policy says; statuses below 400 are
    /// returned, 4xx/5xx after retries are errors.
    pub fn send<B>(
        &self,
        method: &str,
        url: &str,
        extra_headers: &[(&str, String)],
        mut make_body: impl FnMut() -> Result<B, UploadError>,
        json_body: bool,
    ) -> Result<Reply, UploadError>
    where
        B: ureq::AsSendBody,
    {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = self.once(method, url, extra_headers, make_body()?, json_body)?;
            match self.next_step(method, url, result, attempt)? {
                Step::Done(reply) => return Ok(reply),
                Step::RetryAfter(wait) => std::thread::sleep(wait),
            }
        }
    }

    /// One attempt: the reply (any status) or the transport error.
    pub fn once(
        &self,
        method: &str,
        url: &str,
        extra_headers: &[(&str, String)],
        body: impl ureq::AsSendBody,
        json_body: bool,
    ) -> Result<Result<Reply, ureq::Error>, UploadError> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(url)
            .header("Accept", "application/json");
        if json_body {
            req = req.header("Content-Type", "application/json");
        }
        req = match &self.auth {
            Auth::None => req,
            Auth::Bearer(t) => req.header("Authorization", format!("Bearer {}", t.expose())),
            Auth::Header(h, t) => req.header(*h, t.expose()),
        };
        for (k, v) in extra_headers {
            req = req.header(*k, v.as_str());
        }
        let req = req.body(body).map_err(|e| UploadError::Protocol {
            url: url.to_owned(),
            message: format!("cannot build request: {e}"),
        })?;
        Ok(match self.agent.run(req) {
            Ok(resp) => Ok(self.read_reply(url, resp)?),
            Err(e) => Err(e),
        })
    }

    /// Decides what follows an attempt: done, wait and retry, or fail.
    pub fn next_step(
        &self,
        method: &str,
        url: &str,
        result: Result<Reply, ureq::Error>,
        attempt: u32,
    ) -> Result<Step, UploadError> {
        let last = attempt >= self.retry.attempts;
        match result {
            Ok(reply) if reply.status < 400 => Ok(Step::Done(reply)),
            Ok(reply) if !last && reply.status == 429 => {
                Ok(Step::RetryAfter(self.rate_limit_wait(&reply, attempt)))
            }
            Ok(reply) if !last && reply.status >= 500 => {
                Ok(Step::RetryAfter(self.backoff(attempt)))
            }
            Ok(reply) => Err(self.http_error(method, url, &reply)),
            Err(e) if !last && retryable(&e) => Ok(Step::RetryAfter(self.backoff(attempt))),
            Err(e) => Err(UploadError::Transport {
                method: method.to_owned(),
                url: url.to_owned(),
                message: self.redact(&e.to_string()),
            }),
        }
    }

    fn read_reply(
        &self,
        url: &str,
        mut resp: http::Response<ureq::Body>,
    ) -> Result<Reply, UploadError> {
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        let mut text = String::new();
        resp.body_mut()
            .as_reader()
            .take(MAX_BODY)
            .read_to_string(&mut text)
            .map_err(|e| UploadError::Transport {
                method: "read".into(),
                url: url.to_owned(),
                message: e.to_string(),
            })?;
        let json = serde_json::from_str(&text).unwrap_or_else(|_| {
            if text.trim().is_empty() {
                Value::Null
            } else {
                Value::String(text.chars().take(500).collect())
            }
        });
        Ok(Reply {
            status,
            headers,
            json,
        })
    }

    fn http_error(&self, method: &str, url: &str, reply: &Reply) -> UploadError {
        // Providers put the human message in different places.
        let msg = ["message", "error_message", "reason"]
            .iter()
            .find_map(|k| reply.json.get(k).and_then(Value::as_str).map(str::to_owned))
            .or_else(|| {
                reply
                    .json
                    .get("errors")
                    .and_then(Value::as_array)
                    .map(|errs| {
                        errs.iter()
                            .filter_map(|e| e.get("reason").and_then(Value::as_str))
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
            })
            .or_else(|| reply.json.as_str().map(str::to_owned))
            .unwrap_or_else(|| reply.json.to_string());
        UploadError::Http {
            method: method.to_owned(),
            url: url.to_owned(),
            status: reply.status,
            message: self.redact(&msg.chars().take(300).collect::<String>()),
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .retry
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        exp.min(self.retry.max_delay)
    }

    /// 429: `Retry-After` (seconds) first, then the reset epoch of
    /// DigitalOcean's `ratelimit-reset` / Linode's `X-RateLimit-Reset`,
    /// else exponential backoff; always capped.
    fn rate_limit_wait(&self, reply: &Reply, attempt: u32) -> Duration {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let wait = reply
            .header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
            .or_else(|| {
                ["ratelimit-reset", "x-ratelimit-reset"]
                    .iter()
                    .find_map(|h| reply.header(h)?.trim().parse::<u64>().ok())
                    .map(|reset| Duration::from_secs(reset.saturating_sub(now)))
            })
            .unwrap_or_else(|| self.backoff(attempt));
        wait.min(self.retry.max_delay)
    }

    /// Removes the secret from text copied out of a response or an error.
    pub fn redact(&self, text: &str) -> String {
        match &self.auth {
            Auth::Bearer(t) | Auth::Header(_, t) if !t.expose().is_empty() => {
                text.replace(t.expose(), "***")
            }
            _ => text.to_owned(),
        }
    }

    /// Calls `probe` every `poll.interval` until it returns `Some`, or fails
    /// with a timeout naming `what` and the last status seen.
    pub fn poll<T>(
        &self,
        what: &str,
        poll: &PollOptions,
        mut probe: impl FnMut() -> Result<(Option<T>, String), UploadError>,
    ) -> Result<T, UploadError> {
        let start = std::time::Instant::now();
        loop {
            let (done, status) = probe()?;
            if let Some(v) = done {
                return Ok(v);
            }
            if start.elapsed() >= poll.timeout {
                return Err(UploadError::Timeout {
                    what: what.to_owned(),
                    last_status: status,
                    seconds: poll.timeout.as_secs(),
                });
            }
            std::thread::sleep(poll.interval);
        }
    }
}

fn retryable(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
    ) || e.to_string().contains("reset")
}
