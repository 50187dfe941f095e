//! `busbar render`: the dry run. Runs every matching route of a generation
//! for one event through the real step loop, against a simulated database
//! that writes nothing and answers `find` with placeholders.

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::compile::ident::{Ident, TableName};
use crate::compile::{Generation, Step};
use crate::envelope::Envelope;
use crate::mapping::{EventInput, Executor, RouteOutcome, Row, StepTrace, run_route};

/// What one event would do.
#[derive(Debug, Serialize)]
pub struct RenderReport {
    pub event: Value,
    pub routes: Vec<RenderedRoute>,
}

/// What one route would do with the event.
#[derive(Debug, Serialize)]
pub struct RenderedRoute {
    pub integration: String,
    pub file: PathBuf,
    pub source: String,
    pub target: String,
    pub on: String,
    pub route: usize,
    pub enabled: bool,
    /// `applied`, `skipped` or `failed`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub steps: Vec<StepTrace>,
}

/// The simulated database: writes nothing, knows only what the steps say.
struct Simulation;

fn known(columns: &[(Ident, Value)]) -> Map<String, Value> {
    columns
        .iter()
        .map(|(c, v)| (c.as_str().to_owned(), v.clone()))
        .collect()
}

fn simulated(table: &TableName, columns: Map<String, Value>) -> Row {
    Row {
        columns,
        simulated: Some(table.to_string()),
    }
}

impl Executor for Simulation {
    type Error = Infallible;

    async fn find(
        &mut self,
        table: &TableName,
        filter: &[(Ident, Value)],
    ) -> Result<Option<Row>, Infallible> {
        Ok(Some(simulated(table, known(filter))))
    }

    async fn upsert(
        &mut self,
        table: &TableName,
        _key: &[Ident],
        values: &[(Ident, Value)],
    ) -> Result<Row, Infallible> {
        Ok(simulated(table, known(values)))
    }

    async fn update(
        &mut self,
        table: &TableName,
        filter: &[(Ident, Value)],
        set: &[(Ident, Value)],
    ) -> Result<Vec<Row>, Infallible> {
        let mut columns = known(filter);
        columns.extend(known(set));
        Ok(vec![simulated(table, columns)])
    }

    async fn delete(
        &mut self,
        _table: &TableName,
        _filter: &[(Ident, Value)],
    ) -> Result<u64, Infallible> {
        Ok(1)
    }

    async fn emit(&mut self, _step: &Step, _event: &str, _data: Value) -> Result<(), Infallible> {
        Ok(())
    }
}

/// Drives a future that never waits (the simulation answers at once).
fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("the simulated database never waits"),
    }
}

/// Renders every route of `generation` that handles the event (only those
/// of `integration`, when given).
pub fn render(
    generation: &Generation,
    envelope: &Envelope,
    integration: Option<&str>,
) -> RenderReport {
    let input = EventInput::new(envelope);
    let mut routes = Vec::new();
    for (owner, route) in generation.routes(&envelope.source, &envelope.event) {
        if integration.is_some_and(|id| id != owner.id) {
            continue;
        }
        let run = now(run_route(
            route,
            &generation.templates,
            &input,
            &mut Simulation,
        ));
        let (outcome, reason) = match run.outcome {
            Ok(RouteOutcome::Applied) => ("applied", None),
            Ok(RouteOutcome::Skipped { reason }) => ("skipped", Some(reason)),
            Err(error) => ("failed", Some(error.to_string())),
        };
        routes.push(RenderedRoute {
            integration: owner.id.clone(),
            file: owner.file.clone(),
            source: owner.source.clone(),
            target: owner.target.clone(),
            on: route.on.clone(),
            route: route.index,
            enabled: owner.enabled,
            outcome,
            reason,
            steps: run.trace,
        });
    }
    RenderReport {
        event: std::sync::Arc::unwrap_or_clone(input.json),
        routes,
    }
}
