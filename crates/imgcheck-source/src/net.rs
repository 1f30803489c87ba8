//! The one HTTP client policy of imgcheck: what to retry, how long to wait,
//! what to hide, and how an agent is configured. Both the remote-image
//! reader ([`HttpSource`](crate::HttpSource)) and the provider uploads
//! (imgcheck-upload) use it, so they agree on every point:
//!
//! * **Retry only what is safe to repeat.** A request is retried after a
//!   transient failure (`408`, `429`, `5xx`, a reset or timed-out
//!   connection) only when its method is idempotent (`GET`, `HEAD`, `PUT`,
//!   `DELETE`, `OPTIONS`). A `POST` that may have reached the server is
//!   never repeated: a timeout after `POST /v2/images` may already have
//!   created an image, and a second one would be a duplicate. A `POST` is
//!   retried only when the server said it did not act on it (`429`), or
//!   when the connection was never made ([`Transient::NotSent`]).
//! * **Wait as the server asks.** `Retry-After` in seconds or as an
//!   HTTP-date (RFC 9110 §10.2.3), then the providers' rate-limit reset
//!   headers (`ratelimit-reset` of DigitalOcean, `X-RateLimit-Reset` of
//!   Linode: epoch seconds), else exponential backoff with jitter (so many
//!   clients that failed together do not retry together); capped.
//! * **Never print a credential.** [`redact_url`] removes a password from a
//!   URL's userinfo and the value of every query parameter that carries a
//!   signature, credential or token (presigned S3 URLs, Linode's
//!   `upload_to`); [`redact_text`] does the same to every URL inside a
//!   message (ureq's errors quote the URL).
//! * **Bounded waits.** Connect and response timeouts and a redirect limit
//!   on every agent ([`ClientOptions`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Timeouts, redirects and identity of an agent.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// TCP + TLS connect budget.
    pub connect_timeout: Duration,
    /// Longest wait for response headers, and for each read of a body.
    pub read_timeout: Duration,
    /// Redirect hops followed per request.
    pub max_redirects: u32,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(120),
            max_redirects: 8,
            user_agent: concat!("imgcheck/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// A ureq agent with the policy's timeouts and redirect limit. Statuses are
/// returned, not turned into errors: the caller judges them.
pub fn agent(opts: &ClientOptions) -> ureq::Agent {
    agent_config(opts).build().into()
}

/// The agent configuration of [`agent`], for a caller that adds to it.
pub fn agent_config(
    opts: &ClientOptions,
) -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(opts.max_redirects)
        .max_redirects_will_error(true)
        .user_agent(opts.user_agent.as_str())
        .timeout_connect(Some(opts.connect_timeout))
        .timeout_recv_response(Some(opts.read_timeout))
        .timeout_per_read(Some(opts.read_timeout))
}

/// How often and how patiently to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// First backoff; doubled on each retry.
    pub base_delay: Duration,
    /// Longest backoff, and the cap on what a server may ask for.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
        }
    }
}

/// What went wrong with one attempt, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transient {
    /// The server answered with this status.
    Status(u16),
    /// The connection could not be made (refused): the request was never
    /// sent, so even a `POST` may be repeated.
    NotSent,
    /// The connection broke or timed out after the request may have been
    /// sent.
    Broken,
}

impl Transient {
    /// Classifies a ureq transport error; `None` for errors another attempt
    /// would not fix (a host name that does not resolve, a bad URL, too
    /// many redirects).
    pub fn of(e: &ureq::Error) -> Option<Transient> {
        match e {
            ureq::Error::ConnectionFailed => Some(Transient::NotSent),
            ureq::Error::Io(_) | ureq::Error::Timeout(_) => Some(Transient::Broken),
            _ => None,
        }
    }
}

/// True for the methods RFC 9110 §9.2.2 calls idempotent.
pub fn is_idempotent(method: &str) -> bool {
    matches!(
        method.to_ascii_uppercase().as_str(),
        "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
    )
}

/// Statuses worth another attempt.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

impl RetryPolicy {
    /// Whether attempt number `attempt` (1-based) of a `method` request that
    /// failed with `what` may be followed by another.
    pub fn should_retry(&self, method: &str, what: Transient, attempt: u32) -> bool {
        if attempt >= self.attempts {
            return false;
        }
        match what {
            Transient::NotSent => true,
            // The server says it did not act on the request.
            Transient::Status(429) => true,
            Transient::Status(s) => retryable_status(s) && is_idempotent(method),
            Transient::Broken => is_idempotent(method),
        }
    }

    /// Exponential backoff for retry number `attempt` (1-based), plus up to
    /// 25 % jitter, capped at `max_delay`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max_delay);
        let quarter = u64::try_from(base.as_nanos() / 4).unwrap_or(u64::MAX);
        let jitter = if quarter == 0 {
            0
        } else {
            jitter_seed() % quarter
        };
        (base + Duration::from_nanos(jitter)).min(self.max_delay)
    }

    /// The wait before the next attempt: what the server asked for
    /// ([`server_wait`]) when it said, else [`backoff`](Self::backoff);
    /// capped at `max_delay`.
    pub fn wait(&self, headers: &dyn Fn(&str) -> Option<String>, attempt: u32) -> Duration {
        server_wait(headers, SystemTime::now())
            .unwrap_or_else(|| self.backoff(attempt))
            .min(self.max_delay)
    }
}

/// A few varying bits for jitter (no RNG dependency for this).
fn jitter_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // Mix so that consecutive calls do not give close values.
    u64::from(nanos).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17
}

/// How long the server asked to wait, from `headers` (a lookup by
/// lower-case name): `Retry-After` as seconds or an HTTP-date, then the
/// reset epoch of `ratelimit-reset` / `x-ratelimit-reset`.
pub fn server_wait(headers: &dyn Fn(&str) -> Option<String>, now: SystemTime) -> Option<Duration> {
    let now_s = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if let Some(v) = headers("retry-after") {
        let v = v.trim();
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Some(at) = parse_http_date(v) {
            return Some(Duration::from_secs(at.saturating_sub(now_s)));
        }
    }
    ["ratelimit-reset", "x-ratelimit-reset"]
        .iter()
        .find_map(|h| headers(h)?.trim().parse::<u64>().ok())
        .map(|reset| Duration::from_secs(reset.saturating_sub(now_s)))
}

/// Seconds since the epoch of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37
/// GMT`), the HTTP-date form RFC 9110 §5.6.7 requires senders to use.
pub fn parse_http_date(s: &str) -> Option<u64> {
    let mut it = s.split_whitespace();
    let _weekday = it.next()?.strip_suffix(',')?;
    let day: i64 = it.next()?.parse().ok()?;
    let month = match it.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = it.next()?.parse().ok()?;
    let mut t = it.next()?.split(':');
    let h: i64 = t.next()?.parse().ok()?;
    let m: i64 = t.next()?.parse().ok()?;
    let sec: i64 = t.next()?.parse().ok()?;
    if it.next()? != "GMT" || it.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    u64::try_from(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Query parameters whose values are credentials (compared
/// case-insensitively): AWS SigV4/SigV2 presigning, Azure SAS, GCS, and the
/// generic names upload URLs use.
const SECRET_PARAMS: &[&str] = &[
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "signature",
    "awsaccesskeyid",
    "sig",
    "token",
    "access_token",
    "x-goog-signature",
    "x-goog-credential",
    "key",
    "secret",
    "password",
];

fn secret_param(name: &str) -> bool {
    SECRET_PARAMS.iter().any(|p| name.eq_ignore_ascii_case(p))
}

/// `url` with the password of its userinfo and the values of credential
/// query parameters replaced by `***`. Other parameters stay (they help to
/// tell URLs apart).
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let (head, after) = url.split_at(scheme_end + 3);
    let auth_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(auth_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***{}", &authority[at..]),
                None => authority.to_owned(),
            }
        }
        None => authority.to_owned(),
    };
    let rest = match rest.split_once('?') {
        Some((path, query)) => {
            let (query, frag) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let q: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if secret_param(k) => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            let mut s = format!("{path}?{}", q.join("&"));
            if let Some(f) = frag {
                s.push('#');
                s.push_str(f);
            }
            s
        }
        None => rest.to_owned(),
    };
    format!("{head}{authority}{rest}")
}

/// Elements of S3 error documents that echo credentials
/// (`SignatureDoesNotMatch` answers quote the key id and the signature).
const SECRET_ELEMENTS: &[&str] = &[
    "AWSAccessKeyId",
    "SignatureProvided",
    "StringToSign",
    "StringToSignBytes",
    "CanonicalRequest",
    "CanonicalRequestBytes",
];

/// `text` with every `http://` / `https://` URL in it passed through
/// [`redact_url`] (a URL ends at whitespace or a quote), and the content of
/// S3 error elements that echo credentials replaced by `***`.
pub fn redact_text(text: &str) -> String {
    let mut text = text.to_owned();
    for el in SECRET_ELEMENTS {
        let (open, close) = (format!("<{el}>"), format!("</{el}>"));
        let mut from = 0;
        while let Some(i) = text[from..].find(&open) {
            let start = from + i + open.len();
            let end = text[start..].find(&close).map_or(text.len(), |j| start + j);
            text.replace_range(start..end, "***");
            from = start + 3;
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    loop {
        let next = [rest.find("http://"), rest.find("https://")]
            .into_iter()
            .flatten()
            .min();
        let Some(i) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let mut end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .unwrap_or(tail.len());
        // Punctuation that ends a sentence, not the URL ("GET URL: reset").
        while end > 0 && tail[..end].ends_with([':', ',', ';', '.', ')']) {
            end -= 1;
        }
        out.push_str(&redact_url(&tail[..end]));
        rest = &tail[end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        // RFC 9110 §5.6.7's example.
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 PST"), None);
        assert_eq!(parse_http_date("120"), None);
    }

    #[test]
    fn server_wait_reads_seconds_dates_and_reset_headers() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_770);
        let h = |pairs: &'static [(&'static str, &'static str)]| {
            move |n: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(
            server_wait(&h(&[("retry-after", "3")]), now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            server_wait(&h(&[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")]), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            server_wait(&h(&[("x-ratelimit-reset", "784111775")]), now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            server_wait(&h(&[("ratelimit-reset", "784111772")]), now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(server_wait(&h(&[]), now), None);
    }

    #[test]
    fn posts_are_not_retried_after_they_may_have_arrived() {
        let p = RetryPolicy::default();
        assert!(!p.should_retry("POST", Transient::Broken, 1));
        assert!(!p.should_retry("POST", Transient::Status(500), 1));
        assert!(!p.should_retry("POST", Transient::Status(503), 1));
        assert!(p.should_retry("POST", Transient::Status(429), 1));
        assert!(p.should_retry("POST", Transient::NotSent, 1));
        assert!(p.should_retry("PUT", Transient::Broken, 1));
        assert!(p.should_retry("GET", Transient::Status(502), 1));
        assert!(!p.should_retry("GET", Transient::Status(404), 1));
        assert!(!p.should_retry("GET", Transient::Status(502), p.attempts));
    }

    #[test]
    fn backoff_grows_has_jitter_and_is_capped() {
        let p = RetryPolicy {
            attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
        };
        let first = p.backoff(1);
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(125));
        assert!(p.backoff(2) >= Duration::from_millis(200));
        assert!(p.backoff(10) <= Duration::from_millis(300));
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(redact_url("https://u:secret@h/x"), "https://u:***@h/x");
        assert_eq!(redact_url("https://u@h/x"), "https://u@h/x");
        assert_eq!(
            redact_url(
                "http://127.0.0.1:9/b/k.img?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F2026&X-Amz-Signature=abc123&x-id=GetObject"
            ),
            "http://127.0.0.1:9/b/k.img?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=***&X-Amz-Signature=***&x-id=GetObject"
        );
        assert_eq!(
            redact_url("https://up.example/abc?sig=1&token=t#f"),
            "https://up.example/abc?sig=***&token=***#f"
        );
        assert_eq!(
            redact_text(
                "<Error><Code>SignatureDoesNotMatch</Code><AWSAccessKeyId>AKID</AWSAccessKeyId><SignatureProvided>abc</SignatureProvided></Error>"
            ),
            "<Error><Code>SignatureDoesNotMatch</Code><AWSAccessKeyId>***</AWSAccessKeyId><SignatureProvided>***</SignatureProvided></Error>"
        );
        assert_eq!(
            redact_text("PUT https://h/u?Signature=zz: connection reset (\"http://a:b@c/\")"),
            "PUT https://h/u?Signature=***: connection reset (\"http://a:***@c/\")"
        );
    }
}
