//! The console's pages over plain HTTP, as a user reads them: which events
//! the search lists for each filter (and never another organization's),
//! its cursor and its answers to bad input; an event's deliveries and the
//! tree of events it emitted; an integration's dead letters by cause,
//! replayed after the fix, and the keys a dead delivery holds back;
//! enabling, disabling, pausing and resuming; redelivering by filter (the
//! count first, a repeated confirmation doing nothing more); trying an
//! event without writing anything; and the live tail, its first screen and
//! its stream. Dead letters are made by the engine (a target that refuses
//! a row), never written by hand.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION};
use serde_json::Value;
use uuid::Uuid;

use busbar::dev::{ORGANIZATION, ORGANIZATION_WITHOUT_SUBSCRIPTIONS};
use busbar::store::keys::{self, Scope};

use crate::console::{Server, client, csrf_field, get, serve, serve_engine, session};
use crate::support::{candidate_hired, on_both_databases, root};

const SETTLE: Duration = Duration::from_secs(30);

/// No event listed.
const NONE: [Uuid; 0] = [];

/// A page's text as a reader sees it: minijinja's HTML escapes undone.
fn unescape(html: &str) -> String {
    html.replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&#x2f;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// `GET path`: the status and the page's text.
async fn page(server: &Server, path: &str, cookie: &str) -> (StatusCode, String) {
    let answer = get(&server.base, path, cookie).await;
    let status = answer.status();
    (status, unescape(&answer.text().await.unwrap()))
}

/// `POST path` with `fields` as a form.
async fn post(
    server: &Server,
    path: &str,
    cookie: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    client()
        .post(format!("{}{path}", server.base))
        .header(COOKIE, cookie)
        .form(fields)
        .send()
        .await
        .unwrap()
}

/// The hidden fields of a confirmation page (the form it re-posts).
fn hidden_fields(html: &str) -> Vec<(String, String)> {
    let pattern =
        regex::Regex::new(r#"<input type="hidden" name="([^"]+)" value="([^"]*)">"#).unwrap();
    pattern
        .captures_iter(html)
        .map(|c| (c[1].to_owned(), unescape(&c[2])))
        .collect()
}

/// Posts a confirmation page's form as its button would.
async fn confirm(
    server: &Server,
    path: &str,
    cookie: &str,
    confirmation: &str,
) -> reqwest::Response {
    let fields = hidden_fields(confirmation);
    assert!(
        fields.iter().any(|(n, v)| n == "confirmed" && v == "yes"),
        "{confirmation}"
    );
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    post(server, path, cookie, &fields).await
}

/// The events a search page lists, in its order.
fn listed(html: &str) -> Vec<Uuid> {
    let pattern =
        regex::Regex::new(r#"<th scope="row"><a href="/console/events/([0-9a-f-]{36})">"#).unwrap();
    pattern
        .captures_iter(html)
        .map(|c| c[1].parse().unwrap())
        .collect()
}

/// The events `/console/events?query` lists (the page must answer 200).
async fn search(server: &Server, cookie: &str, query: &str) -> Vec<Uuid> {
    let (status, html) = page(server, &format!("/console/events?{query}"), cookie).await;
    assert_eq!(status, 200, "{query}: {html}");
    listed(&html)
}

fn set(ids: &[Uuid]) -> BTreeSet<Uuid> {
    ids.iter().copied().collect()
}

async fn publish(server: &Server, event: &Value) -> Uuid {
    server.engine.publish_json(event, None).await.unwrap().id
}

/// Waits until `condition` holds, or fails after 30 seconds saying `what`.
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !condition().await {
        assert!(start.elapsed() < SETTLE, "not so after {SETTLE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A form time (`datetime-local`) `minutes` from now.
fn minutes_from_now(minutes: i64) -> String {
    (Utc::now() + chrono::Duration::minutes(minutes))
        .format("%Y-%m-%dT%H:%M")
        .to_string()
}

on_both_databases! {
    async fn the_events_search_narrows_by_each_filter_and_never_shows_another_organization(db: TestDb) {
        db.seed().await;
        let server = serve(&db).await;
        let platform = keys::create_key(&db.store, None, &[Scope::Read], None).await.unwrap();
        let theirs_key = keys::create_key(&db.store, Some(ORGANIZATION_WITHOUT_SUBSCRIPTIONS), &[Scope::Read], None)
            .await
            .unwrap();
        // Ada's organization subscribes to nexus and paylinq: delivered, and
        // recruitiq-to-nexus emits employee.created. Bob's subscribes to
        // nothing: both deliveries are skipped.
        let ada = publish(&server, &candidate_hired(ORGANIZATION, "ada@example.com")).await;
        let bob = publish(&server, &candidate_hired(ORGANIZATION_WITHOUT_SUBSCRIPTIONS, "bob@example.com")).await;
        db.settle(SETTLE).await;
        let cookie = session(&server.base, &platform.key).await;

        let emitted = search(&server, &cookie, "event=employee.created").await;
        assert_eq!(emitted.len(), 1, "Ada's hire emitted one employee.created");
        let child = emitted[0];
        assert!(child != ada && child != bob);

        assert_eq!(set(&search(&server, &cookie, "").await), set(&[ada, bob, child]));
        // Organization (a platform key's choice).
        assert_eq!(search(&server, &cookie, &format!("organization={ORGANIZATION_WITHOUT_SUBSCRIPTIONS}")).await, [bob]);
        assert_eq!(set(&search(&server, &cookie, &format!("organization={ORGANIZATION}")).await), set(&[ada, child]));
        // Source and event name.
        assert_eq!(set(&search(&server, &cookie, "source=recruitiq").await), set(&[ada, bob]));
        assert_eq!(search(&server, &cookie, "source=nexus").await, [child]);
        assert_eq!(set(&search(&server, &cookie, "event=candidate.hired").await), set(&[ada, bob]));
        assert_eq!(search(&server, &cookie, "source=paylinq").await, NONE);
        // Delivery state, of any integration or of one.
        assert_eq!(search(&server, &cookie, "status=skipped").await, [bob]);
        assert_eq!(search(&server, &cookie, "status=skipped&integration=recruitiq-to-nexus").await, [bob]);
        assert_eq!(search(&server, &cookie, "status=skipped&integration=nexus-to-paylinq").await, NONE);
        assert_eq!(set(&search(&server, &cookie, "status=delivered").await), set(&[ada, child]));
        assert_eq!(search(&server, &cookie, "status=delivered&integration=nexus-to-paylinq").await, [child]);
        assert_eq!(search(&server, &cookie, "status=dead").await, NONE);
        // The counts of the row: both of Bob's deliveries skipped.
        let (_, html) = page(&server, "/console/events?status=skipped", &cookie).await;
        assert!(html.contains(r#"status-skipped">skipped</span> 2"#), "{html}");
        // A payload field, with or without `data.`, as text or as a number.
        assert_eq!(search(&server, &cookie, "field=candidate.email&value=ada@example.com").await, [ada]);
        assert_eq!(search(&server, &cookie, "field=data.candidate.email&value=bob@example.com").await, [bob]);
        assert_eq!(set(&search(&server, &cookie, "field=offer.salary&value=72000").await), set(&[ada, bob]));
        assert_eq!(search(&server, &cookie, "field=offer.salary&value=1").await, NONE);
        assert_eq!(search(&server, &cookie, "field=candidate.email&value=nobody@example.com").await, NONE);
        // The time the events were stored.
        let hour_ago = minutes_from_now(-60);
        let in_an_hour = minutes_from_now(60);
        assert_eq!(set(&search(&server, &cookie, &format!("since={hour_ago}")).await), set(&[ada, bob, child]));
        assert_eq!(search(&server, &cookie, &format!("since={in_an_hour}")).await, NONE);
        assert_eq!(search(&server, &cookie, &format!("until={hour_ago}")).await, NONE);
        assert_eq!(
            set(&search(&server, &cookie, &format!("since={hour_ago}&until={in_an_hour}&source=recruitiq")).await),
            set(&[ada, bob])
        );
        assert_eq!(set(&search(&server, &cookie, "since=2000-01-01").await), set(&[ada, bob, child]));
        // Filters together.
        assert_eq!(
            search(&server, &cookie, &format!("organization={ORGANIZATION}&field=candidate.email&value=bob@example.com")).await,
            NONE
        );
        assert_eq!(
            search(&server, &cookie, &format!("organization={ORGANIZATION}&source=recruitiq&status=delivered")).await,
            [ada]
        );
        // An id opens the event's page; one nobody has is said.
        let answer = get(&server.base, &format!("/console/events?id={ada}"), &cookie).await;
        assert_eq!(answer.status(), 303);
        assert_eq!(answer.headers()[LOCATION], format!("/console/events/{ada}").as_str());
        let unknown = Uuid::new_v4();
        let (status, html) = page(&server, &format!("/console/events?id={unknown}"), &cookie).await;
        assert_eq!(status, 200);
        assert!(html.contains(&format!("There is no event {unknown} that this key can see.")), "{html}");
        assert_eq!(listed(&html), NONE);

        // An organization's key: its own events only, whatever it asks.
        let theirs = session(&server.base, &theirs_key.key).await;
        assert_eq!(search(&server, &theirs, "").await, [bob]);
        assert_eq!(search(&server, &theirs, "source=recruitiq").await, [bob]);
        assert_eq!(search(&server, &theirs, "field=candidate.email&value=ada@example.com").await, NONE);
        assert_eq!(search(&server, &theirs, "status=delivered").await, NONE);
        assert_eq!(search(&server, &theirs, &format!("organization={ORGANIZATION_WITHOUT_SUBSCRIPTIONS}")).await, [bob]);
        let (status, _) = page(&server, &format!("/console/events?organization={ORGANIZATION}"), &theirs).await;
        assert_eq!(status, 403);
        let (status, html) = page(&server, &format!("/console/events?id={ada}"), &theirs).await;
        assert_eq!(status, 200, "another organization's event is not found");
        assert!(html.contains(&format!("There is no event {ada} that this key can see.")));
        server.stop().await;
    }
}

on_both_databases! {
    async fn the_events_search_pages_with_a_cursor_and_explains_bad_input(db: TestDb) {
        db.seed().await;
        let server = serve(&db).await;
        let key = keys::create_key(&db.store, None, &[Scope::Read], None).await.unwrap();
        let mut published = Vec::new();
        for n in 0..55 {
            let event = candidate_hired(ORGANIZATION_WITHOUT_SUBSCRIPTIONS, &format!("c{n}@example.com"));
            published.push(publish(&server, &event).await);
        }
        db.settle(SETTLE).await;
        let cookie = session(&server.base, &key.key).await;

        // Fifty a page, newest first, and a link to the older ones.
        let (_, first) = page(&server, "/console/events?source=recruitiq", &cookie).await;
        let first_ids = listed(&first);
        assert_eq!(first_ids.len(), 50);
        let newest: Vec<Uuid> = published.iter().rev().copied().collect();
        assert_eq!(first_ids, newest[..50]);
        let pattern = regex::Regex::new(r#"<a href="([^"]+)" class="button">Older events</a>"#).unwrap();
        let next = pattern.captures(&first).expect("a link to older events")[1].to_owned();
        assert!(next.contains("source=recruitiq") && next.contains("before="), "{next}");
        let (status, second) = page(&server, &next, &cookie).await;
        assert_eq!(status, 200);
        assert_eq!(listed(&second), newest[50..]);
        assert!(!second.contains("Older events"), "the last page has no link");

        // Bad input is said on the page, and nothing is listed.
        for (query, problem) in [
            ("since=yesterday", "The `from` time `yesterday` is not a date or time"),
            ("until=2026-13-45", "The `to` time `2026-13-45` is not a date or time"),
            ("source=Not%20A%20Product", "`Not A Product` is not a product name."),
            ("event=hired!", "`hired!` is not an event name."),
            ("status=bogus", "`bogus` is not a delivery state."),
            ("organization=abc", "The organization is not a UUID."),
            ("field=candidate..email&value=x", "must be a dotted path such as candidate.email"),
            ("id=xyz", "The event id is not a UUID."),
        ] {
            let (status, html) = page(&server, &format!("/console/events?{query}"), &cookie).await;
            assert_eq!(status, 200, "{query}");
            assert!(html.contains(problem), "{query}: {html}");
            assert_eq!(listed(&html), NONE, "{query}");
            assert!(html.contains("No event matches."));
        }
        server.stop().await;
    }
}

on_both_databases! {
    async fn an_event_page_shows_each_delivery_and_the_events_it_emitted(db: TestDb) {
        db.seed().await;
        let server = serve(&db).await;
        let key = keys::create_key(&db.store, None, &[Scope::Read], None).await.unwrap();
        let ada = publish(&server, &candidate_hired(ORGANIZATION, "ada@example.com")).await;
        let bob = publish(&server, &candidate_hired(ORGANIZATION_WITHOUT_SUBSCRIPTIONS, "bob@example.com")).await;
        // One id in two organizations (ids are unique per organization).
        let shared = Uuid::new_v4();
        for organization in [ORGANIZATION, ORGANIZATION_WITHOUT_SUBSCRIPTIONS] {
            let mut event = candidate_hired(organization, "same@example.com");
            event["id"] = shared.to_string().into();
            publish(&server, &event).await;
        }
        db.settle(SETTLE).await;
        let cookie = session(&server.base, &key.key).await;
        let (status, html) = page(&server, &format!("/console/events/{ada}"), &cookie).await;
        assert_eq!(status, 200);
        assert!(html.contains("<h1>recruitiq/candidate.hired</h1>"), "{html}");
        assert!(html.contains("ada@example.com"), "the payload is shown");
        for integration in ["recruitiq-to-nexus", "recruitiq-to-paylinq", "nexus-to-paylinq"] {
            assert!(html.contains(&format!(r#"<a href="/console/integrations/{integration}">{integration}</a>"#)), "{integration}: {html}");
        }
        assert!(html.contains("delivered on its first pass"));
        // The tree: the employee.created it emitted, linked, with its own delivery.
        let pattern = regex::Regex::new(r#"emitted <a href="/console/events/([0-9a-f-]{36})">nexus/employee.created</a>"#).unwrap();
        let child: Uuid = pattern.captures(&html).expect("the emitted event")[1].parse().unwrap();
        let (status, html) = page(&server, &format!("/console/events/{child}"), &cookie).await;
        assert_eq!(status, 200);
        assert!(html.contains(&format!(r#"<a href="/console/events/{ada}">emitted by"#)), "{html}");
        assert!(html.contains("nexus-to-paylinq"));

        // Skipped, with the reason.
        let (_, html) = page(&server, &format!("/console/events/{bob}"), &cookie).await;
        assert!(html.contains("status-skipped"), "{html}");
        assert!(html.contains("no row in core.product_subscriptions"), "{html}");
        assert!(!html.contains("delivered on its first pass"));

        // The same id in two organizations: a platform key chooses.
        let (status, html) = page(&server, &format!("/console/events/{shared}"), &cookie).await;
        assert_eq!(status, 409);
        assert!(html.contains(&format!("2 organizations have an event {shared}")), "{html}");
        assert!(html.contains(&format!("/console/events/{shared}?organization={ORGANIZATION}")));
        let (status, html) = page(&server, &format!("/console/events/{shared}?organization={ORGANIZATION_WITHOUT_SUBSCRIPTIONS}"), &cookie).await;
        assert_eq!(status, 200);
        assert!(html.contains(&ORGANIZATION_WITHOUT_SUBSCRIPTIONS.to_string()) && html.contains("status-skipped"));
        let answer = get(&server.base, &format!("/console/events?id={shared}&organization={ORGANIZATION}"), &cookie).await;
        assert_eq!(answer.status(), 303);
        assert_eq!(answer.headers()[LOCATION], format!("/console/events/{shared}?organization={ORGANIZATION}").as_str());

        // Not an id, or nobody's: not found.
        assert_eq!(page(&server, "/console/events/not-a-uuid", &cookie).await.0, 404);
        let (status, html) = page(&server, &format!("/console/events/{}", Uuid::new_v4()), &cookie).await;
        assert_eq!(status, 404);
        assert!(html.contains("that this key can see"));
        server.stop().await;
    }
}

/// The `value` of every hidden field `name` in a page.
fn values_of(html: &str, name: &str) -> Vec<String> {
    let pattern = regex::Regex::new(&format!(r#"name="{name}" value="([^"]+)""#)).unwrap();
    pattern
        .captures_iter(html)
        .map(|c| unescape(&c[1]))
        .collect()
}

on_both_databases! {
    /// Issue 16: dead letters can be skipped from the console, and only with
    /// a reason, which the page then shows beside the failure.
    async fn dead_letters_are_skipped_with_a_reason(db: TestDb) {
        db.seed().await;
        db.poison().await;
        let server = serve(&db).await;
        let admin = keys::create_key(&db.store, None, &Scope::ALL, None).await.unwrap();
        let dead = publish(&server, &candidate_hired(ORGANIZATION, "dead-skip@example.com")).await;
        db.settle(SETTLE).await;
        let cookie = session(&server.base, &admin.key).await;
        let path = "/console/integrations/recruitiq-to-nexus";
        let (_, html) = page(&server, path, &cookie).await;
        assert!(html.contains("Skip all 1…"), "{html}");
        let group = values_of(&html, "group")[0].clone();
        let csrf = csrf_field(&html);
        let skip = format!("{path}/skip");

        let asked = post(&server, &skip, &cookie, &[("csrf", &csrf), ("group", &group), ("scope", "group")]).await;
        assert_eq!(asked.status(), 200);
        let asked = unescape(&asked.text().await.unwrap());
        assert!(asked.contains("Skip 1 dead delivery of recruitiq-to-nexus?"), "{asked}");
        assert!(asked.contains(r#"<textarea name="reason" required"#), "a reason is asked for: {asked}");
        // Confirmed without a reason: asked again, nothing skipped.
        let again = confirm(&server, &skip, &cookie, &asked).await;
        assert_eq!(again.status(), 200);
        assert!(unescape(&again.text().await.unwrap()).contains("Say why they are skipped"));
        assert_eq!(db.deliveries(Some(busbar::store::events::Status::Dead)).await.len(), 2, "nothing skipped without a reason");

        let mut fields = hidden_fields(&asked);
        fields.push(("reason".into(), "a test hire, never real".into()));
        let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let done = post(&server, &skip, &cookie, &fields).await;
        assert_eq!(done.status(), 303);
        assert_eq!(done.headers()[LOCATION], "/console/integrations/recruitiq-to-nexus?notice=skipped&count=1#dead-letters");
        let (_, html) = page(&server, &format!("{path}?notice=skipped&count=1"), &cookie).await;
        assert!(html.contains("1 dead delivery was skipped."), "{html}");
        assert!(html.contains("No dead letters."), "{html}");
        assert!(html.contains(": a test hire, never real"), "the reason is shown: {html}");
        // The event's page tells the story: failed, then skipped by whom and why.
        let (_, html) = page(&server, &format!("/console/events/{dead}"), &cookie).await;
        assert!(html.contains(&format!("skipped by key {}: a test hire, never real", admin.record.id)), "{html}");
        // The other integration's dead letter is untouched.
        assert_eq!(db.deliveries(Some(busbar::store::events::Status::Dead)).await.len(), 1);
        assert!(db.find("hris.employees", &[("email", "dead-skip@example.com".into())]).await.is_none());
    }
}

on_both_databases! {
    async fn dead_letters_are_grouped_by_cause_and_replayed_after_the_fix(db: TestDb) {
        db.seed().await;
        // Employees and new hires whose email starts with `dead` are refused
        // by the target tables: the engine dead-letters them at step 2.
        db.poison().await;
        let server = serve(&db).await;
        let admin = keys::create_key(&db.store, None, &Scope::ALL, None).await.unwrap();
        let elsewhere = keys::create_key(&db.store, Some(ORGANIZATION_WITHOUT_SUBSCRIPTIONS), &Scope::ALL, None)
            .await
            .unwrap();
        let first = publish(&server, &candidate_hired(ORGANIZATION, "dead1@example.com")).await;
        let second = publish(&server, &candidate_hired(ORGANIZATION, "dead2@example.com")).await;
        let good = publish(&server, &candidate_hired(ORGANIZATION, "good@example.com")).await;
        db.settle(SETTLE).await;
        let cookie = session(&server.base, &admin.key).await;
        let path = "/console/integrations/recruitiq-to-nexus";

        // The overview: 2 dead in each of the two integrations, the last error.
        let (_, overview) = page(&server, "/console", &cookie).await;
        assert!(overview.contains("<strong>4</strong> dead"), "{overview}");
        assert!(overview.contains(r##"<a href="/console/integrations/recruitiq-to-nexus#dead-letters">2</a>"##));
        assert!(overview.contains("boom"));

        // One group (one cause) of two, each listed with its event.
        let (status, html) = page(&server, path, &cookie).await;
        assert_eq!(status, 200);
        assert!(html.contains(r#"Dead letters by cause <span class="count">2</span>"#), "{html}");
        assert!(html.contains("Replay all 2…"));
        assert!(html.contains("boom"));
        for id in [first, second] {
            assert!(html.contains(&format!(r#"<a href="/console/events/{id}">"#)));
        }
        // Its routes, steps and YAML; the good event among the recent deliveries.
        assert!(html.contains("<strong>on candidate.hired</strong>: find core.product_subscriptions → upsert hris.employees"), "{html}");
        assert!(html.contains("emit employee.created"));
        assert!(html.contains("Hired candidates become employees in Nexus."));
        assert!(html.contains(&format!(r#"<a href="/console/events/{good}">"#)));
        assert!(html.contains("No key is held back."), "without on_dead: block, nothing waits");
        let groups = values_of(&html, "group");
        assert_eq!(groups.len(), 1);
        let group = groups[0].as_str();
        let deliveries = values_of(&html, "delivery");
        assert_eq!(deliveries.len(), 2);
        let csrf = csrf_field(&html);
        let replay = format!("{path}/replay");

        // Another organization's key sees none of them, and cannot replay them.
        let theirs = session(&server.base, &elsewhere.key).await;
        let (_, html) = page(&server, path, &theirs).await;
        assert!(html.contains(r#"Dead letters by cause <span class="count">0</span>"#), "{html}");
        assert!(!html.contains(&first.to_string()));
        let their_csrf = csrf_field(&html);
        let refused = post(&server, &replay, &theirs, &[("csrf", &their_csrf), ("group", group), ("scope", "group")]).await;
        assert_eq!(refused.status(), 400);

        // Without the CSRF token: refused, nothing replayed.
        let refused = post(&server, &replay, &cookie, &[("group", group), ("scope", "group"), ("confirmed", "yes")]).await;
        assert_eq!(refused.status(), 403);
        // Selected, but none ticked.
        let none = post(&server, &replay, &cookie, &[("csrf", &csrf), ("group", group), ("scope", "selected")]).await;
        assert_eq!(none.status(), 400);
        assert!(unescape(&none.text().await.unwrap()).contains("No dead delivery was selected"));

        // One replayed before the fix dies again, in the same group.
        let asked = post(&server, &replay, &cookie, &[("csrf", &csrf), ("group", group), ("scope", "selected"), ("delivery", &deliveries[0])]).await;
        assert_eq!(asked.status(), 200);
        let asked = unescape(&asked.text().await.unwrap());
        assert!(asked.contains("Replay 1 dead delivery of recruitiq-to-nexus?"), "{asked}");
        assert_eq!(values_of(&asked, "delivery"), [deliveries[0].clone()]);
        let done = confirm(&server, &replay, &cookie, &asked).await;
        assert_eq!(done.status(), 303);
        assert_eq!(done.headers()[LOCATION], "/console/integrations/recruitiq-to-nexus?notice=replayed&count=1#dead-letters");
        db.settle(SETTLE).await;
        let (_, html) = page(&server, &format!("{path}?notice=replayed&count=1"), &cookie).await;
        assert!(html.contains("1 dead delivery was queued again."));
        assert!(html.contains(r#"Dead letters by cause <span class="count">2</span>"#), "{html}");

        // The whole group, after the fix: delivered, the group gone.
        let asked = post(&server, &replay, &cookie, &[("csrf", &csrf), ("group", group), ("scope", "group")]).await;
        let asked = unescape(&asked.text().await.unwrap());
        assert!(asked.contains("Replay 2 dead deliveries of recruitiq-to-nexus?"), "{asked}");
        assert!(asked.contains("They failed at step 2 with:"), "{asked}");
        db.cure().await;
        let done = confirm(&server, &replay, &cookie, &asked).await;
        assert_eq!(done.status(), 303);
        assert_eq!(done.headers()[LOCATION], "/console/integrations/recruitiq-to-nexus?notice=replayed&count=2#dead-letters");
        db.settle(SETTLE).await;
        let (_, html) = page(&server, &format!("{path}?notice=replayed&count=2"), &cookie).await;
        assert!(html.contains("2 dead deliveries were queued again."));
        assert!(html.contains("No dead letters."), "{html}");
        assert!(db.find("hris.employees", &[("email", "dead1@example.com".into())]).await.is_some());
        assert!(db.find("hris.employees", &[("email", "dead2@example.com".into())]).await.is_some());
        assert_eq!(search(&server, &cookie, "status=delivered&integration=recruitiq-to-nexus&field=candidate.email&value=dead1@example.com").await, [first]);
        // The same form again: the group is gone.
        let again = post(&server, &replay, &cookie, &[("csrf", &csrf), ("group", group), ("scope", "group"), ("confirmed", "yes")]).await;
        assert_eq!(again.status(), 400);
        assert!(unescape(&again.text().await.unwrap()).contains("That group has no dead deliveries any more"));

        // An integration the live generation does not have.
        let (status, html) = page(&server, "/console/integrations/nope", &cookie).await;
        assert_eq!(status, 404);
        assert!(html.contains("There is no integration `nope` in the live generation"), "{html}");
        let refused = post(&server, "/console/integrations/nope/replay", &cookie, &[("csrf", &csrf), ("group", group)]).await;
        assert_eq!(refused.status(), 404);
        server.stop().await;
    }
}

on_both_databases! {
    async fn with_on_dead_block_a_dead_delivery_holds_its_key_and_the_page_says_what_waits(db: TestDb) {
        db.seed().await;
        db.poison().await;
        // The shipped integrations, recruitiq-to-nexus with `on_dead: block`.
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(root().join("integrations.d")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let mut text = std::fs::read_to_string(&path).unwrap();
                if path.file_name().is_some_and(|n| n == "recruitiq-to-nexus.yaml") {
                    text = text.replace("order_by: $.data.candidate.id\n", "order_by: $.data.candidate.id\non_dead: block\n");
                    assert!(text.contains("on_dead: block"));
                }
                std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
            }
        }
        let engine = db.engine_on(dir.path(), Some(&root().join("schemas/events"))).await;
        let server = serve_engine(engine).await;
        let admin = keys::create_key(&db.store, None, &Scope::ALL, None).await.unwrap();
        let cookie = session(&server.base, &admin.key).await;
        let path = "/console/integrations/recruitiq-to-nexus";

        // A poison, then a later event of the same candidate (the key).
        let poison = candidate_hired(ORGANIZATION, "dead@example.com");
        let candidate = poison["data"]["candidate"]["id"].as_str().unwrap().to_owned();
        let dead = publish(&server, &poison).await;
        let mut later = candidate_hired(ORGANIZATION, "later@example.com");
        later["data"]["candidate"]["id"] = candidate.clone().into();
        let waiting = publish(&server, &later).await;
        // Another candidate flows.
        publish(&server, &candidate_hired(ORGANIZATION, "other@example.com")).await;
        eventually("the other candidate is delivered", || async {
            db.find("hris.employees", &[("email", "other@example.com".into())]).await.is_some()
        })
        .await;
        eventually("the key is listed as blocked, with one delivery behind it", || async {
            let (_, html) = page(&server, path, &cookie).await;
            html.contains(r#"Blocked keys <span class="count">1</span>"#)
                && html.contains(r#"<td class="num waiting">1</td>"#)
        })
        .await;
        let (_, html) = page(&server, path, &cookie).await;
        assert!(html.contains("and so does a dead one (<code>on_dead: block</code>)"), "{html}");
        assert!(html.contains(&format!(r#"<code class="key">{candidate}</code>"#)), "{html}");
        assert!(html.contains(&format!(r#"<a href="/console/events/{dead}">"#)));
        assert!(html.contains("replay it to let the key go on"));
        assert!(db.find("hris.employees", &[("email", "later@example.com".into())]).await.is_none());
        // The waiting event's page says what it waits on.
        let (_, html) = page(&server, &format!("/console/events/{waiting}"), &cookie).await;
        assert!(html.contains("Waits on delivery"), "{html}");

        // Fixed and replayed: the dead delivery, then the one behind it.
        db.cure().await;
        let csrf = csrf_field(&html);
        let (_, html) = page(&server, path, &cookie).await;
        let group = values_of(&html, "group").remove(0);
        let asked = post(&server, &format!("{path}/replay"), &cookie, &[("csrf", &csrf), ("group", &group), ("scope", "group")]).await;
        let asked = unescape(&asked.text().await.unwrap());
        assert_eq!(confirm(&server, &format!("{path}/replay"), &cookie, &asked).await.status(), 303);
        eventually("the waiting delivery follows", || async {
            db.find("hris.employees", &[("email", "later@example.com".into())]).await.is_some()
        })
        .await;
        eventually("no key is held back", || async {
            page(&server, path, &cookie).await.1.contains("No key is held back.")
        })
        .await;
        server.stop().await;
    }
}

on_both_databases! {
    async fn pausing_holds_events_resuming_delivers_them_and_disabling_skips_them(db: TestDb) {
        db.seed().await;
        let server = serve(&db).await;
        let admin = keys::create_key(&db.store, None, &Scope::ALL, None).await.unwrap();
        let org_admin = keys::create_key(&db.store, Some(ORGANIZATION), &Scope::ALL, None).await.unwrap();
        let reader = keys::create_key(&db.store, None, &[Scope::Read], None).await.unwrap();
        let cookie = session(&server.base, &admin.key).await;
        let path = "/console/integrations/recruitiq-to-paylinq";
        let state = format!("{path}/state");
        let (_, html) = page(&server, path, &cookie).await;
        assert!(html.contains(r#"<button type="submit" id="state-pause">Pause</button>"#), "{html}");
        assert!(html.contains(r#"<button type="submit" id="state-enable" disabled>Enable</button>"#));
        let csrf = csrf_field(&html);

        // Only a platform admin key changes states; an organization's or a
        // read key is refused (and sees no buttons).
        for key in [&org_admin.key, &reader.key] {
            let other = session(&server.base, key).await;
            let (_, html) = page(&server, path, &other).await;
            assert!(!html.contains("state-pause"));
            let token = csrf_field(&page(&server, "/console/try", &other).await.1);
            let refused = post(&server, &state, &other, &[("csrf", &token), ("change", "pause"), ("confirmed", "yes")]).await;
            assert_eq!(refused.status(), 403);
        }
        let refused = post(&server, &state, &cookie, &[("csrf", &csrf), ("change", "explode")]).await;
        assert_eq!(refused.status(), 400);
        assert!(unescape(&refused.text().await.unwrap()).contains("Choose enable, disable, pause or resume."));
        let missing = post(&server, "/console/integrations/nope/state", &cookie, &[("csrf", &csrf), ("change", "pause")]).await;
        assert_eq!(missing.status(), 404);
        assert_eq!(server.engine.status("recruitiq-to-paylinq").unwrap().state, busbar::engine::State::Enabled);

        // Pause, after a confirmation: the event waits, nothing is skipped.
        let asked = post(&server, &state, &cookie, &[("csrf", &csrf), ("change", "pause")]).await;
        let asked = unescape(&asked.text().await.unwrap());
        assert!(asked.contains("Pause recruitiq-to-paylinq?") && asked.contains("nothing is skipped"), "{asked}");
        let done = confirm(&server, &state, &cookie, &asked).await;
        assert_eq!(done.status(), 303);
        assert_eq!(done.headers()[LOCATION], "/console/integrations/recruitiq-to-paylinq?notice=paused");
        let (_, html) = page(&server, &format!("{path}?notice=paused"), &cookie).await;
        assert!(html.contains("The integration is paused: its events wait, nothing is skipped."));
        assert!(html.contains(r#"<span class="badge state-paused">paused</span>"#), "{html}");
        let held = publish(&server, &candidate_hired(ORGANIZATION, "held@example.com")).await;
        eventually("recruitiq-to-nexus delivers meanwhile", || async {
            db.find("hris.employees", &[("email", "held@example.com".into())]).await.is_some()
        })
        .await;
        let (_, html) = page(&server, &format!("/console/events/{held}"), &cookie).await;
        assert!(html.contains("waits for its lane to reach it"), "{html}");
        assert!(db.find("payroll.new_hires", &[("email", "held@example.com".into())]).await.is_none());
        assert_eq!(search(&server, &cookie, "status=skipped").await, NONE);

        // Resume (no confirmation needed): it is delivered.
        let done = post(&server, &state, &cookie, &[("csrf", &csrf), ("change", "resume")]).await;
        assert_eq!(done.headers()[LOCATION], "/console/integrations/recruitiq-to-paylinq?notice=resumed");
        db.settle(SETTLE).await;
        assert!(db.find("payroll.new_hires", &[("email", "held@example.com".into())]).await.is_some());
        assert!(page(&server, &format!("{path}?notice=resumed"), &cookie).await.1.contains("The integration is running again."));

        // Disable: its deliveries are skipped; enable (at once) again.
        let asked = post(&server, &state, &cookie, &[("csrf", &csrf), ("change", "disable")]).await;
        let asked = unescape(&asked.text().await.unwrap());
        assert!(asked.contains("Disable recruitiq-to-paylinq?"), "{asked}");
        assert_eq!(confirm(&server, &state, &cookie, &asked).await.status(), 303);
        assert!(page(&server, &format!("{path}?notice=disabled"), &cookie).await.1.contains(r#"<span class="badge state-disabled">disabled</span>"#));
        let skipped = publish(&server, &candidate_hired(ORGANIZATION, "skipped@example.com")).await;
        db.settle(SETTLE).await;
        assert_eq!(search(&server, &cookie, "status=skipped&integration=recruitiq-to-paylinq").await, [skipped]);
        assert_eq!(search(&server, &cookie, "status=skipped&integration=recruitiq-to-nexus").await, NONE);
        let done = post(&server, &state, &cookie, &[("csrf", &csrf), ("change", "enable")]).await;
        assert_eq!(done.headers()[LOCATION], "/console/integrations/recruitiq-to-paylinq?notice=enabled");
        assert_eq!(server.engine.status("recruitiq-to-paylinq").unwrap().state, busbar::engine::State::Enabled);
        server.stop().await;
    }
}

on_both_databases! {
    async fn redeliver_counts_first_then_runs_once_however_often_the_confirmation_is_sent(db: TestDb) {
        db.seed().await;
        let server = serve(&db).await;
        let admin = keys::create_key(&db.store, None, &Scope::ALL, None).await.unwrap();
        let org_admin = keys::create_key(&db.store, Some(ORGANIZATION), &Scope::ALL, None).await.unwrap();
        let reader = keys::create_key(&db.store, None, &[Scope::Read], None).await.unwrap();
        let ada = publish(&server, &candidate_hired(ORGANIZATION, "ada@example.com")).await;
        publish(&server, &candidate_hired(ORGANIZATION_WITHOUT_SUBSCRIPTIONS, "bob@example.com")).await;
        db.settle(SETTLE).await;
        let cookie = session(&server.base, &admin.key).await;

        // A link fills the form in.
        let (status, html) = page(&server, "/console/redeliver?integration=recruitiq-to-paylinq&status=skipped,dead", &cookie).await;
        assert_eq!(status, 200);
        assert!(html.contains(r#"<option value="recruitiq-to-paylinq" selected>"#), "{html}");
        assert!(html.contains(r#"value="skipped" id="r-status-skipped" checked>"#));
        assert!(!html.contains(r#"value="delivered" id="r-status-delivered" checked>"#));
        let csrf = csrf_field(&html);
        let submit = async |fields: &[(&str, &str)]| {
            let mut all = vec![("csrf", csrf.as_str())];
            all.extend_from_slice(fields);
            let answer = post(&server, "/console/redeliver", &cookie, &all).await;
            assert_eq!(answer.status(), 200, "{fields:?}");
            unescape(&answer.text().await.unwrap())
        };

        // What is wrong with a form is said on it.
        let hour_ago = minutes_from_now(-60);
        let in_an_hour = minutes_from_now(60);
        for (fields, problem) in [
            (vec![], "Choose an integration of the live generation."),
            (vec![("integration", "nope")], "Choose an integration of the live generation."),
            (vec![("integration", "recruitiq-to-paylinq"), ("status", "retrying")], "`retrying` cannot be chosen: redeliver delivered, skipped or dead deliveries."),
            (vec![("integration", "recruitiq-to-paylinq"), ("event", "employee.created")], "recruitiq-to-paylinq has no route for `employee.created`."),
            (vec![("integration", "recruitiq-to-paylinq"), ("since", "soon")], "The `from` time `soon` is not a time"),
            (vec![("integration", "recruitiq-to-paylinq"), ("since", &in_an_hour), ("until", &hour_ago)], "The time range is empty: `from` must be before `to`."),
            (vec![("integration", "recruitiq-to-paylinq"), ("since", &in_an_hour)], "No delivery matches this filter"),
            (vec![("integration", "recruitiq-to-paylinq"), ("status", "dead")], "No delivery matches this filter"),
        ] {
            let html = submit(&fields).await;
            assert!(html.contains(problem), "{fields:?}: {html}");
            assert!(!html.contains("Redeliver 1"), "{fields:?}");
        }

        // The count: delivered (Ada's), skipped (Bob's), or either.
        let html = submit(&[("integration", "recruitiq-to-paylinq")]).await;
        assert!(html.contains("Redeliver 2 events through recruitiq-to-paylinq?"), "{html}");
        assert!(html.contains("whose delivery is delivered or skipped or dead"), "{html}");
        let html = submit(&[("integration", "recruitiq-to-paylinq"), ("status", "skipped")]).await;
        assert!(html.contains("Redeliver 1 event through recruitiq-to-paylinq?"), "{html}");
        let html = submit(&[("integration", "recruitiq-to-paylinq"), ("event", "candidate.hired"), ("status", "delivered"), ("since", &hour_ago), ("until", &in_an_hour)]).await;
        assert!(html.contains("Redeliver 1 event through recruitiq-to-paylinq?"), "{html}");
        assert!(html.contains("Matching: candidate.hired, whose delivery is delivered, stored from"), "{html}");
        let confirmation = html;

        // Confirmed: Ada's row, changed since, is written again.
        db.execute("UPDATE payroll.new_hires SET first_name = 'Changed'").await;
        let done = confirm(&server, "/console/redeliver", &cookie, &confirmation).await;
        assert_eq!(done.status(), 200);
        let done = unescape(&done.text().await.unwrap());
        assert!(done.contains("1 event queued to run again through recruitiq-to-paylinq."), "{done}");
        db.settle(SETTLE).await;
        let row = db.find("payroll.new_hires", &[("email", "ada@example.com".into())]).await.unwrap();
        assert_eq!(row["first_name"], "Ada");
        let (_, html) = page(&server, &format!("/console/events/{ada}"), &cookie).await;
        assert!(html.contains("redelivered 1×"), "{html}");

        // The same confirmation again (a reload, a double click): nothing more.
        db.execute("UPDATE payroll.new_hires SET first_name = 'Changed again'").await;
        let again = confirm(&server, "/console/redeliver", &cookie, &confirmation).await;
        let again = unescape(&again.text().await.unwrap());
        assert!(again.contains("This redelivery was already made (1 event); nothing more was queued."), "{again}");
        db.settle(SETTLE).await;
        let row = db.find("payroll.new_hires", &[("email", "ada@example.com".into())]).await.unwrap();
        assert_eq!(row["first_name"], "Changed again");

        // An organization's key counts only its organization's deliveries.
        let ours = session(&server.base, &org_admin.key).await;
        let token = csrf_field(&page(&server, "/console/redeliver", &ours).await.1);
        let answer = post(&server, "/console/redeliver", &ours, &[("csrf", &token), ("integration", "recruitiq-to-paylinq"), ("status", "skipped")]).await;
        assert!(unescape(&answer.text().await.unwrap()).contains("No delivery matches this filter"));
        let answer = post(&server, "/console/redeliver", &ours, &[("csrf", &token), ("integration", "recruitiq-to-paylinq")]).await;
        assert!(unescape(&answer.text().await.unwrap()).contains("Redeliver 1 event through recruitiq-to-paylinq?"));

        // Paused: said before; disabled: refused.
        server.engine.set_state("recruitiq-to-paylinq", busbar::engine::State::Paused).await.unwrap();
        let html = submit(&[("integration", "recruitiq-to-paylinq")]).await;
        assert!(html.contains("recruitiq-to-paylinq is paused: the redelivered deliveries wait until it is resumed."), "{html}");
        // Disabled: the count is shown, and the confirmation refused (the
        // engine refuses to redeliver into a disabled integration).
        server.engine.set_state("recruitiq-to-paylinq", busbar::engine::State::Disabled).await.unwrap();
        let html = submit(&[("integration", "recruitiq-to-paylinq")]).await;
        assert!(html.contains("Redeliver 2 events through recruitiq-to-paylinq?"), "{html}");
        let refused = confirm(&server, "/console/redeliver", &cookie, &html).await;
        assert_eq!(refused.status(), 200);
        let refused = unescape(&refused.text().await.unwrap());
        assert!(refused.contains("recruitiq-to-paylinq is disabled: its redelivered deliveries would be skipped at once."), "{refused}");
        assert!(!refused.contains("queued to run again"));

        // A read key, or a form without its token: refused.
        let read = session(&server.base, &reader.key).await;
        let (_, html) = page(&server, "/console/redeliver", &read).await;
        assert!(html.contains("Redelivering needs a key with the admin scope."));
        let refused = post(&server, "/console/redeliver", &read, &[("csrf", &csrf_field(&html)), ("integration", "recruitiq-to-nexus")]).await;
        assert_eq!(refused.status(), 403);
        let refused = post(&server, "/console/redeliver", &cookie, &[("integration", "recruitiq-to-nexus")]).await;
        assert_eq!(refused.status(), 403);
        server.stop().await;
    }
}

on_both_databases! {
    async fn trying_an_event_shows_each_route_and_writes_nothing(db: TestDb) {
        db.seed().await;
        let server = serve(&db).await;
        let reader = keys::create_key(&db.store, None, &[Scope::Read], None).await.unwrap();
        let cookie = session(&server.base, &reader.key).await;
        let (status, html) = page(&server, "/console/try", &cookie).await;
        assert_eq!(status, 200);
        let example = std::fs::read_to_string(root().join("examples/events/candidate.hired.json")).unwrap();
        assert!(html.contains(example.trim()), "the form starts with the shipped example");
        let csrf = csrf_field(&html);
        let try_event = async |text: &str| {
            let answer = post(&server, "/console/try", &cookie, &[("csrf", csrf.as_str()), ("event", text)]).await;
            assert_eq!(answer.status(), 200);
            unescape(&answer.text().await.unwrap())
        };

        let html = try_event(&example).await;
        assert!(html.contains("On generation 1"), "{html}");
        for integration in ["recruitiq-to-nexus", "recruitiq-to-paylinq"] {
            assert!(html.contains(&format!(r#"<a href="/console/integrations/{integration}">{integration}</a>"#)), "{html}");
        }
        assert!(html.contains("<strong>upsert hris.employees</strong> on (organization_id, email)"), "{html}");
        assert!(html.contains("<strong>upsert payroll.new_hires</strong>"));
        assert!(html.contains("<strong>emit employee.created</strong>"), "{html}");
        // The values as the mapping makes them (trimmed, lower-cased), with their types.
        assert!(html.contains(r#"<th scope="row"><code>email</code></th><td><code>ada.lovelace@example.com</code></td><td class="sub">text</td>"#), "{html}");
        assert!(!html.contains("Publishing would refuse it"));
        // Nothing was written.
        assert_eq!(db.count("integrations.events").await, 0);
        assert_eq!(db.count("hris.employees").await, 0);

        let html = try_event("{ not json").await;
        assert!(html.contains("This is not a valid event:") && html.contains("not JSON"), "{html}");
        let html = try_event(r#"{"source": "recruitiq"}"#).await;
        assert!(html.contains("This is not a valid event:") && html.contains("<code>/event</code>"), "{html}");
        let mut broken: Value = serde_json::from_str(&example).unwrap();
        broken["data"]["candidate"].as_object_mut().unwrap().remove("email");
        let html = try_event(&broken.to_string()).await;
        assert!(html.contains("Publishing would refuse it: its data breaks the contract"), "{html}");
        assert!(html.contains("/candidate"), "{html}");
        let mut unrouted: Value = serde_json::from_str(&example).unwrap();
        unrouted["source"] = "paylinq".into();
        unrouted["event"] = "payslip.issued".into();
        let html = try_event(&unrouted.to_string()).await;
        assert!(html.contains("No integration routes this event"), "{html}");
        assert_eq!(db.count("integrations.events").await, 0);

        let refused = post(&server, "/console/try", &cookie, &[("event", example.as_str())]).await;
        assert_eq!(refused.status(), 403);
        server.stop().await;
    }
}

/// Reads a Server-Sent Events stream until a chunk read so far contains
/// `wanted`, or fails after 30 seconds; returns everything read.
async fn read_stream_until(stream: &mut reqwest::Response, wanted: &str) -> String {
    let start = Instant::now();
    let mut read = String::new();
    while !read.contains(wanted) {
        let left = SETTLE.saturating_sub(start.elapsed());
        let chunk = tokio::time::timeout(left, stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {wanted} in the stream after {SETTLE:?}: {read}"))
            .unwrap()
            .expect("the stream goes on");
        read.push_str(&String::from_utf8_lossy(&chunk));
    }
    read
}

on_both_databases! {
    async fn the_live_tail_shows_recent_activity_then_streams_what_happens_in_the_viewers_organization(db: TestDb) {
        db.seed().await;
        let server = serve(&db).await;
        let reader = keys::create_key(&db.store, None, &[Scope::Read], None).await.unwrap();
        let theirs_key = keys::create_key(&db.store, Some(ORGANIZATION_WITHOUT_SUBSCRIPTIONS), &[Scope::Read], None)
            .await
            .unwrap();
        let ada = publish(&server, &candidate_hired(ORGANIZATION, "ada@example.com")).await;
        let bob = publish(&server, &candidate_hired(ORGANIZATION_WITHOUT_SUBSCRIPTIONS, "bob@example.com")).await;
        db.settle(SETTLE).await;
        let cookie = session(&server.base, &reader.key).await;
        let lines = |html: &str, outcome: &str| html.matches(&format!(r#"<li class="activity outcome-{outcome}">"#)).count();

        // The first screen, from the database.
        let (status, html) = page(&server, "/console/tail", &cookie).await;
        assert_eq!(status, 200);
        // Ada, Bob and the employee.created Ada's hire emitted.
        assert_eq!(lines(&html, "published"), 3, "{html}");
        // Ada's two deliveries and the emitted event's one; Bob's two skipped.
        assert_eq!(lines(&html, "delivered"), 3, "{html}");
        assert_eq!(lines(&html, "skipped"), 2, "{html}");
        assert!(html.contains(r#"data-stream="/console/tail/stream?integration=&outcome=""#), "{html}");
        let (_, html) = page(&server, "/console/tail?outcome=skipped", &cookie).await;
        assert_eq!((lines(&html, "skipped"), lines(&html, "published"), lines(&html, "delivered")), (2, 0, 0));
        assert!(html.contains(&format!("/console/events/{bob}")) && !html.contains(&format!("/console/events/{ada}")));
        let (_, html) = page(&server, "/console/tail?integration=recruitiq-to-nexus&outcome=delivered", &cookie).await;
        assert_eq!(lines(&html, "delivered"), 1, "{html}");
        assert!(html.contains("→ recruitiq-to-nexus") && !html.contains("→ recruitiq-to-paylinq"));
        let theirs = session(&server.base, &theirs_key.key).await;
        let (_, html) = page(&server, "/console/tail", &theirs).await;
        assert!(html.contains(&format!("/console/events/{bob}")) && !html.contains(&format!("/console/events/{ada}")), "{html}");

        // The stream: what happens from now on, in the viewer's organization.
        let open = async |cookie: &str, query: &str| {
            let stream = get(&server.base, &format!("/console/tail/stream?{query}"), cookie).await;
            assert_eq!(stream.status(), 200);
            assert_eq!(stream.headers()["content-type"], "text/event-stream");
            stream
        };
        let mut everything = open(&cookie, "").await;
        let mut published = open(&cookie, "outcome=published").await;
        let mut their_stream = open(&theirs, "").await;
        let hidden = publish(&server, &candidate_hired(ORGANIZATION, "carol@example.com")).await;
        let shown = publish(&server, &candidate_hired(ORGANIZATION_WITHOUT_SUBSCRIPTIONS, "dan@example.com")).await;
        let read = read_stream_until(&mut everything, &format!(r#""event_id":"{shown}","organization_id":"{ORGANIZATION_WITHOUT_SUBSCRIPTIONS}","source":"recruitiq","event":"candidate.hired","integration":"recruitiq-to-paylinq""#)).await;
        assert!(read.contains("event: activity"), "{read}");
        assert!(read.contains(&format!(r#""outcome":"published","event_id":"{hidden}""#)), "{read}");
        let read = read_stream_until(&mut published, &format!(r#""event_id":"{shown}""#)).await;
        assert!(read.contains(&hidden.to_string()));
        assert!(!read.contains(r#""outcome":"delivered""#) && !read.contains(r#""outcome":"skipped""#), "{read}");
        let read = read_stream_until(&mut their_stream, &format!(r#""outcome":"skipped","event_id":"{shown}""#)).await;
        assert!(!read.contains(&hidden.to_string()), "another organization's event never shows: {read}");
        server.stop().await;
    }
}

on_both_databases! {
    async fn signing_out_ends_the_session_and_a_stale_sign_in_form_is_refused(db: TestDb) {
        db.seed().await;
        let server = serve(&db).await;
        let key = keys::create_key(&db.store, None, &[Scope::Read], None).await.unwrap();
        let cookie = session(&server.base, &key.key).await;
        let csrf = csrf_field(&page(&server, "/console", &cookie).await.1);

        // The assets need no session; an unknown one is not found.
        let css = client().get(format!("{}/console/assets/console.css", server.base)).send().await.unwrap();
        assert_eq!(css.status(), 200);
        assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
        let missing = client().get(format!("{}/console/assets/secrets.txt", server.base)).send().await.unwrap();
        assert_eq!(missing.status(), 404);

        // A sign-in form posted without its own cookie (expired, or forged).
        let stale = client()
            .post(format!("{}/console/sign-in", server.base))
            .form(&[("csrf", "made-up"), ("key", key.key.as_str()), ("next", "/console")])
            .send()
            .await
            .unwrap();
        assert_eq!(stale.status(), 403);
        assert!(unescape(&stale.text().await.unwrap()).contains("The form had expired. Paste the key again."));

        // Signing out needs the token, then ends the session.
        let refused = post(&server, "/console/sign-out", &cookie, &[]).await;
        assert_eq!(refused.status(), 403);
        assert_eq!(get(&server.base, "/console", &cookie).await.status(), 200);
        let out = post(&server, "/console/sign-out", &cookie, &[("csrf", &csrf)]).await;
        assert_eq!(out.status(), 303);
        assert_eq!(out.headers()[LOCATION], "/console/sign-in");
        let after = get(&server.base, "/console/events", &cookie).await;
        assert_eq!(after.status(), 303);
        assert_eq!(after.headers()[LOCATION], "/console/sign-in?next=%2Fconsole%2Fevents");
        server.stop().await;
    }
}

/// `GET path` with a bearer key, as JSON.
async fn api_json(server: &Server, path: &str, key: &str) -> Value {
    let answer = client()
        .get(format!("{}{path}", server.base))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{path}");
    answer.json().await.unwrap()
}

/// `GET /metrics`, as text.
async fn metrics_text(server: &Server) -> String {
    client()
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The entries of the status API's `waiting_on`.
async fn waiting_on(server: &Server, key: &str) -> Vec<Value> {
    api_json(server, "/api/integrations/status", key).await["waiting_on"]
        .as_array()
        .expect("waiting_on is a list")
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn what_delivery_waits_on_in_the_database_is_named_by_the_status_api_metrics_and_the_overview()
 {
    use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
    use std::str::FromStr;

    let db = crate::support::TestDb::postgres().await;
    db.seed().await;
    let server = serve(&db).await;
    let platform = keys::create_key(&db.store, None, &Scope::ALL, None)
        .await
        .unwrap();
    let reader = keys::create_key(&db.store, Some(ORGANIZATION), &[Scope::Read], None)
        .await
        .unwrap();
    let connect = async |application: &str| {
        let options = PgConnectOptions::from_str(&db.url)
            .unwrap()
            .application_name(application);
        let mut conn = PgConnection::connect_with(&options).await.unwrap();
        let (pid,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        (conn, pid)
    };
    let lock_row = "SELECT id FROM core.organizations WHERE id = $1 FOR UPDATE";

    // A product's migration holds a row lock in a transaction…
    let (mut migration, migration_pid) = connect("nexus-migrate").await;
    sqlx::query("BEGIN").execute(&mut migration).await.unwrap();
    sqlx::query(lock_row)
        .bind(ORGANIZATION)
        .execute(&mut migration)
        .await
        .unwrap();
    // …that a busbar connection waits for (a delivery's statement would).
    let (mut waiter, waiter_pid) = connect("busbar").await;
    let waiting = tokio::spawn(async move {
        sqlx::query("SELECT id FROM core.organizations WHERE id = $1 FOR UPDATE")
            .bind(ORGANIZATION)
            .execute(&mut waiter)
            .await
            .unwrap();
        waiter
    });
    // And a psql session left idle in a transaction that holds an id.
    let (mut idle, idle_pid) = connect("psql").await;
    sqlx::query("BEGIN").execute(&mut idle).await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut idle)
        .await
        .unwrap();

    // The lock's holder is named at once, with the connection it holds up.
    eventually("the lock holder is named", || async {
        waiting_on(&server, &platform.key)
            .await
            .iter()
            .any(|b| b["kind"] == "lock" && b["pid"] == migration_pid)
    })
    .await;
    let blockers = waiting_on(&server, &platform.key).await;
    let lock = blockers.iter().find(|b| b["pid"] == migration_pid).unwrap();
    assert_eq!(lock["kind"], "lock", "{lock}");
    assert_eq!(lock["blocking"], serde_json::json!([waiter_pid]), "{lock}");
    assert_eq!(lock["application"], "nexus-migrate", "{lock}");
    assert_eq!(
        lock["database"],
        db.url.rsplit('/').next().unwrap(),
        "{lock}"
    );
    assert_eq!(lock["state"], "idle in transaction", "{lock}");
    assert!(
        lock["query"].as_str().unwrap().contains("FOR UPDATE"),
        "{lock}"
    );
    assert!(lock["since"].is_string(), "{lock}");
    // The idle transaction is not named before it has been open for 5 s…
    assert!(
        !blockers.iter().any(|b| b["pid"] == idle_pid),
        "{blockers:?}"
    );
    // …and is afterwards, with its age.
    tokio::time::sleep(Duration::from_millis(5200)).await;
    eventually("the long transaction is named", || async {
        waiting_on(&server, &platform.key)
            .await
            .iter()
            .any(|b| b["pid"] == idle_pid)
    })
    .await;
    let blockers = waiting_on(&server, &platform.key).await;
    let long = blockers.iter().find(|b| b["pid"] == idle_pid).unwrap();
    assert_eq!(long["kind"], "transaction", "{long}");
    assert_eq!(long["application"], "psql", "{long}");
    assert!(long["age_seconds"].as_f64().unwrap() >= 5.0, "{long}");
    assert_eq!(long["query"], "SELECT pg_current_xact_id()", "{long}");
    assert_eq!(
        blockers.len(),
        2,
        "busbar's own sessions are not listed: {blockers:?}"
    );
    // An organization's key does not see other sessions' queries.
    assert_eq!(waiting_on(&server, &reader.key).await, Vec::<Value>::new());

    // /metrics counts them, by kind.
    let metrics = metrics_text(&server).await;
    assert!(
        metrics.contains("busbar_waiting_on_sessions{kind=\"lock\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("busbar_waiting_on_sessions{kind=\"transaction\"} 1"),
        "{metrics}"
    );
    let oldest: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("busbar_waiting_on_seconds{kind=\"transaction\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(oldest >= 5.0, "{metrics}");

    // The console's overview shows them to a platform viewer only.
    let cookie = session(&server.base, &platform.key).await;
    let (_, html) = page(&server, "/console", &cookie).await;
    assert!(html.contains("Waiting on the database"), "{html}");
    assert!(html.contains(&format!("pid {migration_pid}")), "{html}");
    assert!(
        html.contains(&format!("waiting: pid {waiter_pid}")),
        "{html}"
    );
    assert!(html.contains("nexus-migrate"), "{html}");
    assert!(html.contains("SELECT pg_current_xact_id()"), "{html}");
    let cookie = session(&server.base, &reader.key).await;
    let (_, html) = page(&server, "/console", &cookie).await;
    assert!(!html.contains("Waiting on the database"), "{html}");

    // Once they end, nothing is named.
    sqlx::query("COMMIT").execute(&mut migration).await.unwrap();
    let _waiter = waiting.await.unwrap();
    sqlx::query("ROLLBACK").execute(&mut idle).await.unwrap();
    eventually("nothing is named", || async {
        waiting_on(&server, &platform.key).await.is_empty()
    })
    .await;
    let metrics = metrics_text(&server).await;
    assert!(
        metrics.contains("busbar_waiting_on_sessions{kind=\"lock\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("busbar_waiting_on_seconds{kind=\"transaction\"} 0.000"),
        "{metrics}"
    );
    server.stop().await;
}
