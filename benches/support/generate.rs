//! Generates a directory of integration files for the `check` benchmark.
//!
//! Shared by `benches/compile_and_map.rs` (which generates into a temporary
//! directory) and `examples/gen_integrations.rs` (which writes where it is
//! told, so the figure can be reproduced with the release binary:
//! `busbar check DIR/integrations.d`).
//!
//! Every file is modelled on the shipped `recruitiq-to-nexus.yaml`: a
//! guarded route with a `find`, two `upsert`s (JSONPaths, templates,
//! literals and explicit forms mixed), an `emit` that reads the first
//! upsert's row, and a second route with an `update`. The generated
//! directory must check clean (no errors), so:
//!
//! - ids, file names and target tables are distinct per file (no
//!   duplicate ids, no two integrations upserting the same rows);
//! - products are ordered and every integration's target comes after its
//!   source, so the emit graph is acyclic however events chain;
//! - most events have a contract (`schemas/events/<product>/<event>.json`)
//!   listing every field the mappings read and emit; `<entity>.changed` of
//!   a quarter of the entities has none, and draws a `missing-contract`
//!   warning where it is read or emitted, as an unchecked event would.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

/// Product names, in the order the emit graph flows (sources before targets).
const PRODUCT_WORDS: [&str; 10] = [
    "recruit", "hris", "payroll", "crm", "ledger", "billing", "support", "assets", "learning",
    "travel",
];
const PRODUCT_SUFFIXES: [&str; 4] = ["", "_eu", "_us", "_apac"];
/// Entities events are about: `<entity>.changed`, `<entity>.removed`.
const ENTITIES: [&str; 8] = [
    "candidate",
    "employee",
    "invoice",
    "ticket",
    "order",
    "contract",
    "asset",
    "course",
];
/// Sources are the first `SOURCES` products; a target is 1..=`SPREAD`
/// products later.
const SOURCES: usize = 30;
const SPREAD: usize = 10;

/// What [`generate`] wrote.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The integrations directory (`<root>/integrations.d`), for `check`.
    pub integrations_dir: PathBuf,
    pub integrations: usize,
    pub contracts: usize,
    /// Total bytes of YAML written.
    pub yaml_bytes: usize,
}

fn products() -> Vec<String> {
    PRODUCT_SUFFIXES
        .iter()
        .flat_map(|suffix| {
            PRODUCT_WORDS
                .iter()
                .map(move |word| format!("{word}{suffix}"))
        })
        .collect()
}

/// Whether `<product>/<entity>.changed` gets a contract (`.removed`
/// always has one).
fn has_contract(entity: usize) -> bool {
    entity % 4 != 3
}

/// One integration file, number `i`.
pub fn integration_yaml(i: usize) -> (String, String) {
    let products = products();
    let s = i % SOURCES;
    let t = s + 1 + (i / SOURCES) % SPREAD;
    let (source, target) = (&products[s], &products[t]);
    let k = (i / 7) % ENTITIES.len();
    let entity = ENTITIES[k];
    let emitted = ENTITIES[(k + 1) % ENTITIES.len()];
    let id = format!("{source}-to-{target}-{i:04}");
    let file = format!("{i:04}-{source}-to-{target}.yaml");
    let guard = if i.is_multiple_of(3) {
        "    when: \"{{ data.email is defined }}\"\n"
    } else {
        ""
    };
    let extra = if i.is_multiple_of(2) {
        "          department: { path: $.data.department, default: general }\n          title: $.data.title\n"
    } else {
        "          title: \"{{ data.title | default('unknown') | title }}\"\n"
    };
    let mut yaml = String::with_capacity(2048);
    let _ = write!(
        yaml,
        r#"# yaml-language-server: $schema=../schemas/integration.schema.json
#
# Generated for the `check` benchmark (benches/support/generate.rs): number {i}.
id: {id}
description: {entity} records from {source} become records in {target}.
source: {source}
target: {target}
retry: {{ max_attempts: {attempts}, initial: 2s, max: 5m }}
order_by: $.data.id
routes:
  - on: {entity}.changed
{guard}    steps:
      - description: Only organizations subscribed to {target} get records.
        find: core.product_subscriptions
        where: {{ organization_id: $.organization_id, product_id: {target}, status: active }}
        missing: skip

      - upsert: {target}.{entity}_records_{i:04}
        key: [organization_id, external_id]
        values:
          organization_id: $.organization_id
          external_id: $.data.id
          first_name: $.data.first_name
          last_name: $.data.last_name
          email: "{{{{ data.email | trim | lower }}}}"
          phone: $.data.phone
{extra}          start_date: "{{{{ (data.start_date or event.occurred_at) | date }}}}"
          amount: {{ path: $.data.amount, default: 0 }}
          status: active
        as: record

      - upsert: integrations.{entity}_map_{i:04}
        key: [organization_id, source_id]
        values:
          organization_id: $.organization_id
          source_id: $.data.id
          target_id: "{{{{ record.id }}}}"
          mapped_at: $.occurred_at
          note: "mapped from {source} event {{{{ event.id }}}} at {{{{ event.occurred_at }}}}"

      - emit: {emitted}.changed
        data:
          id: "{{{{ record.id }}}}"
          first_name: "{{{{ record.first_name }}}}"
          last_name: "{{{{ record.last_name }}}}"
          email: "{{{{ record.email }}}}"
          start_date: "{{{{ record.start_date }}}}"
          amount: $.data.amount
          currency: {{ path: $.data.currency, default: EUR }}

  - on: {entity}.removed
    steps:
      - update: {target}.{entity}_records_{i:04}
        where: {{ organization_id: $.organization_id, external_id: $.data.id }}
        set:
          status: closed
          closed_at: "{{{{ event.occurred_at | datetime }}}}"
        missing: skip
"#,
        attempts = 3 + i % 6,
    );
    (file, yaml)
}

/// The contract of `<product>/<entity>.changed`: every field the generated
/// mappings read or emit.
pub fn contract_json(product: &str, entity: &str) -> String {
    format!(
        r#"{{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "{product}/{entity}.changed",
  "description": "Generated for the check benchmark.",
  "type": "object",
  "additionalProperties": false,
  "required": ["id", "email"],
  "properties": {{
    "id": {{ "type": "string" }},
    "first_name": {{ "type": ["string", "null"] }},
    "last_name": {{ "type": ["string", "null"] }},
    "email": {{ "type": "string", "minLength": 3 }},
    "phone": {{ "type": ["string", "null"] }},
    "title": {{ "type": ["string", "null"] }},
    "department": {{ "type": ["string", "null"] }},
    "start_date": {{ "type": ["string", "null"], "format": "date" }},
    "amount": {{ "type": "number", "minimum": 0 }},
    "currency": {{ "type": "string", "pattern": "^[A-Z]{{3}}$" }}
  }}
}}
"#
    )
}

/// The contract of `<product>/<entity>.removed`.
pub fn removed_contract_json(product: &str, entity: &str) -> String {
    format!(
        r#"{{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "{product}/{entity}.removed",
  "type": "object",
  "required": ["id"],
  "properties": {{
    "id": {{ "type": "string" }},
    "reason": {{ "type": ["string", "null"] }}
  }}
}}
"#
    )
}

/// Writes `count` integration files to `<root>/integrations.d` and the
/// contracts they use to `<root>/schemas/events` (where `check` looks by
/// default). `root` is created if needed; existing generated files are
/// overwritten.
pub fn generate(root: &Path, count: usize) -> io::Result<Generated> {
    let integrations_dir = root.join("integrations.d");
    std::fs::create_dir_all(&integrations_dir)?;
    let mut yaml_bytes = 0;
    for i in 0..count {
        let (file, yaml) = integration_yaml(i);
        yaml_bytes += yaml.len();
        std::fs::write(integrations_dir.join(file), yaml)?;
    }
    let mut contracts = 0;
    for product in products() {
        let dir = root.join("schemas").join("events").join(&product);
        std::fs::create_dir_all(&dir)?;
        for (k, entity) in ENTITIES.iter().enumerate() {
            if has_contract(k) {
                std::fs::write(
                    dir.join(format!("{entity}.changed.json")),
                    contract_json(&product, entity),
                )?;
                contracts += 1;
            }
            std::fs::write(
                dir.join(format!("{entity}.removed.json")),
                removed_contract_json(&product, entity),
            )?;
            contracts += 1;
        }
    }
    Ok(Generated {
        integrations_dir,
        integrations: count,
        contracts,
        yaml_bytes,
    })
}
