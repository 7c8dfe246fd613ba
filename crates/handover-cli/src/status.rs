//! `handover status` as a table for people (`--json` prints the schema'd structure as is).

use std::fmt::Write;

use handover::control_socket::{
    GenerationCounters, ResumeRecord, ServerKind, Status, UpgradeRecord,
};
use serde::Serialize;

/// The table.
pub fn table(s: &Status) -> String {
    let mut out = String::new();
    let kind = match s.kind {
        ServerKind::Supervisor => "supervisor",
        ServerKind::Library => "server",
        _ => "process",
    };
    let _ = writeln!(
        out,
        "{}: {}, generation {}, {kind} pid {}, up {}, {} restart{}",
        s.name.as_deref().unwrap_or("handover"),
        word(&s.state),
        s.generation,
        s.pid,
        human_ms(s.uptime_ms),
        s.restarts,
        if s.restarts == 1 { "" } else { "s" }
    );
    if !s.listeners.is_empty() {
        let _ = writeln!(out, "listening on {}", s.listeners.join(", "));
    }
    let _ = writeln!(out, "{:<6} {:<8} {:<9} UPTIME", "GEN", "PID", "STATE");
    for w in &s.workers {
        let _ = writeln!(
            out,
            "{:<6} {:<8} {:<9} {}",
            w.generation,
            w.pid,
            word(&w.state),
            human_ms(w.uptime_ms)
        );
    }
    if let Some(c) = &s.canary {
        let r = &c.request;
        let _ =
            writeln!(
            out,
            "canary: generation {} gets {}{} for {}, {} so far; rule: after {} requests, error \
             rate at most the old generation's + {}",
            c.new.generation,
            crate::proxy::percent_bp(r.share_bp),
            if r.sticky_ip { " of client addresses" } else { "" },
            human_ms(r.for_ms),
            human_ms(c.elapsed_ms),
            r.min_requests,
            crate::proxy::percent_bp(r.max_error_rate_bp)
        );
        let _ = writeln!(out, "{}", canary_figures(&c.old, &c.new));
    }
    let _ = writeln!(
        out,
        "last upgrade: {}",
        last_upgrade(s.last_upgrade.as_ref())
    );
    if let Some(c) = s.last_upgrade.as_ref().and_then(|u| u.canary.as_ref()) {
        let _ = writeln!(
            out,
            "  canary {}: {}",
            c.decision.replace('_', " "),
            c.reason
        );
    }
    if let Some(r) = &s.resumed {
        let _ = writeln!(out, "resumed: {}", resumed(r));
    }
    out
}

/// Both generations' counters of a canary, one line each.
pub fn canary_figures(old: &GenerationCounters, new: &GenerationCounters) -> String {
    let line = |who: &str, c: &GenerationCounters| {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v}ms"));
        let [c1, c2, c3, c4, c5] = c.status_classes;
        format!(
            "  {who} generation {}: {} requests, {} errors ({:.2}%), 1xx/2xx/3xx/4xx/5xx \
             {c1}/{c2}/{c3}/{c4}/{c5}, p50 {}, p99 {}",
            c.generation,
            c.requests,
            c.errors,
            c.error_rate_percent,
            ms(c.p50_ms),
            ms(c.p99_ms)
        )
    };
    format!("{}\n{}", line("canary", new), line("old   ", old))
}

/// A library-mode process that took the listeners back from a successor that crashed.
fn resumed(r: &ResumeRecord) -> String {
    let now = handover::control_socket::unix_ms(std::time::SystemTime::now());
    format!(
        "successor pid {} (generation {}) {}, {} ago; this process serves again",
        r.successor_pid,
        r.successor_generation,
        r.successor_ended,
        human_ms(now.saturating_sub(r.at_unix_ms))
    )
}

fn last_upgrade(r: Option<&UpgradeRecord>) -> String {
    let Some(r) = r else {
        return "none".into();
    };
    let now = handover::control_socket::unix_ms(std::time::SystemTime::now());
    let ago = human_ms(now.saturating_sub(r.started_unix_ms));
    let new = match (r.generation, r.pid) {
        (Some(g), Some(p)) => format!(" to generation {g} (pid {p})"),
        _ => String::new(),
    };
    let took = human_ms(r.duration_ms);
    if r.ok {
        format!("ok{new}, by {}, {ago} ago, took {took}", r.trigger)
    } else {
        format!(
            "FAILED{new}, by {}, {ago} ago, after {took}: {}",
            r.trigger,
            r.error.as_deref().unwrap_or("no reason given")
        )
    }
}

/// The serde name of an enum value (`"ready"`), so the table and the JSON agree.
fn word(v: &impl Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".into(),
    }
}

/// `850ms`, `12.3s`, `5m07s`, `2h03m`.
pub fn human_ms(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use handover::control_socket::{ServerState, WorkerState, WorkerStatus};

    #[test]
    fn durations_read_well() {
        assert_eq!(human_ms(850), "850ms");
        assert_eq!(human_ms(12_345), "12.3s");
        assert_eq!(human_ms(307_000), "5m07s");
        assert_eq!(human_ms(7_380_000), "2h03m");
    }

    #[test]
    fn table_shows_workers_and_the_last_upgrade() {
        let s = Status {
            schema_version: 2,
            kind: ServerKind::Supervisor,
            name: Some("web".into()),
            pid: 10,
            state: ServerState::Running,
            generation: 2,
            uptime_ms: 5000,
            restarts: 1,
            listeners: vec!["tcp://127.0.0.1:8080".into()],
            workers: vec![WorkerStatus {
                generation: 2,
                pid: 12,
                state: WorkerState::Ready,
                uptime_ms: 1000,
            }],
            last_upgrade: Some(UpgradeRecord {
                ok: false,
                trigger: "SIGHUP".into(),
                generation: Some(3),
                pid: Some(13),
                error: Some("it exited".into()),
                started_unix_ms: 0,
                duration_ms: 20,
                canary: None,
            }),
            resumed: None,
            canary: None,
        };
        let t = table(&s);
        assert!(
            t.starts_with("web: running, generation 2, supervisor pid 10"),
            "{t}"
        );
        assert!(t.contains("2      12       ready"), "{t}");
        assert!(
            t.contains("FAILED to generation 3 (pid 13), by SIGHUP"),
            "{t}"
        );
        assert!(t.contains(": it exited"), "{t}");
        assert!(!t.contains("resumed"), "{t}");
    }

    #[test]
    fn table_says_when_a_library_server_took_over_again() {
        let s = Status {
            schema_version: 2,
            kind: ServerKind::Library,
            name: None,
            pid: 10,
            state: ServerState::Running,
            generation: 1,
            uptime_ms: 5000,
            restarts: 0,
            listeners: vec![],
            workers: vec![],
            last_upgrade: None,
            resumed: Some(ResumeRecord {
                successor_pid: 11,
                successor_generation: 2,
                successor_ended: "was killed by signal SIGSEGV".into(),
                at_unix_ms: 0,
            }),
            canary: None,
        };
        let t = table(&s);
        assert!(
            t.contains("resumed: successor pid 11 (generation 2) was killed by signal SIGSEGV"),
            "{t}"
        );
    }
}
