//! The provider API client every backend shares: JSON requests, with the
//! retry, rate-limit, timeout and redaction policy of
//! [`imgcheck_source::net`] (the same one the remote-image reader uses).
//! On top of it this adds the credential ([`Auth`]) and takes the secret
//! itself out of anything copied from a response.

use std::fmt;
use std::io::Read;
use std::time::Duration;

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

pub use imgcheck_source::net::RetryPolicy;
use imgcheck_source::net::{self, Transient};

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
    /// The body as text (S3 answers XML).
    pub text: String,
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
        Self {
            agent: net::agent(&net::ClientOptions::default()),
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
        let url = net::redact_url(url);
        match body {
            Some(b) => format!("{method} {url}{auth} {}", self.redact(&b.to_string())),
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
            url: net::redact_url(url),
            message: format!("cannot build request: {e}"),
        })?;
        Ok(match self.agent.run(req) {
            Ok(resp) => Ok(self.read_reply(url, resp)?),
            Err(e) => Err(e),
        })
    }

    /// Decides what follows an attempt: done, wait and retry, or fail.
    /// Retries follow [`RetryPolicy::should_retry`]: a `POST` is repeated
    /// only when the server did not act on it (429) or the connection was
    /// never made.
    pub fn next_step(
        &self,
        method: &str,
        url: &str,
        result: Result<Reply, ureq::Error>,
        attempt: u32,
    ) -> Result<Step, UploadError> {
        match result {
            Ok(reply) if reply.status < 400 => Ok(Step::Done(reply)),
            Ok(reply) => {
                if self
                    .retry
                    .should_retry(method, Transient::Status(reply.status), attempt)
                {
                    let lookup = |n: &str| reply.header(n).map(str::to_owned);
                    Ok(Step::RetryAfter(self.retry.wait(&lookup, attempt)))
                } else {
                    Err(self.http_error(method, url, &reply))
                }
            }
            Err(e) => match Transient::of(&e) {
                Some(t) if self.retry.should_retry(method, t, attempt) => {
                    Ok(Step::RetryAfter(self.retry.backoff(attempt)))
                }
                _ => Err(UploadError::Transport {
                    method: method.to_owned(),
                    url: net::redact_url(url),
                    message: self.redact(&e.to_string()),
                }),
            },
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
        // Bytes, not a String: a ranged GET of an image (the presigned-URL
        // preflight) answers with binary data.
        let mut raw = Vec::new();
        resp.body_mut()
            .as_reader()
            .take(MAX_BODY)
            .read_to_end(&mut raw)
            .map_err(|e| UploadError::Transport {
                method: "read".into(),
                url: net::redact_url(url),
                message: self.redact(&e.to_string()),
            })?;
        let text = String::from_utf8_lossy(&raw).into_owned();
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
            text,
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
            url: net::redact_url(url),
            status: reply.status,
            message: self.redact(&msg.chars().take(300).collect::<String>()),
        }
    }

    /// Removes the secret, and credentials in any URL, from text copied out
    /// of a response or an error.
    pub fn redact(&self, text: &str) -> String {
        let text = net::redact_text(text);
        match &self.auth {
            Auth::Bearer(t) | Auth::Header(_, t) if !t.expose().is_empty() => {
                text.replace(t.expose(), "***")
            }
            _ => text,
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
