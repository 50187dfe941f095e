//! The console over plain HTTP (the browser tests in `tests/browser.rs`
//! cover the pages in Chromium): the session cookie's flags, sessions
//! shared by two servers on one database, revocation, CSRF, the
//! Content-Security-Policy, and organization scoping by URL.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use tokio::task::JoinHandle;
use uuid::Uuid;

use busbar::api::{self, ApiConfig, AppState, ReloadOutcome};
use busbar::dev::{ORGANIZATION, ORGANIZATION_WITHOUT_SUBSCRIPTIONS};
use busbar::engine::Engine;
use busbar::store::keys::{self, Scope};

use crate::support::{TestDb, candidate_hired, on_both_databases};

/// A busbar API (with the console) on a free port, on `db`.
pub(crate) struct Server {
    pub(crate) base: String,
    pub(crate) engine: Engine,
    task: JoinHandle<std::io::Result<()>>,
}

/// The API and the console on `db`, with the shipped integrations.
pub(crate) async fn serve(db: &TestDb) -> Server {
    serve_engine(db.engine().await).await
}

/// The API and the console over `engine`.
pub(crate) async fn serve_engine(engine: Engine) -> Server {
    let reload = Arc::new(arc_swap::ArcSwap::from_pointee(ReloadOutcome::loaded(
        engine.generation().number,
    )));
    let state = AppState::new(engine.clone(), reload, ApiConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(api::serve(
        listener,
        busbar::serve::app(state),
        std::future::pending(),
    ));
    Server { base, engine, task }
}

impl Server {
    pub(crate) async fn stop(self) {
        self.task.abort();
        self.engine.shutdown().await;
    }
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// The `name=value` of a `Set-Cookie` header, and the whole header.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<(String, String)> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| (v.split(';').next().unwrap_or("").to_owned(), v.to_owned()))
}

/// The value of the first hidden `csrf` field in a page.
pub(crate) fn csrf_field(html: &str) -> String {
    let start = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[start..].split('"').next().unwrap().to_owned()
}

/// Signs in with `key`; returns the session cookie and its header.
pub(crate) async fn sign_in(base: &str, key: &str, https: bool) -> reqwest::Response {
    let http = client();
    let form = http
        .get(format!("{base}/console/sign-in"))
        .send()
        .await
        .unwrap();
    let (pre, _) = set_cookie(&form, "busbar_console_sign_in").expect("a sign-in cookie");
    let token = csrf_field(&form.text().await.unwrap());
    let mut request = http
        .post(format!("{base}/console/sign-in"))
        .header(COOKIE, pre)
        .form(&[("csrf", token.as_str()), ("key", key), ("next", "/console")]);
    if https {
        request = request.header("x-forwarded-proto", "https");
    }
    request.send().await.unwrap()
}

pub(crate) async fn session(base: &str, key: &str) -> String {
    let answer = sign_in(base, key, false).await;
    assert_eq!(answer.status(), 303);
    set_cookie(&answer, "busbar_console").unwrap().0
}

pub(crate) async fn get(base: &str, path: &str, cookie: &str) -> reqwest::Response {
    client()
        .get(format!("{base}{path}"))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap()
}

on_both_databases! {
    async fn a_console_session_is_a_strict_http_only_cookie_valid_on_every_server(db: TestDb) {
        db.seed().await;
        let key = keys::create_key(&db.store, None, &Scope::ALL, Some("console")).await.unwrap();
        let first = serve(&db).await;
        let second = serve(&db).await;

        // Signed out: sent to the sign-in form, with the security headers.
        let page = client().get(format!("{}/console", first.base)).send().await.unwrap();
        assert_eq!(page.status(), 303);
        assert_eq!(page.headers()[LOCATION], "/console/sign-in?next=%2Fconsole");
        let csp = page.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("style-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"));

        // A wrong key: 401, the same words whatever is wrong.
        let wrong = sign_in(&first.base, &format!("{}x", key.key), false).await;
        assert_eq!(wrong.status(), 401);
        assert!(set_cookie(&wrong, "busbar_console").is_none());

        let answer = sign_in(&first.base, &key.key, false).await;
        assert_eq!(answer.status(), 303);
        let (cookie, header) = set_cookie(&answer, "busbar_console").unwrap();
        assert!(header.contains("HttpOnly") && header.contains("SameSite=Strict"), "{header}");
        assert!(header.contains("Max-Age=") && !header.contains("Secure"), "{header}");
        let behind_tls = sign_in(&first.base, &key.key, true).await;
        let (_, secure) = set_cookie(&behind_tls, "busbar_console").unwrap();
        assert!(secure.ends_with("; Secure"), "{secure}");

        // The session works on the other server too: it is in the database.
        for server in [&first, &second] {
            let overview = get(&server.base, "/console", &cookie).await;
            assert_eq!(overview.status(), 200);
            assert!(overview.text().await.unwrap().contains("recruitiq-to-nexus"));
        }

        // A form without its token is refused; with it, it works.
        let page = get(&first.base, "/console/integrations/recruitiq-to-paylinq", &cookie).await;
        let token = csrf_field(&page.text().await.unwrap());
        let post = |fields: Vec<(&'static str, String)>| {
            let cookie = cookie.clone();
            let url = format!("{}/console/integrations/recruitiq-to-paylinq/state", second.base);
            async move {
                client().post(url).header(COOKIE, cookie).form(&fields).send().await.unwrap()
            }
        };
        let refused = post(vec![("change", "disable".into()), ("confirmed", "yes".into())]).await;
        assert_eq!(refused.status(), 403);
        assert!(first.engine.is_enabled("recruitiq-to-paylinq"));
        let asked = post(vec![("change", "disable".into()), ("csrf", token.clone())]).await;
        assert_eq!(asked.status(), 200, "a confirmation first");
        assert!(asked.text().await.unwrap().contains("Disable recruitiq-to-paylinq?"));
        let done = post(vec![("change", "enable".into()), ("csrf", token)]).await;
        assert_eq!(done.status(), 303);

        // Revoking the key ends its sessions at once, on every server.
        assert!(keys::revoke_key(&db.store, key.record.id).await.unwrap());
        for server in [&first, &second] {
            assert_eq!(get(&server.base, "/console", &cookie).await.status(), 303);
        }
        first.stop().await;
        second.stop().await;
    }
}

on_both_databases! {
    async fn an_organization_key_sees_only_its_organization_in_the_console(db: TestDb) {
        db.seed().await;
        let server = serve(&db).await;
        let reader = keys::create_key(&db.store, Some(ORGANIZATION_WITHOUT_SUBSCRIPTIONS), &[Scope::Read], None)
            .await
            .unwrap();
        let publish_only = keys::create_key(&db.store, None, &[Scope::Publish], None).await.unwrap();
        let theirs = server
            .engine
            .publish_json(&candidate_hired(ORGANIZATION, "a@example.com"), None)
            .await
            .unwrap()
            .id;
        let ours = server
            .engine
            .publish_json(&candidate_hired(ORGANIZATION_WITHOUT_SUBSCRIPTIONS, "b@example.com"), None)
            .await
            .unwrap()
            .id;
        db.settle(Duration::from_secs(30)).await;

        // A key without the read scope cannot sign in.
        assert_eq!(sign_in(&server.base, &publish_only.key, false).await.status(), 403);

        let cookie = session(&server.base, &reader.key).await;
        let list = get(&server.base, "/console/events", &cookie).await.text().await.unwrap();
        assert!(list.contains(&format!("/console/events/{ours}")));
        assert!(!list.contains(&format!("/console/events/{theirs}")));
        assert_eq!(get(&server.base, &format!("/console/events/{ours}"), &cookie).await.status(), 200);
        assert_eq!(get(&server.base, &format!("/console/events/{theirs}"), &cookie).await.status(), 404);
        assert_eq!(get(&server.base, &format!("/console/events/{}", Uuid::new_v4()), &cookie).await.status(), 404);
        let other = format!("/console/events?organization={ORGANIZATION}");
        assert_eq!(get(&server.base, &other, &cookie).await.status(), 403);
        // A read key may look but not act.
        let page = get(&server.base, "/console/redeliver", &cookie).await.text().await.unwrap();
        let token = csrf_field(&page);
        let replay = client()
            .post(format!("{}/console/integrations/recruitiq-to-nexus/replay", server.base))
            .header(COOKIE, &cookie)
            .form(&[("csrf", token.as_str()), ("group", "x")])
            .send()
            .await
            .unwrap();
        assert_eq!(replay.status(), 403);
        server.stop().await;
    }
}

on_both_databases! {
    async fn the_events_search_finds_delivered_events_from_the_lanes_and_dead_ones_from_their_rows(db: TestDb) {
        db.seed().await;
        // Employees whose email starts with `dead` are refused by the
        // target (a trigger): recruitiq-to-nexus dead-letters them.
        db.poison().await;
        let server = serve(&db).await;
        let key = keys::create_key(&db.store, None, &[Scope::Read], None).await.unwrap();
        let good = server
            .engine
            .publish_json(&candidate_hired(ORGANIZATION, "good@example.com"), None)
            .await
            .unwrap()
            .id;
        let bad = server
            .engine
            .publish_json(&candidate_hired(ORGANIZATION, "dead@example.com"), None)
            .await
            .unwrap()
            .id;
        db.settle(Duration::from_secs(30)).await;
        let cookie = session(&server.base, &key.key).await;
        let found = async |query: &str| {
            let page = get(&server.base, &format!("/console/events?{query}"), &cookie).await;
            assert_eq!(page.status(), 200);
            let text = page.text().await.unwrap();
            (
                text.contains(&format!("/console/events/{good}")),
                text.contains(&format!("/console/events/{bad}")),
            )
        };
        // Delivered: a first-pass success has no row; the lanes say so.
        assert_eq!(found("status=delivered&integration=recruitiq-to-nexus").await, (true, false));
        assert_eq!(found("status=dead&integration=recruitiq-to-nexus").await, (false, true));
        // The poison refuses new hires in payroll too: dead there as well.
        assert_eq!(found("status=dead").await, (false, true));
        assert_eq!(found("status=delivered").await, (true, false));
        assert_eq!(found("status=skipped").await, (false, false));

        // The pages: a dead delivery with its error; first-pass successes
        // (no row) shown as delivered.
        let page = get(&server.base, &format!("/console/events/{bad}"), &cookie).await.text().await.unwrap();
        assert!(page.contains("boom"), "the error is shown");
        let page = get(&server.base, &format!("/console/events/{good}"), &cookie).await.text().await.unwrap();
        assert!(page.contains("delivered on its first pass"), "inferred deliveries are shown");
        // The integration's page lists its recent deliveries, inferred ones too.
        let page = get(&server.base, "/console/integrations/recruitiq-to-nexus", &cookie).await.text().await.unwrap();
        assert!(page.contains(&format!("/console/events/{good}")), "{page}");
        server.stop().await;
    }
}
