//! Answers the control socket for a library-mode server: `upgrade`, `status` and `stop` map
//! onto [`Running`]. Only the serving generation answers: serving stops when the drain starts,
//! and starts again if this process takes the listeners back from a successor that crashed.

use crate::control_socket::{
    unix_ms, ControlServer, Request, Response, ResumeRecord, ServerKind, ServerState, Status,
    StopReport, UpgradeRecord, UpgradeReport, WorkerState, WorkerStatus, STATUS_SCHEMA_VERSION,
};
use crate::drain::Phase;
use crate::running::Running;

pub(crate) fn start(server: ControlServer, running: Running) {
    tokio::spawn(async move {
        let mut server = server;
        loop {
            // Kept to answer again after a resume: the socket itself stays open (and is handed
            // to the next generation) all along.
            let spare = server.try_clone_fd();
            let task = tokio::spawn(serve(server, running.clone()));
            running.draining().await;
            // Replies already under way still go out: each connection has its own task.
            task.abort();
            running.shared().serving().await;
            server = match spare.and_then(|fd| ControlServer::from_listener(fd.into())) {
                Ok(s) => s.remove_on_drop(false),
                Err(e) => {
                    tracing::error!("cannot answer the control socket again: {e}");
                    return;
                }
            };
        }
    });
}

async fn serve(server: ControlServer, running: Running) {
    // A reply under way keeps the process alive through its drain.
    let shared = std::sync::Arc::clone(running.shared());
    let server = server.with_connection_guard(move || shared.track());
    let served = server
        .serve(move |req: Request| {
            let running = running.clone();
            async move { answer(&running, req).await }
        })
        .await;
    if let Err(e) = served {
        tracing::error!("control socket: {e}");
    }
}

async fn answer(running: &Running, req: Request) -> Result<Response, String> {
    let me = std::process::id();
    match req {
        Request::Upgrade => {
            let t0 = std::time::Instant::now();
            let u = running
                .upgrade_by("control socket")
                .await
                .map_err(|e| format!("{e}; pid {me} keeps serving"))?;
            Ok(Response::Upgraded(UpgradeReport {
                pid: u.new_pid,
                generation: Some(u.generation),
                previous_pids: vec![me],
                duration_ms: t0.elapsed().as_millis() as u64,
                canary: None,
            }))
        }
        Request::Stop => {
            running.stop();
            Ok(Response::Stopping(StopReport { pid: me }))
        }
        Request::Status => Ok(Response::Status(status(running))),
        // The kernel picks which process accepts a shared socket: there is no proxy to split
        // the traffic by weight, and so nothing to promote or abort.
        Request::Canary(_) | Request::Promote | Request::Abort => Err(format!(
            "a canary (grey release) needs `handover run --proxy`: this server (pid {me}) uses \
             the handover library, whose generations share the listening socket and the kernel \
             picks which one accepts, so traffic cannot be split by weight; upgrade with \
             `handover upgrade`"
        )),
    }
}

fn status(running: &Running) -> Status {
    let finish = running.finish();
    let shared = running.shared();
    let phase = *shared.phase.borrow();
    let (state, worker_state) = match phase {
        Phase::Starting => (ServerState::Starting, WorkerState::Starting),
        // In lame duck: still accepting, but stopping (health checks fail).
        Phase::Serving | Phase::Paused if shared.stop_requested() => {
            (ServerState::LameDuck, WorkerState::Ready)
        }
        Phase::Serving => (ServerState::Running, WorkerState::Ready),
        Phase::Paused => (ServerState::Upgrading, WorkerState::Ready),
        Phase::Draining { .. } => (ServerState::Stopping, WorkerState::Draining),
    };
    let uptime_ms = finish.started.elapsed().as_millis() as u64;
    let last_upgrade = finish
        .last_upgrade
        .lock()
        .expect("not poisoned")
        .as_ref()
        .map(|u| UpgradeRecord {
            ok: u.result.is_ok(),
            trigger: u.trigger.clone(),
            generation: u.generation,
            pid: u.result.as_ref().ok().map(|r| r.new_pid),
            error: u.result.as_ref().err().map(|e| e.to_string()),
            started_unix_ms: unix_ms(u.started),
            duration_ms: u.duration.as_millis() as u64,
            canary: None,
        });
    Status {
        schema_version: STATUS_SCHEMA_VERSION,
        kind: ServerKind::Library,
        name: None,
        pid: std::process::id(),
        state,
        generation: finish.generation,
        uptime_ms,
        restarts: 0,
        listeners: shared
            .listeners
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|l| l.addr.to_string())
            .collect(),
        workers: vec![WorkerStatus {
            generation: finish.generation,
            pid: std::process::id(),
            state: worker_state,
            uptime_ms,
        }],
        last_upgrade,
        resumed: finish
            .resumed
            .lock()
            .expect("not poisoned")
            .as_ref()
            .map(|r| ResumeRecord {
                successor_pid: r.successor_pid,
                successor_generation: r.successor_generation,
                successor_ended: r.successor_ended.to_string(),
                at_unix_ms: unix_ms(r.at),
            }),
        canary: None,
    }
}
