//! `handover upgrade`, `handover status` and `handover stop`: one request on the control
//! socket each (the same against the supervisor and a library-mode server).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use handover::control_socket::{self, CanaryRequest, ClientError, Request, Response};

use crate::cli::{self, DecideArgs, StatusArgs, StopArgs, Target, UpgradeArgs};
use crate::paths;
use crate::status;

/// `handover upgrade`: exit 0 once the new version serves, 1 with the reason otherwise.
/// With `--canary`, the wait covers `--for`: exit 0 once promoted, 1 once rolled back.
pub fn upgrade(args: UpgradeArgs) -> ExitCode {
    let request = match args.canary {
        None => Request::Upgrade,
        Some(share_bp) => Request::Canary(CanaryRequest {
            share_bp,
            for_ms: args.for_.unwrap_or(cli::DEFAULT_CANARY_FOR).as_millis() as u64,
            max_error_rate_bp: args
                .max_error_rate
                .unwrap_or(cli::DEFAULT_MAX_ERROR_RATE_BP),
            min_requests: args.min_requests.unwrap_or(cli::DEFAULT_MIN_REQUESTS),
            sticky_ip: args.sticky == Some(cli::Sticky::Ip),
        }),
    };
    let result = socket(&args.target).and_then(|path| {
        control_socket::request_with_timeout(&path, request, args.timeout)
            .map_err(|e| explain(e, "upgrade failed"))
    });
    match result {
        Ok(Response::Upgraded(r)) => {
            let generation = r
                .generation
                .map(|g| format!("generation {g}, "))
                .unwrap_or_default();
            let previous = if r.previous_pids.is_empty() {
                String::new()
            } else {
                let pids: Vec<String> = r.previous_pids.iter().map(u32::to_string).collect();
                format!("; draining pid {}", pids.join(", "))
            };
            let verb = if r.canary.is_some() {
                "canary promoted"
            } else {
                "upgraded"
            };
            println!(
                "{verb}: {generation}pid {} serves new connections{previous} (took {})",
                r.pid,
                status::human_ms(r.duration_ms)
            );
            if let Some(c) = &r.canary {
                println!("decision: {} ({})", c.decision, c.reason);
                println!("{}", status::canary_figures(&c.old, &c.new));
            }
            ExitCode::SUCCESS
        }
        Ok(other) => fail(&format!("unexpected reply: {other:?}")),
        Err(e) => fail(&e),
    }
}

/// `handover promote` (true) or `handover abort`: exit 0 once decided, 1 if no canary runs.
pub fn decide(args: DecideArgs, promote: bool) -> ExitCode {
    let (request, what) = if promote {
        (Request::Promote, "promote failed")
    } else {
        (Request::Abort, "abort failed")
    };
    let result = socket(&args.target).and_then(|path| {
        control_socket::request_with_timeout(&path, request, Some(Duration::from_secs(10)))
            .map_err(|e| explain(e, what))
    });
    match result {
        Ok(Response::Decided(d)) => {
            println!(
                "{}: generation {} (pid {}): {}",
                d.decision.replace('_', " "),
                d.generation,
                d.pid,
                d.reason
            );
            ExitCode::SUCCESS
        }
        Ok(other) => fail(&format!("unexpected reply: {other:?}")),
        Err(e) => fail(&e),
    }
}

/// `handover status`.
pub fn status(args: StatusArgs) -> ExitCode {
    let result = socket(&args.target).and_then(|path| {
        control_socket::request_with_timeout(&path, Request::Status, Some(Duration::from_secs(10)))
            .map_err(|e| explain(e, "status failed"))
    });
    match result {
        Ok(Response::Status(s)) => {
            if args.json {
                match serde_json::to_string_pretty(&s) {
                    Ok(json) => println!("{json}"),
                    Err(e) => return fail(&e.to_string()),
                }
            } else {
                print!("{}", status::table(&s));
            }
            ExitCode::SUCCESS
        }
        Ok(other) => fail(&format!("unexpected reply: {other:?}")),
        Err(e) => fail(&e),
    }
}

/// `handover stop`: waits (unless `--no-wait`) until nothing answers on the socket any more.
pub fn stop(args: StopArgs) -> ExitCode {
    let path = match socket(&args.target) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    match control_socket::request_with_timeout(&path, Request::Stop, Some(Duration::from_secs(10)))
    {
        Ok(Response::Stopping(r)) => println!("stopping pid {}", r.pid),
        Ok(other) => return fail(&format!("unexpected reply: {other:?}")),
        Err(e) => return fail(&explain(e, "stop failed")),
    }
    if args.no_wait {
        return ExitCode::SUCCESS;
    }
    let deadline = args.timeout.map(|t| Instant::now() + t);
    loop {
        if std::os::unix::net::UnixStream::connect(&path).is_err() {
            println!("stopped");
            return ExitCode::SUCCESS;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return fail(&format!(
                "still stopping after {:?} (workers drain up to the server's --drain-timeout)",
                args.timeout.unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn socket(target: &Target) -> Result<PathBuf, String> {
    if target.control.is_none() && target.name.is_none() && target.pid_file.is_none() {
        return paths::find_single_socket();
    }
    if let Some(n) = &target.name {
        paths::validate_name(n)?;
    }
    Ok(paths::control_path(
        target.control.as_deref(),
        target.pid_file.as_deref(),
        target.name.as_deref().unwrap_or("handover"),
    ))
}

fn explain(e: ClientError, what: &str) -> String {
    match e {
        ClientError::Failed(reason) => format!("{what}: {reason}"),
        ClientError::Connect { .. } => {
            format!("{e} (is the server running, with this --name, --pid-file or --control?)")
        }
        other => other.to_string(),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("handover: {message}");
    ExitCode::from(1)
}
