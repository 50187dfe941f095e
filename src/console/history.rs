//! The console's charts over time: an integration's applied and failures
//! per minute, backlog and lag over the last hour or day, and the
//! overview's sparklines. The past comes from the per-minute history
//! (`store::history`, recorded by `engine::history`) and the per-minute
//! delivery counters; the last point of each chart is read now, with the
//! figures `/metrics` serves (`store::figures`), so a chart ends on the
//! value the status API and the metrics show. Drawn by [`super::chart`].

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::chart::{self, Chart, Mark, Unit};
use super::view;
use crate::engine::Engine;
use crate::store::history::{self, Sample};
use crate::store::scope::OrgScope;
use crate::store::{StoreError, figures};

/// Events counted per lane at most, for the backlog (as `/metrics`).
const BACKLOG_CAP: i64 = 1000;

/// The span a page's charts cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    Hour,
    Day,
}

impl Window {
    /// `day` from the query string; anything else is the last hour.
    pub fn parse(text: Option<&str>) -> Window {
        match text {
            Some("day") => Window::Day,
            _ => Window::Hour,
        }
    }

    fn span(self) -> Duration {
        match self {
            Window::Hour => Duration::hours(1),
            Window::Day => Duration::days(1),
        }
    }

    fn words(self) -> &'static str {
        match self {
            Window::Hour => "the last hour",
            Window::Day => "the last day",
        }
    }
}

/// One chart as the page shows it.
#[derive(Debug, Serialize)]
pub struct ChartView {
    pub id: String,
    pub title: String,
    /// The current value in words ("3 events", "2 min 5 s").
    pub now: String,
    pub svg: minijinja::Value,
}

/// An integration's charts over `window`. An organization's key sees
/// applied per minute (its own); the backlog, lag and failures are the
/// whole integration's, so only a platform key sees them.
pub async fn integration_charts(
    engine: &Engine,
    integration: &str,
    scope: OrgScope,
    window: Window,
) -> Result<Vec<ChartView>, StoreError> {
    let now = Utc::now();
    let from = now - window.span();
    let mut tx = engine.store().begin_read().await?;
    let applied = history::applied_per_minute(&mut tx, scope, integration, from).await?;
    let samples = history::read(&mut tx, integration, from).await?;
    let failures_now = history::failures_since(&mut tx, history::minute_of(now))
        .await?
        .get(integration)
        .copied()
        .unwrap_or(0);
    tx.rollback().await?;
    let mut charts = vec![Chart {
        id: "applied".into(),
        title: format!("Applied per minute, {}", window.words()),
        unit: Unit::PerMinute,
        from,
        to: now,
        points: per_minute(&applied, from, now),
        marks: Vec::new(),
    }];
    if scope == OrgScope::Platform {
        let current = figures::read(engine.store(), &engine.generation(), BACKLOG_CAP)
            .await?
            .remove(integration)
            .unwrap_or_default();
        let state = engine
            .status(integration)
            .map_or("enabled", |s| s.state.as_str());
        let marks = marks(&samples, state, now);
        let series = |value: fn(&Sample) -> f64, last: f64| -> Vec<(DateTime<Utc>, f64)> {
            let mut points: Vec<(DateTime<Utc>, f64)> =
                samples.iter().map(|s| (s.minute, value(s))).collect();
            points.push((now, last));
            points
        };
        charts[0].marks = marks.clone();
        charts.push(Chart {
            id: "failures".into(),
            title: format!("Failures per minute, {}", window.words()),
            unit: Unit::PerMinute,
            from,
            to: now,
            points: series(|s| s.failures as f64, failures_now as f64),
            marks: marks.clone(),
        });
        charts.push(Chart {
            id: "backlog".into(),
            title: format!("Backlog, {}", window.words()),
            unit: Unit::Count,
            from,
            to: now,
            points: series(|s| s.backlog as f64, current.backlog() as f64),
            marks: marks.clone(),
        });
        charts.push(Chart {
            id: "lag".into(),
            title: format!(
                "Lag (age of the oldest event not applied), {}",
                window.words()
            ),
            unit: Unit::Seconds,
            from,
            to: now,
            points: series(|s| s.lag_seconds, current.lag_seconds(now)),
            marks,
        });
    }
    Ok(charts
        .into_iter()
        .map(|chart| ChartView {
            now: now_words(&chart),
            id: chart.id.clone(),
            title: chart.title.clone(),
            svg: view::safe(chart::svg(&chart)),
        })
        .collect())
}

fn now_words(chart: &Chart) -> String {
    let value = chart.points.last().map_or(0.0, |p| p.1);
    match chart.id.as_str() {
        "applied" | "failures" => format!("{} this minute", number(value)),
        "backlog" if value == 0.0 => "nothing waits".to_owned(),
        "backlog" => format!("{} waiting", chart::words(value, chart.unit)),
        "lag" if value == 0.0 => "nothing waits".to_owned(),
        "lag" => format!("{} behind", chart::words(value, chart.unit)),
        _ => chart::words(value, chart.unit),
    }
}

fn number(value: f64) -> String {
    format!("{}", value.round() as i64)
}

/// Counts per minute over `[from, now]`, every minute present (zero when
/// nothing was delivered); the last is the current, unfinished minute.
fn per_minute(
    counts: &[(DateTime<Utc>, i64)],
    from: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, f64)> {
    let by_minute: HashMap<i64, i64> = counts
        .iter()
        .map(|(t, n)| (history::minute_of(*t).timestamp(), *n))
        .collect();
    let mut out = Vec::new();
    let mut minute = history::minute_of(from) + Duration::minutes(1);
    let last = history::minute_of(now);
    while minute <= last {
        let count = by_minute.get(&minute.timestamp()).copied().unwrap_or(0);
        out.push((minute, count as f64));
        minute += Duration::minutes(1);
    }
    out
}

/// The state changes and reloads in `samples` (and the current state, if
/// it changed since the last sample), as marks on the time axis.
fn marks(samples: &[Sample], state_now: &str, now: DateTime<Utc>) -> Vec<Mark> {
    let mut out = Vec::new();
    for pair in samples.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        if before.state != after.state {
            out.push(Mark {
                at: after.minute,
                label: after.state.clone(),
            });
        }
        if before.generation != after.generation {
            out.push(Mark {
                at: after.minute,
                label: format!("generation {}", after.generation),
            });
        }
    }
    if let Some(last) = samples.last()
        && last.state != state_now
    {
        out.push(Mark {
            at: now,
            label: state_now.to_owned(),
        });
    }
    out
}

/// Per integration, a sparkline of its deliveries per minute over the
/// last hour (in `scope`), for the overview.
pub async fn sparklines(
    engine: &Engine,
    ids: &[String],
    scope: OrgScope,
) -> Result<HashMap<String, minijinja::Value>, StoreError> {
    let now = Utc::now();
    let from = now - Duration::hours(1);
    let mut tx = engine.store().begin_read().await?;
    let mut out = HashMap::new();
    for id in ids {
        let applied = history::applied_per_minute(&mut tx, scope, id, from).await?;
        let points = per_minute(&applied, from, now);
        let total: f64 = points.iter().map(|p| p.1).sum();
        let label = format!(
            "{id}: {} delivered in the last hour, per minute",
            total as i64
        );
        out.insert(
            id.clone(),
            view::safe(chart::sparkline(id, &points, from, now, &label)),
        );
    }
    tx.rollback().await?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(minute: i64, state: &str, generation: i64) -> Sample {
        Sample {
            integration: "x".into(),
            minute: DateTime::from_timestamp(minute * 60, 0).unwrap(),
            backlog: 0,
            lag_seconds: 0.0,
            failures: 0,
            state: state.into(),
            generation,
        }
    }

    #[test]
    fn state_changes_and_reloads_are_marked_where_they_were_first_seen() {
        let samples = [
            sample(1, "enabled", 1),
            sample(2, "paused", 1),
            sample(3, "paused", 2),
        ];
        let now = DateTime::from_timestamp(4 * 60, 0).unwrap();
        let labels: Vec<String> = marks(&samples, "enabled", now)
            .into_iter()
            .map(|m| format!("{}@{}", m.label, m.at.timestamp() / 60))
            .collect();
        assert_eq!(labels, ["paused@2", "generation 2@3", "enabled@4"]);
    }

    #[test]
    fn every_minute_of_the_window_has_a_count() {
        let from = DateTime::from_timestamp(600, 0).unwrap();
        let now = DateTime::from_timestamp(600 + 5 * 60 + 30, 0).unwrap();
        let counts = [(DateTime::from_timestamp(720, 0).unwrap(), 4)];
        let points = per_minute(&counts, from, now);
        let values: Vec<f64> = points.iter().map(|p| p.1).collect();
        assert_eq!(values, [0.0, 4.0, 0.0, 0.0, 0.0]);
    }
}
