//! Dead letters grouped by cause: the step and the error with the parts
//! that vary from event to event (values, ids, dates, numbers) replaced by
//! `‹…›`, so that a thousand events that failed for one reason are one
//! line with a count. Pure: no I/O.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use regex::{Captures, Regex};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::store::events::DeliveryView;

/// What stands for a part of a message that varies.
pub const HOLE: &str = "‹…›";

/// One cause and the dead deliveries that share it.
#[derive(Debug, Clone, Serialize)]
pub struct CauseGroup {
    /// A stable name for the group (a hash of step and cause), for forms.
    pub key: String,
    /// The step it failed at (1-based), when known.
    pub step: Option<i32>,
    /// The error with its varying parts replaced by `‹…›`.
    pub cause: String,
    pub count: usize,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Every delivery of the group, newest first.
    pub deliveries: Vec<DeliveryView>,
}

impl CauseGroup {
    /// The ids of the group's deliveries.
    pub fn ids(&self) -> Vec<Uuid> {
        self.deliveries.iter().map(|d| d.id).collect()
    }
}

/// Groups dead deliveries by step and normalised error, the largest group
/// first.
pub fn group(dead: Vec<DeliveryView>) -> Vec<CauseGroup> {
    let mut groups: Vec<CauseGroup> = Vec::new();
    for delivery in dead {
        let cause = normalise(
            delivery
                .last_error
                .as_deref()
                .unwrap_or("no error recorded"),
        );
        let key = group_key(delivery.error_step, &cause);
        let at = delivery.completed_at.unwrap_or(delivery.updated_at);
        match groups.iter_mut().find(|g| g.key == key) {
            Some(group) => {
                group.count += 1;
                group.first_seen = group.first_seen.min(at);
                group.last_seen = group.last_seen.max(at);
                group.deliveries.push(delivery);
            }
            None => groups.push(CauseGroup {
                key,
                step: delivery.error_step,
                cause,
                count: 1,
                first_seen: at,
                last_seen: at,
                deliveries: vec![delivery],
            }),
        }
    }
    groups.sort_by(|a, b| b.count.cmp(&a.count).then(b.last_seen.cmp(&a.last_seen)));
    groups
}

/// A short stable name for a step and cause.
pub fn group_key(step: Option<i32>, cause: &str) -> String {
    let digest = Sha256::digest(format!("{}\u{0}{cause}", step.unwrap_or(0)).as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn regex(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("valid regex"))
}

/// An error message with the parts that vary between events replaced by
/// [`HOLE`]: quoted values (but not quoted names such as `hire_date`),
/// UUIDs, dates and times, e-mail addresses, and numbers (but not step
/// numbers or type sizes such as `varchar(50)`).
pub fn normalise(message: &str) -> String {
    static QUOTED: OnceLock<Regex> = OnceLock::new();
    static UUID: OnceLock<Regex> = OnceLock::new();
    static TIME: OnceLock<Regex> = OnceLock::new();
    static EMAIL: OnceLock<Regex> = OnceLock::new();
    static NUMBER: OnceLock<Regex> = OnceLock::new();
    static NAME: OnceLock<Regex> = OnceLock::new();
    static HOLES: OnceLock<Regex> = OnceLock::new();
    let name = regex(&NAME, r"^[a-z_][a-z0-9_.]*$");
    let quoted = regex(&QUOTED, r#"`[^`]*`|"(?:[^"\\]|\\.)*"|'[^']*'|⟨[^⟩]*⟩"#);
    let text = quoted.replace_all(message, |c: &Captures| {
        let whole = &c[0];
        let first = whole.chars().next().unwrap_or('"');
        let inner = whole
            .trim_start_matches(first)
            .trim_end_matches(['`', '"', '\'', '⟩']);
        if first != '⟨' && name.is_match(inner) {
            whole.to_owned()
        } else {
            HOLE.to_owned()
        }
    });
    let uuid = regex(
        &UUID,
        r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b",
    );
    let text = uuid.replace_all(&text, HOLE);
    let time = regex(
        &TIME,
        r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?",
    );
    let text = time.replace_all(&text, HOLE);
    let email = regex(&EMAIL, r"[^\s@=(),:]+@[^\s@=(),:]+\.[A-Za-z]{2,}");
    let text = email.replace_all(&text, HOLE);
    // A number standing alone, not the step's number and not a size in
    // parentheses.
    let number = regex(&NUMBER, r"(^|[\s=:,\[])(-?\d+(?:\.\d+)?)($|[\s,;.\]])");
    let text = number.replace_all(&text, |c: &Captures| {
        let before = &text[..c.get(2).map_or(0, |m| m.start())];
        let counted = [
            "step ",
            "attempt ",
            "attempts ",
            "route ",
            "generation ",
            "RFC ",
            "ISO ",
        ]
        .iter()
        .any(|word| before.ends_with(word));
        if counted {
            c[0].to_owned()
        } else {
            format!("{}{HOLE}{}", &c[1], &c[3])
        }
    });
    // "‹…›, ‹…›" and the like read better as one hole.
    let holes = regex(&HOLES, r"‹…›(?:\s*[,;]\s*‹…›)+");
    holes.replace_all(&text, HOLE).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_dates_and_ids_become_holes_but_names_stay() {
        assert_eq!(
            normalise(
                "step 2 (upsert hris.employees), `hire_date`: `2027-02-30` is not a date or RFC 3339 timestamp"
            ),
            "step 2 (upsert hris.employees), `hire_date`: ‹…› is not a date or RFC 3339 timestamp"
        );
        assert_eq!(
            normalise(
                "step 1 (find core.users): no row in core.users matches id = \"3f9d7c2a-1b4e-4c6d-8a9f-2b3c4d5e6f70\""
            ),
            "step 1 (find core.users): no row in core.users matches id = ‹…›"
        );
        assert_eq!(
            normalise(
                "column `phone`: cannot store \"+31 20 555 0100 ext 9\" as varchar(50): too long"
            ),
            "column `phone`: cannot store ‹…› as varchar(50): too long"
        );
    }

    #[test]
    fn two_events_that_failed_alike_share_a_group() {
        let a = normalise("`salary`: cannot store 72000.5 as integer: not a whole number in range");
        let b =
            normalise("`salary`: cannot store 81000.25 as integer: not a whole number in range");
        assert_eq!(a, b);
        assert_eq!(
            a,
            "`salary`: cannot store ‹…› as integer: not a whole number in range"
        );
        let c = normalise("duplicate key: Key (email)=(ada@example.com) already exists");
        let d = normalise("duplicate key: Key (email)=(grace@example.org) already exists");
        assert_eq!(c, d);
        assert_eq!(group_key(Some(2), &a), group_key(Some(2), &b));
        assert_ne!(group_key(Some(1), &a), group_key(Some(2), &a));
    }

    #[test]
    fn the_step_number_and_placeholders_are_kept_apart() {
        assert_eq!(
            normalise("step 3 (emit employee.created): `⟨employee.id⟩` is 12 characters"),
            "step 3 (emit employee.created): ‹…› is ‹…› characters"
        );
    }
}
