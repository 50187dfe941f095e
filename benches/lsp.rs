//! Language server benchmark: how long from an edit of an open file to its
//! diagnostics being published, on a directory of 100 integrations (the
//! generated directory of `compile_and_map`, with its contracts).
//!
//! The server runs in this process on an in-memory connection
//! (`lsp_server::Connection::memory`, the same `busbar::lsp::serve` that
//! `busbar lsp` runs on stdio), so what is timed is the server: applying
//! the change, reading the directory with the buffer laid over it,
//! compiling, converting and publishing. Edits alternate between breaking
//! a JSONPath and fixing it, and are spaced so none is coalesced.
//!
//! ```text
//! flock /tmp/busbar-bench.lock cargo bench --bench lsp -- [--files N] [--edits N]
//! ```

#[path = "support/generate.rs"]
#[allow(dead_code)]
mod generate;

use std::time::{Duration, Instant};

use lsp_server::{Connection, Message, Notification, Request, RequestId};
use serde_json::{Value, json};

use busbar::lsp::workspace::uri_of;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn argument(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

/// The CPU time this process has used (user + system), from
/// `/proc/self/stat` (clock ticks of 10 ms): the server's cost per edit,
/// which the machine's other load does not inflate as it does wall time.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Waits for the diagnostics of `uri` at `version`; returns how many
/// diagnostics they hold.
fn wait_for(client: &Connection, uri: &str, version: i32) -> usize {
    loop {
        let message = client
            .receiver
            .recv_timeout(Duration::from_secs(30))
            .expect("diagnostics within 30 s");
        if let Message::Notification(n) = message
            && n.method == "textDocument/publishDiagnostics"
            && n.params["uri"] == uri
            && n.params["version"] == version
        {
            return n.params["diagnostics"].as_array().map_or(0, Vec::len);
        }
    }
}

fn main() {
    let files = argument("--files", 100);
    let edits = argument("--edits", 60);
    let root = tempfile::tempdir().expect("temp dir");
    let generated = generate::generate(root.path(), files).expect("generate");
    let (file, _) = generate::integration_yaml(0);
    let path = generated.integrations_dir.join(&file);
    let text = std::fs::read_to_string(&path).expect("the first file");
    let uri = uri_of(&path).as_str().to_owned();
    // The first `$.data.` path of the file, broken by one letter and fixed.
    let at = text.find("$.data.").expect("a JSONPath") + "$.data.".len();
    let broken = format!("{}zz{}", &text[..at], &text[at..]);

    let (server, client) = Connection::memory();
    let thread =
        std::thread::spawn(move || busbar::lsp::serve(&server, &busbar::lsp::Options::default()));
    let send = |message: Message| client.sender.send(message).expect("the server listens");
    send(Message::Request(Request::new(
        RequestId::from(1),
        "initialize".into(),
        json!({ "processId": null, "rootUri": null, "capabilities": {} }),
    )));
    loop {
        if let Message::Response(_) = client.receiver.recv().expect("initialize answered") {
            break;
        }
    }
    send(Message::Notification(Notification::new(
        "initialized".into(),
        json!({}),
    )));
    send(Message::Notification(Notification::new(
        "textDocument/didOpen".into(),
        json!({ "textDocument": { "uri": uri, "languageId": "yaml", "version": 1, "text": text } }),
    )));
    assert_eq!(wait_for(&client, &uri, 1), 0, "the generated file is clean");

    let mut times = Vec::with_capacity(edits);
    let cpu_before = cpu_time();
    for version in 2..(edits as i32 + 2) {
        let (new_text, problems) = if version % 2 == 0 {
            (&broken, 1)
        } else {
            (&text, 0)
        };
        let started = Instant::now();
        send(Message::Notification(Notification::new(
            "textDocument/didChange".into(),
            json!({ "textDocument": { "uri": uri, "version": version },
                    "contentChanges": [{ "text": new_text }] }),
        )));
        let found = wait_for(&client, &uri, version);
        times.push(started.elapsed());
        assert_eq!(found, problems, "version {version}");
        // Let the server idle, so that no edit is coalesced with the next.
        std::thread::sleep(Duration::from_millis(30));
    }
    // The idle gaps cost no CPU: what was used is the edits' cost.
    let cpu = cpu_time()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    send(Message::Request(Request::new(
        RequestId::from(2),
        "shutdown".into(),
        Value::Null,
    )));
    send(Message::Notification(Notification::new(
        "exit".into(),
        Value::Null,
    )));
    drop(client);
    thread.join().expect("the server ends").expect("cleanly");

    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "lsp diagnostics after an edit: {} integrations, {} contracts, {} edits",
        generated.integrations,
        generated.contracts,
        times.len()
    );
    println!(
        "  p50 {:.1} ms   p95 {:.1} ms   max {:.1} ms   mean {:.1} ms",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.95).as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3
    );
    if let Some(cpu) = cpu {
        println!(
            "  CPU time per edit (user + system, whole process): {:.1} ms",
            cpu.as_secs_f64() * 1e3 / times.len() as f64
        );
    }
}
