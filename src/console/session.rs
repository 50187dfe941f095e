//! Signing in with an API key, the session cookie, and the [`Viewer`]
//! extractor that every console page takes.
//!
//! A session is 32 random bytes in a cookie (`HttpOnly`, `SameSite=Strict`,
//! `Secure` behind HTTPS, expiring with the session); the database keeps
//! only their SHA-256, joined at every request to the API key, so a revoked
//! key ends its sessions at once and every busbar process on the database
//! knows every session. The CSRF token of a session is derived from its
//! token (a SHA-256 with a distinct prefix), so it needs no storage and
//! cannot be guessed without the cookie. The sign-in form, before any
//! session exists, is protected by a double-submit token in a short-lived
//! cookie.

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use minijinja::context;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ConsoleError, Fields, data, see_other, view};
use crate::api::{AppState, Caller};
use crate::store::keys::Scope;

/// The session cookie.
const SESSION_COOKIE: &str = "busbar_console";
/// The sign-in form's double-submit cookie.
const SIGN_IN_COOKIE: &str = "busbar_console_sign_in";
/// Where the cookies apply.
const COOKIE_PATH: &str = "/console";

/// The signed-in operator: the key's scopes and organization (read fresh
/// from the database at each request), and the session's CSRF token.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub caller: Caller,
    /// The token every state-changing form must carry.
    pub csrf: String,
    pub key_prefix: String,
    pub key_name: Option<String>,
    token_hash: String,
}

/// Who is signed in, as the page frame shows it.
#[derive(Debug, Serialize)]
pub struct ViewerSummary {
    pub key: String,
    pub name: Option<String>,
    /// `None`: a platform key.
    pub organization: Option<String>,
    pub scopes: Vec<&'static str>,
    pub admin: bool,
    pub platform: bool,
}

impl Viewer {
    /// The organization every query is limited to (`None`: a platform key).
    pub fn organization(&self) -> Option<uuid::Uuid> {
        self.caller.organization
    }

    /// What this viewer may read, for the store's reads.
    pub fn org_scope(&self) -> crate::store::scope::OrgScope {
        self.caller.org_scope()
    }

    pub fn is_admin(&self) -> bool {
        data::has_scope(&self.caller, Scope::Admin)
    }

    pub fn is_platform(&self) -> bool {
        self.caller.organization.is_none()
    }

    pub fn summary(&self) -> ViewerSummary {
        ViewerSummary {
            key: format!("bb_{}_…", self.key_prefix),
            name: self.key_name.clone(),
            organization: self.caller.organization.map(|o| o.to_string()),
            scopes: self.caller.scopes.iter().map(|s| s.as_str()).collect(),
            admin: self.is_admin(),
            platform: self.is_platform(),
        }
    }

    /// Refuses a form whose CSRF token is missing or not this session's.
    pub fn check_csrf(&self, fields: &Fields) -> Result<(), ConsoleError> {
        let presented = fields.get("csrf").unwrap_or("");
        if same(presented, &self.csrf) {
            Ok(())
        } else {
            Err(ConsoleError::forbidden(
                "The form was refused: its security token is missing or out of date. \
                 Go back, reload the page and try again.",
            ))
        }
    }

    /// Refuses keys without the `admin` scope.
    pub fn require_admin(&self) -> Result<(), ConsoleError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ConsoleError::forbidden(
                "This needs a key with the admin scope; you signed in with a key that can only read.",
            ))
        }
    }

    /// Refuses organization keys and keys without `admin`: for changes
    /// that affect every organization.
    pub fn require_platform_admin(&self) -> Result<(), ConsoleError> {
        self.require_admin()?;
        if self.is_platform() {
            Ok(())
        } else {
            Err(ConsoleError::forbidden(
                "This changes busbar for every organization, so it needs a platform key with the admin scope.",
            ))
        }
    }
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn token_hash(token: &str) -> String {
    sha256_hex(&format!("busbar console session\0{token}"))
}

fn csrf_of(token: &str) -> String {
    sha256_hex(&format!("busbar console csrf\0{token}"))
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The value of cookie `name` in the request.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// Whether the browser reached busbar over HTTPS (directly, or through a
/// proxy that says so).
fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn set_cookie(name: &str, value: &str, max_age: u64, https: bool) -> HeaderValue {
    let secure = if https { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={COOKIE_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .expect("cookie text is ASCII")
}

/// Where to go after signing in: a console path only (never another site).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with("/console")
                && !path.contains("//")
                && !path.contains('\\')
                && !path.starts_with("/console/sign-") =>
        {
            path.to_owned()
        }
        _ => "/console".to_owned(),
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let sign_in = || {
            let next = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/console");
            let query = serde_urlencoded::to_string([("next", next)]).unwrap_or_default();
            see_other(&format!("/console/sign-in?{query}"))
        };
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(sign_in());
        };
        let hash = token_hash(token);
        let session = data::find_session(state.engine.store(), &hash)
            .await
            .map_err(|e| ConsoleError::from(e).into_response())?;
        let Some(session) = session else {
            return Err(sign_in());
        };
        if !data::has_scope(&session.caller, Scope::Read) {
            return Err(ConsoleError::forbidden(
                "This key has no read scope, which the console needs.",
            )
            .into_response());
        }
        Ok(Viewer {
            caller: session.caller,
            csrf: csrf_of(token),
            key_prefix: session.key_prefix,
            key_name: session.key_name,
            token_hash: hash,
        })
    }
}

/// The query of the sign-in page.
#[derive(Debug, Deserialize)]
pub struct SignInQuery {
    next: Option<String>,
}

fn sign_in_page(
    status: StatusCode,
    next: &str,
    error: Option<&str>,
    https: bool,
) -> Result<Response, ConsoleError> {
    let token = random_token();
    let Html(body) = view::render(
        "sign_in.html",
        context! { next, error, csrf => token.clone(), title => "Sign in" },
    )?;
    Ok((
        status,
        [(
            header::SET_COOKIE,
            set_cookie(SIGN_IN_COOKIE, &token, 600, https),
        )],
        Html(body),
    )
        .into_response())
}

/// `GET /console/sign-in`: the form.
pub async fn sign_in_form(
    headers: HeaderMap,
    Query(query): Query<SignInQuery>,
) -> Result<Response, ConsoleError> {
    sign_in_page(
        StatusCode::OK,
        &safe_next(query.next.as_deref()),
        None,
        is_https(&headers),
    )
}

/// `POST /console/sign-in`: checks the key and opens a session.
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    fields: Fields,
) -> Result<Response, ConsoleError> {
    let https = is_https(&headers);
    let next = safe_next(fields.get("next"));
    let expected = cookie(&headers, SIGN_IN_COOKIE).unwrap_or("");
    if expected.is_empty() || !same(fields.get("csrf").unwrap_or(""), expected) {
        return sign_in_page(
            StatusCode::FORBIDDEN,
            &next,
            Some("The form had expired. Paste the key again."),
            https,
        );
    }
    let presented = fields.get("key").unwrap_or("");
    let store = state.engine.store();
    let Some(record) = data::verify_key(store, presented).await? else {
        tracing::info!("console: a sign-in with an invalid key was refused");
        return sign_in_page(
            StatusCode::UNAUTHORIZED,
            &next,
            Some("That key was not accepted: it is unknown, mistyped or revoked."),
            https,
        );
    };
    if !record.has(Scope::Read) {
        return sign_in_page(
            StatusCode::FORBIDDEN,
            &next,
            Some(
                "That key has no read scope; the console needs one (create it with --scope read).",
            ),
            https,
        );
    }
    let token = random_token();
    let ttl = data::SESSION_TTL;
    let expires = Utc::now() + chrono::Duration::from_std(ttl).unwrap_or_default();
    data::open_session(store, &token_hash(&token), record.id, expires).await?;
    tracing::info!(key = %record.id, "console: signed in");
    let mut response = see_other(&next);
    let cookies = response.headers_mut();
    cookies.append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, &token, ttl.as_secs(), https),
    );
    cookies.append(header::SET_COOKIE, set_cookie(SIGN_IN_COOKIE, "", 0, https));
    Ok(response)
}

/// `POST /console/sign-out`: ends the session.
pub async fn sign_out(
    viewer: Viewer,
    State(state): State<AppState>,
    headers: HeaderMap,
    fields: Fields,
) -> Result<Response, ConsoleError> {
    viewer.check_csrf(&fields)?;
    data::close_session(state.engine.store(), &viewer.token_hash).await?;
    let mut response = see_other("/console/sign-in");
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", 0, is_https(&headers)),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_console_paths_are_followed_after_signing_in() {
        assert_eq!(
            safe_next(Some("/console/events?x=1")),
            "/console/events?x=1"
        );
        assert_eq!(safe_next(Some("https://evil.example/")), "/console");
        assert_eq!(safe_next(Some("//evil.example/console")), "/console");
        assert_eq!(safe_next(Some("/console//evil.example")), "/console");
        assert_eq!(safe_next(Some("/console/sign-out")), "/console");
        assert_eq!(safe_next(None), "/console");
    }

    #[test]
    fn the_csrf_token_is_not_the_stored_hash_and_is_stable_per_session() {
        let token = random_token();
        assert_eq!(csrf_of(&token), csrf_of(&token));
        assert_ne!(csrf_of(&token), token_hash(&token));
        assert_ne!(csrf_of(&token), csrf_of(&random_token()));
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_behind_https() {
        let plain = set_cookie(SESSION_COOKIE, "t", 60, false);
        let plain = plain.to_str().unwrap();
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict"));
        assert!(!plain.contains("Secure"));
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(is_https(&headers));
        let secure = set_cookie(SESSION_COOKIE, "t", 60, true);
        assert!(secure.to_str().unwrap().ends_with("; Secure"));
    }
}
