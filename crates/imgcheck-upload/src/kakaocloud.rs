//! KakaoCloud: create an image from a root volume.
//!
//! KakaoCloud's public API has no image-from-file or URL import
//! (providers.md §3, UNCONFIRMED whether one exists elsewhere): images are
//! made from a root volume with `POST {volume}/api/v1/volumes/{id}/image`
//! and become `active`. So this backend does not upload bytes; it creates
//! the image from a volume the user already wrote the disk to, and the CLI
//! prints the `os_info` and `min_disk` the check derived for the local
//! image. Authentication is a Keystone-style application credential: the
//! token comes back in the `X-Subject-Token` header and is renewed when
//! fewer than five minutes remain.
//!
//! The create reply's shape is not documented publicly: the image id is
//! taken from `image.id`, `id` or `image_id`, whichever is present
//! (UNCONFIRMED).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Api, Auth, Event, Flow, Secret, UploadError, base_url};

/// Identity service (override with `IMGCHECK_KAKAOCLOUD_IAM_URL`).
pub const DEFAULT_IAM: &str = "https://iam.kakaocloud.com";
/// Volume service (override with `IMGCHECK_KAKAOCLOUD_VOLUME_URL`).
pub const DEFAULT_VOLUME: &str = "https://volume.kr-central-2.kakaocloud.com";
/// Image service (override with `IMGCHECK_KAKAOCLOUD_IMAGE_URL`).
pub const DEFAULT_IMAGE: &str = "https://image.kr-central-2.kakaocloud.com";
/// Credential variables (the Terraform provider's).
pub const ID_VAR: &str = "KAKAOCLOUD_APPLICATION_CREDENTIAL_ID";
/// Secret variable.
pub const SECRET_VAR: &str = "KAKAOCLOUD_APPLICATION_CREDENTIAL_SECRET";
/// Renew the token when fewer than this many seconds remain.
const RENEW_MARGIN: Duration = Duration::from_secs(300);

/// An application credential.
#[derive(Debug, Clone)]
pub struct Credential {
    /// Credential id.
    pub id: String,
    /// Credential secret.
    pub secret: Secret,
}

impl Credential {
    /// From `KAKAOCLOUD_APPLICATION_CREDENTIAL_ID` and
    /// `KAKAOCLOUD_APPLICATION_CREDENTIAL_SECRET`; the error names both.
    pub fn from_env() -> Result<Self, UploadError> {
        let missing = || UploadError::MissingCredentials {
            vars: format!("{ID_VAR} and {SECRET_VAR}"),
        };
        let id = crate::token_from_env(&[ID_VAR]).map_err(|_| missing())?;
        let secret = crate::token_from_env(&[SECRET_VAR]).map_err(|_| missing())?;
        Ok(Self {
            id: id.expose().to_owned(),
            secret,
        })
    }
}

/// The three service base URLs.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Identity (tokens).
    pub iam: String,
    /// Volumes (image creation).
    pub volume: String,
    /// Images (status).
    pub image: String,
}

impl Endpoints {
    /// `IMGCHECK_KAKAOCLOUD_{IAM,VOLUME,IMAGE}_URL`, else the kr-central-2
    /// defaults.
    pub fn from_env() -> Self {
        Self {
            iam: base_url("IMGCHECK_KAKAOCLOUD_IAM_URL", DEFAULT_IAM),
            volume: base_url("IMGCHECK_KAKAOCLOUD_VOLUME_URL", DEFAULT_VOLUME),
            image: base_url("IMGCHECK_KAKAOCLOUD_IMAGE_URL", DEFAULT_IMAGE),
        }
    }
}

/// A session: endpoints, the credential and the current token.
#[derive(Debug)]
pub struct Session {
    cred: Credential,
    endpoints: Endpoints,
    iam: Api,
    token: Option<(Secret, Instant)>,
    /// Retry policy for every request of the session.
    pub retry: crate::RetryPolicy,
}

impl Session {
    /// A session against `endpoints`.
    pub fn new(cred: Credential, endpoints: Endpoints) -> Self {
        let iam = Api::new(&endpoints.iam, Auth::None);
        Self {
            cred,
            endpoints,
            iam,
            token: None,
            retry: crate::RetryPolicy::default(),
        }
    }

    /// The auth request body.
    fn auth_body(&self) -> Value {
        let secret = self.cred.secret.expose();
        json!({"auth": {"identity": {"methods": ["application_credential"],
            "application_credential": {"id": self.cred.id, "secret": secret}}}})
    }

    /// A valid token, issuing a new one when none is held or it expires
    /// within five minutes.
    pub fn token(&mut self) -> Result<Secret, UploadError> {
        if let Some((t, exp)) = &self.token
            && exp.saturating_duration_since(Instant::now()) > RENEW_MARGIN
        {
            return Ok(t.clone());
        }
        self.iam.retry = self.retry.clone();
        let url = self.iam.url("/identity/v3/auth/tokens");
        let reply = self
            .iam
            .json("POST", &url, Some(&self.auth_body()))
            .map_err(|e| self.scrub(e))?;
        let token = reply
            .header("x-subject-token")
            .map(Secret::new)
            .ok_or_else(|| UploadError::Protocol {
                url: url.clone(),
                message: "no X-Subject-Token header in the reply".into(),
            })?;
        // token.expires_at is RFC 3339 UTC; when it is missing or odd,
        // assume Keystone's default hour.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let life = reply
            .json
            .pointer("/token/expires_at")
            .and_then(Value::as_str)
            .and_then(parse_rfc3339_utc)
            .map(|exp| Duration::from_secs(exp.saturating_sub(now)))
            .unwrap_or(Duration::from_secs(3600));
        self.token = Some((token.clone(), Instant::now() + life));
        Ok(token)
    }

    /// Removes the credential secret from an error.
    fn scrub(&self, e: UploadError) -> UploadError {
        let s = self.cred.secret.expose();
        match e {
            UploadError::Http {
                method,
                url,
                status,
                message,
            } => UploadError::Http {
                method,
                url,
                status,
                message: message.replace(s, "***"),
            },
            UploadError::Transport {
                method,
                url,
                message,
            } => UploadError::Transport {
                method,
                url,
                message: message.replace(s, "***"),
            },
            other => other,
        }
    }

    /// A client for `base` carrying the current token.
    fn api(&mut self, base: &str) -> Result<Api, UploadError> {
        let mut api = Api::new(base, Auth::Header("X-Auth-Token", self.token()?));
        api.retry = self.retry.clone();
        Ok(api)
    }
}

/// The body of the create request. The Terraform provider sends `"-"`
/// when there is no description.
pub fn request_body(name: &str, description: Option<&str>) -> Value {
    json!({"image": {"name": name, "description": description.unwrap_or("-")}})
}

/// The requests [`create_from_volume`] sends, for `--dry-run` (no
/// credentials needed).
pub fn plan(
    endpoints: &Endpoints,
    volume_id: &str,
    name: &str,
    description: Option<&str>,
) -> Vec<String> {
    let probe = Api::new("", Auth::Header("X-Auth-Token", Secret::new("")));
    let auth = json!({"auth": {"identity": {"methods": ["application_credential"],
        "application_credential": {"id": "$KAKAOCLOUD_APPLICATION_CREDENTIAL_ID", "secret": "***"}}}});
    vec![
        format!("POST {}/identity/v3/auth/tokens {auth}", endpoints.iam),
        probe.describe(
            "POST",
            &format!("{}/api/v1/volumes/{volume_id}/image", endpoints.volume),
            Some(&request_body(name, description)),
        ),
        probe.describe(
            "GET",
            &format!("{}/api/v1/images/{{id}}", endpoints.image),
            None,
        ) + " (until status is active)",
    ]
}

/// Creates an image from root volume `volume_id` and, when `flow.wait`,
/// waits until it is `active`. Returns the last image object seen.
pub fn create_from_volume(
    session: &mut Session,
    volume_id: &str,
    name: &str,
    description: Option<&str>,
    flow: &Flow<'_>,
) -> Result<Value, UploadError> {
    let volume_base = session.endpoints.volume.clone();
    let image_base = session.endpoints.image.clone();
    let body = request_body(name, description);
    let create = format!("{volume_base}/api/v1/volumes/{volume_id}/image");
    let api = session.api(&volume_base)?;
    let reply = api.json("POST", &create, Some(&body))?;
    let id = ["/image/id", "/id", "/image_id"]
        .iter()
        .find_map(|p| reply.json.pointer(p).and_then(Value::as_str))
        .map(str::to_owned)
        .ok_or_else(|| UploadError::Protocol {
            url: create.clone(),
            message: "no image id in the reply".into(),
        })?;
    (flow.events)(Event::Status(&format!(
        "KakaoCloud image {id} created from volume {volume_id}"
    )));
    if !flow.wait {
        return Ok(reply.json.get("image").cloned().unwrap_or(reply.json));
    }
    let get = format!("{image_base}/api/v1/images/{id}");
    Api::new("", Auth::None).poll(&format!("KakaoCloud image {id}"), flow.poll, || {
        // A fresh client per poll renews the token inside long waits.
        let api = session.api(&image_base)?;
        let r = api.json("GET", &get, None)?;
        let image = r.json.get("image").cloned().unwrap_or(r.json);
        let status = image
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        (flow.events)(Event::Status(&format!("KakaoCloud image {id}: {status}")));
        match status.as_str() {
            "active" => Ok((Some(image), status)),
            "killed" | "deleted" | "error" => Err(UploadError::Provider {
                provider: "KakaoCloud",
                id: id.clone(),
                message: format!("status {status}"),
            }),
            _ => Ok((None, status)),
        }
    })
}

/// Seconds since the epoch of an RFC 3339 UTC time such as
/// `2026-11-23T21:00:00.000000Z` (offsets other than `Z`/`+00:00` are
/// refused rather than misread).
pub fn parse_rfc3339_utc(s: &str) -> Option<u64> {
    let s = s.trim();
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time
        .strip_suffix('Z')
        .or_else(|| time.strip_suffix("+00:00"))?;
    let mut t = time.splitn(3, ':');
    let h: i64 = t.next()?.parse().ok()?;
    let mi: i64 = t.next()?.parse().ok()?;
    let sec: i64 = t.next()?.split('.').next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + sec).ok()
}

#[cfg(test)]
mod tests {
    use super::parse_rfc3339_utc;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_utc("2000-03-01T00:00:00.123456Z"),
            Some(951_868_800)
        );
        assert_eq!(
            parse_rfc3339_utc("2026-11-23T21:00:00+00:00"),
            Some(1_795_467_600)
        );
        assert_eq!(parse_rfc3339_utc("2026-11-23T21:00:00+09:00"), None);
        assert_eq!(parse_rfc3339_utc("garbage"), None);
    }
}
