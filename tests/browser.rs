//! The operations console in a real browser: headless Chromium, driven
//! through chromedriver, against the built `busbar serve --dev` on a
//! temporary SQLite file and on a fresh PostgreSQL database.
//!
//! One walk through the console per database, the way an operator would:
//! sign in with a wrong key, a read key and an admin key; see the flows;
//! watch the live tail; triage a poison event's dead letter (and the key
//! it holds back), fix the data and replay it; pause an integration, see
//! its events wait, resume it and see them delivered; redeliver by filter;
//! break a YAML file and read the reload error; an organization's key never
//! sees another organization's events; a form without its CSRF token is
//! refused.
//! Screenshots of each page go to `target/browser-screenshots/<test>/`.
//!
//! Skipped, with the reason printed, when chromedriver or Chromium is not
//! installed (`.ci/run` installs them).

#[path = "browser/support.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use busbar::dev::{ORGANIZATION, ORGANIZATION_WITHOUT_SUBSCRIPTIONS, USER};
use busbar::store::keys::Scope;
use fantoccini::Locator;

use support::{Browser, Busbar, Db};

/// Browser tests run one at a time: each drives a browser and a server on
/// a two-core machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SETTLE: Duration = Duration::from_secs(30);

fn hire(organization: Uuid, hired_by: Uuid, email: &str) -> Value {
    json!({
        "source": "recruitiq",
        "event": "candidate.hired",
        "organization_id": organization,
        "data": {
            "candidate": {
                "id": Uuid::new_v4(),
                "firstName": "Grace",
                "lastName": "Hopper",
                "email": email,
            },
            "hiredBy": hired_by,
            "jobTitle": "Rear Admiral",
            "startDate": "2027-02-01",
            "offer": { "salary": 91000 }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser_on_sqlite() {
    let _turn = ONE_AT_A_TIME.lock().await;
    walk_through(Db::Sqlite, "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn console_in_a_real_browser_on_postgres() {
    let _turn = ONE_AT_A_TIME.lock().await;
    walk_through(Db::Postgres, "postgres").await;
}

async fn walk_through(db: Db, name: &str) {
    let Some(browser) = Browser::start(name).await else {
        return;
    };
    let busbar = Busbar::start(db).await;

    a_wrong_key_is_refused_without_saying_why(&browser, &busbar).await;
    a_read_key_sees_the_flows_but_cannot_act(&browser, &busbar).await;
    the_live_tail_shows_a_published_event_within_a_second(&browser, &busbar).await;
    browser.sign_out().await;

    browser.sign_in(&busbar, &busbar.dev_key).await;
    a_poison_event_is_triaged_fixed_and_replayed(&browser, &busbar).await;
    an_integration_is_paused_and_resumed(&browser, &busbar).await;
    a_form_without_its_csrf_token_is_refused(&browser, &busbar).await;
    the_other_pages_answer(&browser, &busbar).await;
    a_broken_yaml_file_shows_its_error_on_the_overview(&browser, &busbar).await;
    browser.sign_out().await;

    an_organization_key_never_sees_another_organizations_events(&browser, &busbar).await;
    browser.stop().await;
}

async fn a_wrong_key_is_refused_without_saying_why(browser: &Browser, busbar: &Busbar) {
    // Signed out, a console page sends the browser to the sign-in form.
    browser.open(&busbar.url("/console/events")).await;
    assert_eq!(browser.path().await, "/console/sign-in");
    browser.shot("01-sign-in").await;

    // An existing key's prefix with a wrong secret, and a key that does
    // not exist: the same answer.
    let real = busbar.key(None, &[Scope::Read]).await;
    let wrong_secret = format!("{}{}", &real[..12], "x".repeat(real.len() - 12));
    let mut answers = Vec::new();
    for key in [
        wrong_secret.as_str(),
        "bb_zzzzzzzz_0123456789012345678901234567890123456789",
        "hello",
    ] {
        browser.sign_in(busbar, key).await;
        assert_eq!(browser.path().await, "/console/sign-in");
        answers.push(browser.text("#sign-in-error").await);
    }
    assert!(answers[0].contains("not accepted"), "{answers:?}");
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
}

async fn a_read_key_sees_the_flows_but_cannot_act(browser: &Browser, busbar: &Busbar) {
    let reader = busbar.key(None, &[Scope::Read]).await;
    browser.sign_in(busbar, &reader).await;
    assert_eq!(browser.path().await, "/console");
    // Every shipped integration is a flow, and the emit chain is drawn.
    for id in [
        "recruitiq-to-nexus",
        "nexus-to-paylinq",
        "recruitiq-to-paylinq",
        "recruitiq-to-directory",
    ] {
        let row = browser.text(&format!("#flow-{id}")).await;
        assert!(row.contains("enabled"), "{id}: {row}");
        browser
            .client
            .find(Locator::Css(&format!(
                "svg.flows a[href=\"/console/integrations/{id}\"]"
            )))
            .await
            .unwrap_or_else(|_| panic!("{id} is drawn in the graph"));
    }
    let graph = browser.text("svg.flows").await;
    assert!(graph.contains("emit employee.created"), "{graph}");
    assert!(browser.text("#reload").await.contains("Generation 1"));

    // A read key gets no buttons, and posting anyway is refused.
    browser
        .open(&busbar.url("/console/integrations/recruitiq-to-nexus"))
        .await;
    assert!(
        browser
            .client
            .find(Locator::Css("#state-disable"))
            .await
            .is_err(),
        "a read key sees no state buttons"
    );
    let status = post_from_page(
        browser,
        "/console/integrations/recruitiq-to-nexus/state",
        "change=disable&confirmed=yes",
        true,
    )
    .await;
    assert_eq!(status, 403, "a read key cannot disable");
}

/// Posts a form from the page with `fetch` (with the page's CSRF token
/// when `with_csrf`); returns the status.
async fn post_from_page(browser: &Browser, path: &str, body: &str, with_csrf: bool) -> u64 {
    let script = r#"
        const [path, body, withCsrf, done] = arguments;
        const token = document.querySelector('input[name=csrf]');
        const form = withCsrf && token ? body + '&csrf=' + encodeURIComponent(token.value) : body;
        fetch(path, { method: 'POST', body: form, redirect: 'manual',
                      headers: { 'Content-Type': 'application/x-www-form-urlencoded' } })
          .then(r => done(r.status), () => done(-1));
    "#;
    browser
        .client
        .execute_async(script, vec![json!(path), json!(body), json!(with_csrf)])
        .await
        .expect("the script runs")
        .as_u64()
        .unwrap_or(0)
}

async fn the_live_tail_shows_a_published_event_within_a_second(browser: &Browser, busbar: &Busbar) {
    browser.open(&busbar.url("/console/tail")).await;
    // Connected before the event is published.
    let start = Instant::now();
    while browser
        .client
        .execute(
            "return document.getElementById('tail').dataset.live",
            vec![],
        )
        .await
        .unwrap()
        != json!("yes")
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the tail did not connect"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let id = busbar
        .publish(&hire(ORGANIZATION, USER, "tail@example.com"))
        .await;
    let published = Instant::now();
    let link = format!("#tail a[href=\"/console/events/{id}\"]");
    loop {
        if browser.client.find(Locator::Css(&link)).await.is_ok() {
            break;
        }
        assert!(
            published.elapsed() < Duration::from_secs(1),
            "the published event did not show in the live tail within a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its deliveries follow.
    browser
        .wait_for_text("#tail", "delivered", Duration::from_secs(10))
        .await;
    browser.shot("05-live-tail").await;
}

async fn a_poison_event_is_triaged_fixed_and_replayed(browser: &Browser, busbar: &Busbar) {
    // Hired by a recruiter who is not in core.users yet.
    let recruiter = Uuid::new_v4();
    let poison = busbar
        .publish(&hire(ORGANIZATION, recruiter, "poison@example.com"))
        .await;
    busbar
        .wait_for_delivery(poison, "recruitiq-to-directory", "dead", SETTLE)
        .await;
    // The integration holds a dead delivery's key back (`on_dead: block`):
    // the organization's next hire waits behind it.
    let behind = busbar
        .publish(&hire(ORGANIZATION, USER, "behind@example.com"))
        .await;
    busbar
        .wait_for_delivery(behind, "recruitiq-to-directory", "pending", SETTLE)
        .await;

    browser.open(&busbar.url("/console")).await;
    let row = browser.text("#flow-recruitiq-to-directory").await;
    assert!(
        row.contains("no row in core.users"),
        "the last error shows: {row}"
    );
    browser.shot("02-overview").await;

    browser
        .open(&busbar.url("/console/integrations/recruitiq-to-directory"))
        .await;
    let cause = browser.text("#dead-letters .group .cause").await;
    assert_eq!(
        cause,
        "step 1 (find core.users): no row in core.users matches id = ‹…›"
    );
    assert_eq!(browser.text("#dead-letters .group .count").await, "1");
    browser.shot("03-dead-letters").await;
    // The blocked key: the organization, what it waits on, how many wait.
    let blocked = browser.text("#blocked-keys .blocked-key").await;
    assert!(blocked.contains(&ORGANIZATION.to_string()), "{blocked}");
    assert!(blocked.contains("dead"), "{blocked}");
    assert_eq!(
        browser.text("#blocked-keys .blocked-key .waiting").await,
        "1"
    );
    browser
        .client
        .find(Locator::Css(&format!(
            "#blocked-keys a[href=\"/console/events/{poison}\"]"
        )))
        .await
        .expect("the blocked key links the event it waits on");
    browser.shot("03b-blocked-key").await;
    // The waiting event's page says what it waits on.
    browser
        .open(&busbar.url(&format!("/console/events/{behind}")))
        .await;
    assert!(browser.page_text().await.contains("Waits on delivery"));
    browser
        .open(&busbar.url("/console/integrations/recruitiq-to-directory"))
        .await;

    // The fix: the recruiter arrives in core.users.
    busbar
        .execute(&format!(
            "INSERT INTO core.users (id, organization_id, email, name) \
             VALUES ('{recruiter}', '{ORGANIZATION}', 'new.recruiter@acme.example', 'New Recruiter')"
        ))
        .await;

    browser.submit("#dead-letters button[value=group]").await;
    let question = browser.text("#confirm-title").await;
    assert_eq!(
        question,
        "Replay 1 dead delivery of recruitiq-to-directory?"
    );
    browser.shot("04-confirm-replay").await;
    browser.submit(".confirm button[type=submit]").await;
    browser
        .wait_for_text(
            ".notice",
            "1 dead delivery was queued again",
            Duration::from_secs(5),
        )
        .await;
    busbar
        .wait_for_delivery(poison, "recruitiq-to-directory", "delivered", SETTLE)
        .await;
    // The key goes on: the hire behind it follows.
    busbar
        .wait_for_delivery(behind, "recruitiq-to-directory", "delivered", SETTLE)
        .await;

    // The event page shows it delivered, with the tree of emitted events.
    browser
        .open(&busbar.url(&format!("/console/events/{poison}")))
        .await;
    let page = browser.page_text().await;
    assert!(page.contains("recruitiq-to-directory"), "{page}");
    assert!(!page.contains("dead letter"), "{page}");
    assert!(page.contains("emitted nexus/employee.created"), "{page}");
    browser.shot("06-event").await;
}

async fn an_integration_is_paused_and_resumed(browser: &Browser, busbar: &Busbar) {
    let page = busbar.url("/console/integrations/recruitiq-to-paylinq");
    browser.open(&page).await;
    browser.submit("#state-pause").await;
    assert_eq!(
        browser.text("#confirm-title").await,
        "Pause recruitiq-to-paylinq?"
    );
    assert!(
        browser
            .text(".confirm")
            .await
            .contains("nothing is skipped")
    );
    browser.submit(".confirm button[type=submit]").await;
    browser
        .wait_for_text(".notice", "paused", Duration::from_secs(5))
        .await;
    assert!(browser.text("h1").await.contains("paused"));
    browser.open(&busbar.url("/console")).await;
    let row = browser.text("#flow-recruitiq-to-paylinq").await;
    assert!(row.contains("paused"), "{row}");

    // Paused, its events wait: nothing runs, nothing is skipped.
    let waiting = busbar
        .publish(&hire(ORGANIZATION, USER, "paused@example.com"))
        .await;
    busbar
        .wait_for_delivery(waiting, "recruitiq-to-nexus", "delivered", SETTLE)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    busbar
        .wait_for_delivery(waiting, "recruitiq-to-paylinq", "pending", SETTLE)
        .await;
    browser
        .open(&busbar.url(&format!("/console/events/{waiting}")))
        .await;
    assert!(browser.page_text().await.contains("waits for its lane"));
    browser.shot("07b-paused-event").await;

    // Its charts: the backlog ends on the status API's figure, the lag and
    // the per-minute charts are drawn, and the pause is marked.
    browser.open(&format!("{page}#charts")).await;
    let status = busbar.status().await;
    let paylinq = status["integrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "recruitiq-to-paylinq")
        .unwrap()
        .clone();
    let waiting_now = paylinq["deliveries"]["pending"].as_i64().unwrap()
        + paylinq["deliveries"]["retrying"].as_i64().unwrap();
    assert!(waiting_now >= 1, "{paylinq}");
    assert_eq!(
        browser.attr("#chart-backlog", "data-last").await.as_deref(),
        Some(waiting_now.to_string().as_str()),
        "the backlog chart's last point is the status API's figure"
    );
    assert_eq!(
        browser
            .attr("#chart-backlog circle.last", "data-value")
            .await
            .as_deref(),
        Some(waiting_now.to_string().as_str())
    );
    for chart in ["#chart-applied", "#chart-failures", "#chart-lag"] {
        assert!(browser.attr(chart, "data-last").await.is_some(), "{chart}");
    }
    assert!(browser.text("#now-backlog").await.contains("waiting"));
    assert!(browser.text("#now-lag").await.contains("behind"));
    let marks = browser.text("#chart-backlog").await;
    assert!(marks.contains("paused"), "the pause is marked: {marks}");
    browser.shot("07c-charts").await;

    browser.open(&page).await;
    browser.submit("#state-resume").await;
    browser
        .wait_for_text(".notice", "running again", Duration::from_secs(5))
        .await;
    assert!(browser.text("h1").await.contains("enabled"));
    // Resumed, it delivers what waited.
    busbar
        .wait_for_delivery(waiting, "recruitiq-to-paylinq", "delivered", SETTLE)
        .await;
}

async fn a_form_without_its_csrf_token_is_refused(browser: &Browser, busbar: &Busbar) {
    browser
        .open(&busbar.url("/console/integrations/recruitiq-to-paylinq"))
        .await;
    // The real form, its token taken out.
    browser
        .client
        .execute(
            "document.querySelectorAll('input[name=csrf]').forEach(e => e.remove())",
            vec![],
        )
        .await
        .unwrap();
    browser.submit("#state-disable").await;
    let page = browser.page_text().await;
    assert!(page.contains("security token"), "{page}");
    browser.open(&busbar.url("/console")).await;
    assert!(
        browser
            .text("#flow-recruitiq-to-paylinq")
            .await
            .contains("enabled")
    );
    // And with a made-up token.
    let status = post_from_page(
        browser,
        "/console/integrations/recruitiq-to-paylinq/state",
        "change=disable&confirmed=yes&csrf=forged",
        false,
    )
    .await;
    assert_eq!(status, 403);
}

async fn the_other_pages_answer(browser: &Browser, busbar: &Busbar) {
    // Search by a payload field.
    browser
        .open(&busbar.url("/console/events?field=candidate.email&value=poison%40example.com"))
        .await;
    let results = browser.text("#main").await;
    assert!(results.contains("recruitiq/candidate.hired"), "{results}");
    assert_eq!(
        browser
            .client
            .find_all(Locator::Css(".events-table tbody tr"))
            .await
            .unwrap()
            .len(),
        1
    );
    browser.shot("07-events").await;

    // Try an event: the shipped example, rendered without writing.
    browser.open(&busbar.url("/console/try")).await;
    browser.submit("form button.primary").await;
    let result = browser.text("#result").await;
    assert!(result.contains("recruitiq-to-nexus"), "{result}");
    assert!(result.contains("upsert hris.employees"), "{result}");
    assert!(result.contains("emit employee.created"), "{result}");
    browser.shot("08-try").await;

    // Redeliver: a preview count, then the answer.
    browser.open(&busbar.url("/console/redeliver")).await;
    browser
        .client
        .find(Locator::Css("#r-integration"))
        .await
        .unwrap()
        .select_by_value("recruitiq-to-nexus")
        .await
        .unwrap();
    browser.submit("form button.primary").await;
    let question = browser.text("#confirm-title").await;
    assert!(
        question.starts_with("Redeliver ") && question.ends_with("through recruitiq-to-nexus?"),
        "{question}"
    );
    browser.shot("09-redeliver-preview").await;
    // The confirmed form, as it will be sent (with its request id).
    let confirmed = browser
        .client
        .execute(
            "return new URLSearchParams(new FormData(document.querySelector('.confirm form'))).toString()",
            vec![],
        )
        .await
        .unwrap();
    browser.submit(".confirm button[type=submit]").await;
    browser
        .wait_for_text(".notice", "queued to run again", Duration::from_secs(10))
        .await;
    browser.shot("09b-redelivered").await;
    // Sent again (a double click, a resubmitted form): its request id
    // redelivers once.
    let again = browser
        .client
        .execute_async(
            r#"const [body, done] = arguments;
               fetch('/console/redeliver', { method: 'POST', body: body,
                      headers: { 'Content-Type': 'application/x-www-form-urlencoded' } })
                 .then(r => r.text()).then(done, () => done(''));"#,
            vec![confirmed],
        )
        .await
        .unwrap();
    assert!(
        again.as_str().unwrap_or("").contains("already made"),
        "{again}"
    );
}

async fn a_broken_yaml_file_shows_its_error_on_the_overview(browser: &Browser, busbar: &Busbar) {
    let file = busbar.dir.join("recruitiq-to-nexus.yaml");
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, good.replace("firstName", "firstname")).unwrap();
    browser.open(&busbar.url("/console")).await;
    // The overview refreshes by itself.
    browser
        .wait_for_text("#reload", "The last reload failed", Duration::from_secs(20))
        .await;
    let reload = browser.text("#reload").await;
    let position = regex::Regex::new(r"recruitiq-to-nexus\.yaml:\d+:\d+").unwrap();
    assert!(position.is_match(&reload), "{reload}");
    assert!(reload.contains("not in the contract"), "{reload}");
    browser.shot("10-reload-error").await;
    std::fs::write(&file, good).unwrap();
    browser
        .wait_for_text("#reload", "went live", Duration::from_secs(20))
        .await;
}

async fn an_organization_key_never_sees_another_organizations_events(
    browser: &Browser,
    busbar: &Busbar,
) {
    let theirs = busbar
        .publish(&hire(ORGANIZATION, USER, "acme-only@example.com"))
        .await;
    let ours = busbar
        .publish(&hire(
            ORGANIZATION_WITHOUT_SUBSCRIPTIONS,
            USER,
            "globex@example.com",
        ))
        .await;
    let key = busbar
        .key(
            Some(ORGANIZATION_WITHOUT_SUBSCRIPTIONS),
            &[Scope::Read, Scope::Admin],
        )
        .await;
    browser.sign_in(busbar, &key).await;
    browser.open(&busbar.url("/console/events")).await;
    let link = |id: Uuid| format!("#main a[href=\"/console/events/{id}\"]");
    assert!(browser.client.find(Locator::Css(&link(ours))).await.is_ok());
    assert!(
        browser
            .client
            .find(Locator::Css(&link(theirs)))
            .await
            .is_err()
    );

    // By URL: the event page, the id search, and asking for the other
    // organization.
    browser
        .open(&busbar.url(&format!("/console/events/{theirs}")))
        .await;
    assert!(browser.text("h1").await.contains("Not found"));
    browser
        .open(&busbar.url(&format!("/console/events?id={theirs}")))
        .await;
    assert!(browser.text(".alert").await.contains("no event"));
    browser
        .open(&busbar.url(&format!("/console/events?organization={ORGANIZATION}")))
        .await;
    assert!(browser.text("h1").await.contains("Not allowed"));
    // The live tail and the overview's numbers are scoped too.
    browser.open(&busbar.url("/console/tail")).await;
    assert!(
        browser
            .client
            .find(Locator::Css(&format!(
                "#tail a[href=\"/console/events/{theirs}\"]"
            )))
            .await
            .is_err()
    );
    browser.sign_out().await;
}
