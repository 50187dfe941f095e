//! The overview (`GET /console`): every integration as a flow between
//! products, with its state and numbers, and the last reload. The page
//! refreshes itself (a script swaps the numbers in every few seconds;
//! without scripts, a `<meta http-equiv="refresh">` reloads it).

use axum::extract::State;
use axum::response::Html;
use serde::Serialize;

use super::data::{self, FlowNumbers, FlowState};
use super::flow::{self, Chain, Edge};
use super::{ConsoleError, Viewer, view};
use crate::api::{AppState, ReloadOutcome};
use crate::store::activity::{self, Blocker};
use crate::store::scope::OrgScope;

/// One integration's line in the overview.
#[derive(Debug, Serialize)]
struct FlowLine {
    id: String,
    description: Option<String>,
    source: String,
    target: String,
    events: Vec<String>,
    emits: Vec<String>,
    state: FlowState,
    disabled_in_yaml: bool,
    numbers: FlowNumbers,
    /// Deliveries per minute over the last hour, as a sparkline.
    sparkline: Option<minijinja::Value>,
}

#[derive(Debug, Serialize)]
struct Overview {
    generation: u64,
    flows: Vec<FlowLine>,
    reload: ReloadOutcome,
    graph: minijinja::Value,
    /// The totals of every flow, for the headline.
    dead: i64,
    retrying: i64,
    backlog: i64,
    /// Sessions of busbar's database that delivery waits on (platform
    /// viewers only: other sessions' queries are not an organization's).
    waiting_on: Vec<Blocker>,
}

/// `GET /console`.
pub async fn page(
    viewer: Viewer,
    State(state): State<AppState>,
) -> Result<Html<String>, ConsoleError> {
    let generation = state.engine.generation();
    let ids = generation.integration_ids();
    let mut numbers = data::flow_numbers(&state.engine, &ids, viewer.org_scope()).await?;
    let mut sparklines =
        super::history::sparklines(&state.engine, &ids, viewer.org_scope()).await?;
    let links = data::emit_links(&generation);
    let waiting_on = if viewer.org_scope() == OrgScope::Platform {
        activity::blockers(state.engine.store()).await?
    } else {
        Vec::new()
    };
    let flows: Vec<FlowLine> = generation
        .integrations
        .iter()
        .map(|integration| {
            let events = integration.events();
            let mut emits: Vec<String> = Vec::new();
            for (from, event, to) in &links {
                if *from == integration.id {
                    emits.push(format!("{event} → {to}"));
                }
            }
            FlowLine {
                id: integration.id.clone(),
                description: integration.description.clone(),
                source: integration.source.clone(),
                target: integration.target.clone(),
                events,
                emits,
                state: data::flow_state(&state.engine, &integration.id),
                disabled_in_yaml: !integration.enabled,
                numbers: numbers.remove(&integration.id).unwrap_or_default(),
                sparkline: sparklines.remove(&integration.id),
            }
        })
        .collect();
    let edges: Vec<Edge> = flows
        .iter()
        .map(|f| Edge {
            id: f.id.clone(),
            source: f.source.clone(),
            target: f.target.clone(),
            state: state_name(f.state),
            note: format!(
                "{}/h{}",
                f.numbers.delivered_1h,
                if f.numbers.dead > 0 {
                    format!(" · {} dead", f.numbers.dead)
                } else {
                    String::new()
                }
            ),
            failing: f.numbers.dead > 0,
        })
        .collect();
    let chains: Vec<Chain> = links
        .into_iter()
        .map(|(from, event, to)| Chain { from, event, to })
        .collect();
    let overview = Overview {
        generation: generation.number,
        dead: flows.iter().map(|f| f.numbers.dead).sum(),
        retrying: flows.iter().map(|f| f.numbers.retrying).sum(),
        backlog: flows.iter().map(|f| f.numbers.backlog).sum(),
        graph: view::safe(flow::svg(&edges, &chains)),
        flows,
        reload: (**state.reload.load()).clone(),
        waiting_on,
    };
    view::page(&viewer, "overview.html", "overview", "Overview", overview)
}

fn state_name(state: FlowState) -> &'static str {
    match state {
        FlowState::Enabled => "enabled",
        FlowState::Paused => "paused",
        FlowState::Disabled => "disabled",
    }
}
