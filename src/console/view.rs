//! The console's templates (minijinja, embedded in the binary, HTML
//! auto-escaped) and the frame every page shares: the navigation, who is
//! signed in, the sign-out form.

use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::response::Html;
use chrono::{DateTime, Utc};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value, context};
use serde::Serialize;

use super::{ConsoleError, Viewer};

/// Every template, by name.
const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("assets/templates/layout.html")),
    ("macros.html", include_str!("assets/templates/macros.html")),
    (
        "sign_in.html",
        include_str!("assets/templates/sign_in.html"),
    ),
    (
        "overview.html",
        include_str!("assets/templates/overview.html"),
    ),
    (
        "integration.html",
        include_str!("assets/templates/integration.html"),
    ),
    ("events.html", include_str!("assets/templates/events.html")),
    ("event.html", include_str!("assets/templates/event.html")),
    ("tail.html", include_str!("assets/templates/tail.html")),
    (
        "redeliver.html",
        include_str!("assets/templates/redeliver.html"),
    ),
    ("try.html", include_str!("assets/templates/try.html")),
    (
        "confirm.html",
        include_str!("assets/templates/confirm.html"),
    ),
    ("error.html", include_str!("assets/templates/error.html")),
];

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        // A typo in a template is an error, not an empty string.
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_syntax(
            SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .expect("the default delimiters are valid"),
        );
        env.add_filter("when", filter_when);
        env.add_filter("ago", filter_ago);
        env.add_filter("clip", filter_clip);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|error| panic!("console template {name}: {error:#}"));
        }
        env
    })
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `{{ t | when }}`: a timestamp as `2026-11-28 09:30:05 UTC`.
fn filter_when(value: String) -> String {
    parse_time(&value)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or(value)
}

/// `{{ t | ago }}`: how long ago, in a word (`12 s ago`, `3 min ago`).
fn filter_ago(value: String) -> String {
    let Some(time) = parse_time(&value) else {
        return value;
    };
    let seconds = (Utc::now() - time).num_seconds();
    match seconds {
        s if s < 0 => "in the future".into(),
        s if s < 60 => format!("{s} s ago"),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 86_400 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

/// `{{ text | clip(n) }}`: at most `n` characters, with `…` when cut.
fn filter_clip(value: String, n: usize) -> String {
    if value.chars().count() <= n {
        value
    } else {
        let mut cut: String = value.chars().take(n.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// Renders a page template inside the frame: `nav` names the menu entry to
/// mark as current.
pub fn page(
    viewer: &Viewer,
    template: &str,
    nav: &str,
    title: &str,
    content: impl Serialize,
) -> Result<Html<String>, ConsoleError> {
    let ctx = context! {
        nav,
        title,
        viewer => Serde(viewer.summary()),
        csrf => viewer.csrf.clone(),
        ..Value::from(Serde(content))
    };
    render(template, ctx)
}

/// Renders a template with `ctx`.
pub fn render(template: &str, ctx: Value) -> Result<Html<String>, ConsoleError> {
    let env = environment();
    env.get_template(template)
        .and_then(|t| t.render(ctx))
        .map(Html)
        .map_err(|error| {
            tracing::error!(
                template,
                error = format!("{error:#}"),
                "console template failed"
            );
            ConsoleError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "This page could not be drawn; the cause is in busbar's log.",
            )
        })
}

/// The error page (without the signed-in frame, which may be what failed).
pub fn render_error(status: StatusCode, title: &str, message: &str) -> String {
    let ctx = context! { status => status.as_u16(), title, message };
    match environment()
        .get_template("error.html")
        .and_then(|t| t.render(ctx))
    {
        Ok(html) => html,
        Err(_) => format!(
            "<!doctype html><title>{status}</title><p>{}</p>",
            super::highlight::escape(message)
        ),
    }
}

/// A value already made safe HTML (highlighted code, the SVG graph).
pub fn safe(html: String) -> Value {
    Value::from_safe_string(html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        let env = environment();
        for (name, _) in TEMPLATES {
            env.get_template(name).expect("template compiles");
        }
    }

    #[test]
    fn the_error_page_escapes_its_message() {
        let html = render_error(StatusCode::NOT_FOUND, "Not found", "<script>x</script>");
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("<script>x"));
    }
}
