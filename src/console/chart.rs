//! Time-series charts as SVG, drawn on the server (pure: no I/O, no
//! script): a labelled time axis, the value axis from zero, the series as
//! a line, its last point marked (and carried as `data-last`, which the
//! browser tests compare with the status API), and state changes
//! (paused, disabled, reloads) as dashed lines on the time axis. Also the
//! overview's sparklines, and each figure in words.

use std::fmt::Write as _;

use chrono::{DateTime, Duration, Utc};

/// What a series counts, for its axis and its words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Events or deliveries.
    Count,
    /// Deliveries per minute.
    PerMinute,
    /// A duration in seconds.
    Seconds,
}

/// Something that happened at a moment, marked on the time axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub at: DateTime<Utc>,
    pub label: String,
}

/// One chart: a series over `[from, to]`.
#[derive(Debug, Clone)]
pub struct Chart {
    /// The chart's id in the page (`chart-<id>`), also for the tests.
    pub id: String,
    pub title: String,
    pub unit: Unit,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Oldest first; the last is the current value.
    pub points: Vec<(DateTime<Utc>, f64)>,
    pub marks: Vec<Mark>,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 170.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 18.0;
const BOTTOM: f64 = 26.0;

/// A figure in words: "3 events", "12 per minute", "2 min 5 s".
pub fn words(value: f64, unit: Unit) -> String {
    match unit {
        Unit::Count => {
            let n = value.round() as i64;
            format!("{n} {}", if n == 1 { "event" } else { "events" })
        }
        Unit::PerMinute => format!("{} per minute", number(value)),
        Unit::Seconds => duration(value),
    }
}

/// A duration in seconds as people say it: "0 s", "45 s", "2 min 5 s",
/// "3 h 20 min", "2 d 4 h".
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as i64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 if s % 60 == 0 => format!("{} min", s / 60),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86400, (s % 86400) / 3600),
    }
}

fn number(value: f64) -> String {
    if (value - value.round()).abs() < 1e-9 {
        format!("{}", value.round() as i64)
    } else {
        format!("{value:.1}")
    }
}

/// The value axis' top: the maximum rounded up to 1, 2 or 5 times a
/// power of ten (at least 1).
fn nice_max(max: f64) -> f64 {
    if max <= 1.0 {
        return 1.0;
    }
    let power = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|top| *top >= max)
        .unwrap_or(10.0 * power)
}

fn axis_label(value: f64, unit: Unit) -> String {
    match unit {
        Unit::Seconds if value >= 60.0 => duration(value),
        Unit::Seconds => format!("{} s", number(value)),
        _ => number(value),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The time-axis ticks of a window: every 10 minutes in an hour, every
/// 3 hours in a day (and in proportion otherwise), on round times.
fn ticks(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let span = (to - from).num_seconds().max(60);
    let step = match span {
        0..=3_600 => 600,
        3_601..=21_600 => 3_600,
        _ => 3 * 3_600,
    };
    let first = from.timestamp() + (step - from.timestamp().rem_euclid(step)) % step;
    (0..)
        .map(|i| first + i * step)
        .take_while(|t| *t <= to.timestamp())
        .filter_map(|t| DateTime::from_timestamp(t, 0))
        .collect()
}

/// The chart as an SVG element, labelled for screen readers with its
/// title and current value.
pub fn svg(chart: &Chart) -> String {
    let span = (chart.to - chart.from).num_milliseconds().max(1) as f64;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |t: DateTime<Utc>| {
        LEFT + ((t - chart.from).num_milliseconds() as f64 / span).clamp(0.0, 1.0) * plot_w
    };
    let max = nice_max(chart.points.iter().map(|p| p.1).fold(0.0, f64::max));
    let y = |v: f64| TOP + plot_h - (v / max).clamp(0.0, 1.0) * plot_h;
    let last = chart.points.last().map(|p| p.1).unwrap_or(0.0);
    let id = escape(&chart.id);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart" id="chart-{id}" data-last="{last}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="chart-{id}-title chart-{id}-desc" xmlns="http://www.w3.org/2000/svg">"#,
        last = number(last),
    );
    let _ = write!(
        out,
        r#"<title id="chart-{id}-title">{}</title><desc id="chart-{id}-desc">Now: {}. From {} to {} UTC.</desc>"#,
        escape(&chart.title),
        escape(&words(last, chart.unit)),
        chart.from.format("%Y-%m-%d %H:%M"),
        chart.to.format("%Y-%m-%d %H:%M"),
    );
    // Value axis: zero, half, top.
    for fraction in [0.0, 0.5, 1.0] {
        let value = max * fraction;
        let _ = write!(
            out,
            r#"<line class="grid" x1="{LEFT}" x2="{x2}" y1="{yy:.1}" y2="{yy:.1}"/><text class="axis" x="{tx}" y="{ty:.1}" text-anchor="end">{label}</text>"#,
            x2 = WIDTH - RIGHT,
            yy = y(value),
            tx = LEFT - 6.0,
            ty = y(value) + 4.0,
            label = escape(&axis_label(value, chart.unit)),
        );
    }
    // Time axis, in UTC.
    let _ = write!(
        out,
        r#"<line class="axis-line" x1="{LEFT}" x2="{x2}" y1="{yy}" y2="{yy}"/>"#,
        x2 = WIDTH - RIGHT,
        yy = TOP + plot_h,
    );
    let long = chart.to - chart.from > Duration::hours(6);
    for tick in ticks(chart.from, chart.to) {
        let label = if long && tick.format("%H:%M").to_string() == "00:00" {
            tick.format("%b %d").to_string()
        } else {
            tick.format("%H:%M").to_string()
        };
        let _ = write!(
            out,
            r#"<line class="tick" x1="{xx:.1}" x2="{xx:.1}" y1="{y1}" y2="{y2}"/><text class="axis time" x="{xx:.1}" y="{ty}" text-anchor="middle" data-time="{iso}">{label}</text>"#,
            xx = x(tick),
            y1 = TOP + plot_h,
            y2 = TOP + plot_h + 4.0,
            ty = HEIGHT - 8.0,
            iso = tick.to_rfc3339(),
        );
    }
    let _ = write!(
        out,
        r#"<text class="axis" x="{tx}" y="{ty}" text-anchor="end">UTC</text>"#,
        tx = LEFT - 6.0,
        ty = HEIGHT - 8.0,
    );
    // State changes and reloads, with their labels staggered so that two
    // close marks do not print over each other.
    let mut label_ends: Vec<(f64, usize)> = Vec::new();
    for mark in &chart.marks {
        if mark.at < chart.from || mark.at > chart.to {
            continue;
        }
        let mx = x(mark.at);
        let row = (0..)
            .find(|row| {
                !label_ends
                    .iter()
                    .any(|(end, r)| *r == *row && *end > mx - 2.0)
            })
            .unwrap_or(0);
        let width = 6.0 * mark.label.chars().count() as f64;
        // Near the right edge the label goes to the left of its line.
        let (tx, anchor) = if mx + 3.0 + width > WIDTH - RIGHT {
            (mx - 3.0, "end")
        } else {
            (mx + 3.0, "start")
        };
        label_ends.push((mx + 3.0 + width, row));
        let _ = write!(
            out,
            r#"<g class="mark"><title>{title} at {at} UTC</title><line x1="{mx:.1}" x2="{mx:.1}" y1="{TOP}" y2="{y2}"/><text x="{tx:.1}" y="{ty:.1}" text-anchor="{anchor}">{label}</text></g>"#,
            title = escape(&mark.label),
            at = mark.at.format("%H:%M"),
            y2 = TOP + plot_h,
            ty = TOP + 10.0 + 11.0 * row as f64,
            label = escape(&mark.label),
        );
    }
    // The series.
    if !chart.points.is_empty() {
        let path: Vec<String> = chart
            .points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline class="series" points="{}"/>"#,
            path.join(" ")
        );
        let (t, v) = chart.points[chart.points.len() - 1];
        let _ = write!(
            out,
            r#"<circle class="last" cx="{:.1}" cy="{:.1}" r="3" data-value="{}"><title>{}</title></circle>"#,
            x(t),
            y(v),
            number(v),
            escape(&words(v, chart.unit)),
        );
    }
    out.push_str("</svg>");
    out
}

/// A small line of `points` over `[from, to]`, without axes, for a table
/// cell; its last value in `data-last`.
pub fn sparkline(
    id: &str,
    points: &[(DateTime<Utc>, f64)],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    label: &str,
) -> String {
    const W: f64 = 120.0;
    const H: f64 = 24.0;
    let span = (to - from).num_milliseconds().max(1) as f64;
    let max = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1.0);
    let coords: Vec<String> = points
        .iter()
        .map(|(t, v)| {
            let x =
                ((*t - from).num_milliseconds() as f64 / span).clamp(0.0, 1.0) * (W - 4.0) + 2.0;
            let y = H - 2.0 - (v / max).clamp(0.0, 1.0) * (H - 4.0);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let last = points.last().map_or(0.0, |p| p.1);
    format!(
        r#"<svg class="sparkline" id="spark-{id}" data-last="{last}" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{label}" xmlns="http://www.w3.org/2000/svg"><polyline points="{coords}"/></svg>"#,
        id = escape(id),
        last = number(last),
        label = escape(label),
        coords = coords.join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + minute * 60, 0).unwrap()
    }

    #[test]
    fn figures_are_said_in_words() {
        assert_eq!(words(1.0, Unit::Count), "1 event");
        assert_eq!(words(3.0, Unit::Count), "3 events");
        assert_eq!(words(12.0, Unit::PerMinute), "12 per minute");
        assert_eq!(duration(0.4), "0 s");
        assert_eq!(duration(45.0), "45 s");
        assert_eq!(duration(125.0), "2 min 5 s");
        assert_eq!(duration(120.0), "2 min");
        assert_eq!(duration(12_000.0), "3 h 20 min");
        assert_eq!(duration(187_200.0), "2 d 4 h");
    }

    #[test]
    fn the_value_axis_ends_on_a_round_number() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.0), 5.0);
        assert_eq!(nice_max(17.0), 20.0);
        assert_eq!(nice_max(501.0), 1000.0);
    }

    #[test]
    fn an_hour_has_a_tick_every_ten_minutes_and_a_day_every_three_hours() {
        assert_eq!(ticks(at(0), at(60)).len(), 7);
        assert_eq!(ticks(at(3), at(63)).len(), 6);
        let day = ticks(at(0), at(24 * 60));
        assert!(matches!(day.len(), 8 | 9), "{day:?}");
        assert!(day.windows(2).all(|w| w[1] - w[0] == Duration::hours(3)));
        assert!(day.iter().all(|t| t.timestamp() % (3 * 3600) == 0));
    }

    #[test]
    fn a_chart_labels_its_axes_marks_its_changes_and_carries_its_last_value() {
        let chart = Chart {
            id: "backlog".into(),
            title: "Backlog <last hour>".into(),
            unit: Unit::Count,
            from: at(0),
            to: at(60),
            points: vec![(at(10), 0.0), (at(20), 4.0), (at(59), 3.0)],
            marks: vec![
                Mark {
                    at: at(15),
                    label: "paused".into(),
                },
                Mark {
                    at: at(16),
                    label: "generation 2".into(),
                },
            ],
        };
        let svg = svg(&chart);
        assert!(
            svg.starts_with(r#"<svg class="chart" id="chart-backlog" data-last="3""#),
            "{svg}"
        );
        assert!(svg.contains("Backlog &lt;last hour&gt;"), "escaped: {svg}");
        assert!(svg.contains("Now: 3 events."), "{svg}");
        assert!(
            svg.contains(r#"data-time=""#) && svg.contains(">08:10</text>"),
            "{svg}"
        );
        // The mark near the right edge puts its label to the left of its line.
        let mut late = chart.clone();
        late.marks = vec![Mark {
            at: at(59),
            label: "paused".into(),
        }];
        assert!(super::svg(&late).contains(r#"text-anchor="end">paused</text>"#));
        assert!(svg.contains(r#"<circle class="last""#) && svg.contains(r#"data-value="3""#));
        assert_eq!(svg.matches(r#"<g class="mark">"#).count(), 2);
        // The second mark is a minute later: its label goes on a second row.
        let rows: Vec<&str> = svg
            .match_indices(r#"<text x=""#)
            .map(|(i, _)| &svg[i..i + 40])
            .collect();
        assert_eq!(rows.len(), 2, "{svg}");
        assert_ne!(
            rows[0].split("y=").nth(1),
            rows[1].split("y=").nth(1),
            "{rows:?}"
        );
        // A mark outside the window is left out.
        let mut outside = chart.clone();
        outside.marks = vec![Mark {
            at: at(-5),
            label: "paused".into(),
        }];
        assert!(!super::svg(&outside).contains("class=\"mark\""));
    }

    #[test]
    fn a_sparkline_carries_its_last_value() {
        let line = sparkline(
            "x",
            &[(at(0), 1.0), (at(30), 7.0)],
            at(0),
            at(60),
            "backlog",
        );
        assert!(line.contains(r#"data-last="7""#), "{line}");
        assert!(line.contains("<polyline points="));
    }
}
