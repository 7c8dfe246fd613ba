//! The deploy guides' snippets (`docs/deploy/`) checked against the binaries: every
//! `handover` and `hello` flag a snippet uses exists (`--help`), the command of each snippet,
//! started on a free loopback port, answers its probe and stops gracefully on the snippet's
//! stop signal within the snippet's grace period, that grace period covers the lame duck and
//! the drain timeout of the same command, and `systemd-analyze verify` passes on the units.
//!
//! Paths in the snippets are the installed ones; the tests put the built binaries in their
//! place (`/usr/local/bin/handover`, `/usr/local/bin/hello`), a free `127.0.0.1` port in place
//! of `0.0.0.0:8080`, and a temporary directory in place of `/run/`.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use handover_testkit::binaries::binaries;
use handover_testkit::cli_kit::*;
use handover_testkit::reap::wait_exit;
use handover_testkit::sys::free_port;
use yaml_rust2::{Yaml, YamlLoader};

const INSTALLED_HANDOVER: &str = "/usr/local/bin/handover";
const INSTALLED_HELLO: &str = "/usr/local/bin/hello";
/// The address every snippet serves on.
const SNIPPET_LISTEN: &str = "0.0.0.0:8080";
const SNIPPET_PORT: i64 = 8080;

fn guide(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/deploy")
        .join(path);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

// ---------------------------------------------------------------------------------------------
// The binaries
// ---------------------------------------------------------------------------------------------

/// The `hello` example (the kit's v1 build, shared with the library's tests), as the snippets'
/// text needs it.
fn hello() -> &'static str {
    binaries().v1.to_str().expect("hello's path is UTF-8")
}

/// The `handover` binary under test, as the snippets' text needs it.
fn handover() -> &'static str {
    handover_exe().to_str().expect("handover's path is UTF-8")
}

// ---------------------------------------------------------------------------------------------
// Command lines
// ---------------------------------------------------------------------------------------------

/// Every `--flag` of `argv` must be in the `--help` of the program it is given to; the
/// worker's command after `handover run ... --` is checked against its own program.
fn check_flags(snippet: &str, argv: &[String]) {
    let program = argv[0].as_str();
    let (help_args, flags, rest): (Vec<&str>, &[String], &[String]) = match program {
        INSTALLED_HANDOVER => {
            let sub = argv.get(1).map(String::as_str).unwrap_or_default();
            let end = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
            (
                vec![sub, "--help"],
                &argv[2..end],
                &argv[(end + 1).min(argv.len())..],
            )
        }
        INSTALLED_HELLO => (vec!["--help"], &argv[1..], &[]),
        other => panic!("{snippet}: unknown program {other:?}"),
    };
    let binary = if program == INSTALLED_HANDOVER {
        handover()
    } else {
        hello()
    };
    let out = Command::new(binary).args(&help_args).output().unwrap();
    assert!(
        out.status.success(),
        "{snippet}: {program} {help_args:?} failed"
    );
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    for arg in flags.iter().filter(|a| a.starts_with("--")) {
        let flag = arg.split('=').next().unwrap();
        let known = help
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .any(|w| w == flag);
        assert!(
            known,
            "{snippet}: `{program} {}` has no flag {flag}",
            help_args[..help_args.len() - 1].join(" ")
        );
    }
    if !rest.is_empty() {
        check_flags(snippet, rest);
    }
}

fn flag_value<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
    let end = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
    let args = &argv[..end];
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn duration_flag(argv: &[String], flag: &str, default: Duration) -> Duration {
    flag_value(argv, flag)
        .map(|v| handover::parse_duration(v).unwrap_or_else(|e| panic!("{flag} {v}: {e}")))
        .unwrap_or(default)
}

/// How long a stop of this command may take: lame duck, then the drain timeout (the
/// supervisor's or the server's own; the defaults where not given). A worker's own drain
/// must fit in the supervisor's, which kills it past its own.
fn stop_budget(snippet: &str, argv: &[String]) -> Duration {
    let own = duration_flag(argv, "--lame-duck", Duration::ZERO)
        + duration_flag(argv, "--drain-timeout", Duration::from_secs(30));
    if let Some(end) = argv.iter().position(|a| a == "--") {
        let worker = &argv[end + 1..];
        let worker_stop = duration_flag(worker, "--lame-duck", Duration::ZERO)
            + duration_flag(worker, "--drain-timeout", Duration::from_secs(30));
        let supervisor_drain = duration_flag(argv, "--drain-timeout", Duration::from_secs(30));
        assert!(
            worker_stop <= supervisor_drain,
            "{snippet}: the worker's lame duck + drain timeout ({worker_stop:?}) exceed the \
             supervisor's --drain-timeout {supervisor_drain:?}, which kills it first"
        );
    }
    own
}

/// The lame duck of the command's outer program (the supervisor's, for `handover run`).
fn lame_duck(argv: &[String]) -> Duration {
    duration_flag(argv, "--lame-duck", Duration::ZERO)
}

fn check_grace(snippet: &str, argv: &[String], grace: Duration) {
    let budget = stop_budget(snippet, argv);
    assert!(
        grace >= budget,
        "{snippet}: a grace period of {grace:?} is shorter than lame duck + drain timeout \
         ({budget:?})"
    );
}

fn check_stop_signal(snippet: &str, signal: &str) {
    assert!(
        matches!(signal, "SIGTERM" | "SIGINT"),
        "{snippet}: stop signal {signal} is not a graceful stop for handover and hello"
    );
}

/// The snippet's ports (`0.0.0.0:PORT`) and the free loopback ports that stand for them here.
#[derive(Default)]
struct Ports(HashMap<u16, u16>);

impl Ports {
    fn host(&mut self, snippet_port: u16) -> u16 {
        *self.0.entry(snippet_port).or_insert_with(free_port)
    }

    /// `arg` with every `0.0.0.0:PORT` replaced by `127.0.0.1:HOSTPORT`.
    fn map(&mut self, arg: &str) -> String {
        let mut out = String::new();
        let mut rest = arg;
        while let Some(i) = rest.find("0.0.0.0:") {
            out.push_str(&rest[..i]);
            let after = &rest[i + "0.0.0.0:".len()..];
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            let port: u16 = after[..digits].parse().expect("a port after 0.0.0.0:");
            out.push_str(&format!("127.0.0.1:{}", self.host(port)));
            rest = &after[digits..];
        }
        out.push_str(rest);
        out
    }
}

/// The snippet's command as run here.
fn on_this_host(ctx: &Ctx, argv: &[String], ports: &mut Ports) -> Vec<String> {
    argv.iter()
        .map(|a| {
            if a == INSTALLED_HANDOVER {
                handover().to_string()
            } else if a == INSTALLED_HELLO {
                hello().to_string()
            } else if let Some(rest) = a.strip_prefix("/run/") {
                let p = ctx.path("run").join(rest);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                p.to_str().unwrap().to_string()
            } else {
                ports.map(a)
            }
        })
        .collect()
}

/// Runs `wrapper... argv` (already on this host), waits until `GET path` on `port` answers
/// 200, then sends `stop_signal` and requires a clean exit (status 0) within `grace`.
#[allow(clippy::too_many_arguments)]
fn serve_probe_stop(
    ctx: &Ctx,
    snippet: &str,
    wrapper: &[String],
    argv: &[String],
    (port, probe_port): (u16, u16),
    path: &str,
    stop_signal: i32,
    (grace, lame_duck): (Duration, Duration),
) {
    let log_path = ctx.path("guide.log");
    let log = fs::File::create(&log_path).unwrap();
    let full: Vec<&String> = wrapper.iter().chain(argv).collect();
    let child = Command::new(full[0])
        .args(&full[1..])
        .current_dir(ctx.dir.path())
        .env("XDG_RUNTIME_DIR", ctx.dir.path())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    std::mem::forget(child); // reaped below, or killed by the context
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let probe: std::net::SocketAddr = format!("127.0.0.1:{probe_port}").parse().unwrap();
    let mut last = None;
    let answered = poll_until(LONG, || match get(probe, path) {
        Ok(_) => true,
        Err(e) => {
            last = Some(e);
            false
        }
    });
    let shown = || fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        answered,
        "{snippet}: GET {path} on port {probe_port} never answered 200 (last: {last:?}); log:\n{}",
        shown()
    );
    assert!(get(addr, "/").is_ok(), "{snippet}: the served port answers");
    let stopping = Instant::now();
    signal(pid, stop_signal);
    if !lame_duck.is_zero() {
        // The lame duck: the probe fails at once, while the server still serves.
        let failing = poll_until(
            SHORT,
            || matches!(get(probe, path), Err(Failure::Other(e)) if e.contains(" 503 ")),
        );
        assert!(
            failing,
            "{snippet}: {path} did not answer 503 in the lame duck; log:\n{}",
            shown()
        );
        let served = get(addr, "/");
        assert!(
            served.is_ok() || stopping.elapsed() >= lame_duck,
            "{snippet}: a request in the lame duck failed: {served:?}; log:\n{}",
            shown()
        );
        eprintln!(
            "{snippet}: {path} answered 503 and / was served, {:?} into the lame duck",
            stopping.elapsed()
        );
    }
    let status = wait_exit(pid, grace + SHORT)
        .ok()
        .flatten()
        .map(|e| e.0)
        .unwrap_or_else(|| {
            panic!(
                "{snippet}: still running after the grace; log:\n{}",
                shown()
            )
        });
    let took = stopping.elapsed();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{snippet}: exit status {status:#x} after the stop signal; log:\n{}",
        shown()
    );
    assert!(
        took <= grace,
        "{snippet}: the stop took {took:?} > {grace:?}"
    );
    assert!(
        took >= lame_duck,
        "{snippet}: stopped after {took:?}, before its lame duck of {lame_duck:?} was over"
    );
    eprintln!("{snippet}: GET {path} answered; stopped in {took:?} (grace {grace:?})");
}

fn signal_number(name: &str) -> i32 {
    match name {
        "SIGTERM" => libc::SIGTERM,
        "SIGINT" => libc::SIGINT,
        other => panic!("unexpected signal {other}"),
    }
}

fn strings(y: &Yaml, what: &str) -> Vec<String> {
    y.as_vec()
        .unwrap_or_else(|| panic!("{what} is not a list"))
        .iter()
        .map(|v| match v {
            Yaml::String(s) => s.clone(),
            other => panic!("{what}: {other:?} is not a string"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------------------------

fn check_deployment(file: &str) {
    let ctx = Ctx::new();
    let text = guide(file);
    let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    assert_eq!(docs.len(), 1, "{file}: one document");
    let d = &docs[0];
    assert_eq!(d["kind"].as_str(), Some("Deployment"), "{file}");
    let pod = &d["spec"]["template"]["spec"];
    let grace = pod["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap_or_else(|| panic!("{file}: no terminationGracePeriodSeconds"));
    let containers = pod["containers"].as_vec().expect("containers");
    assert_eq!(containers.len(), 1, "{file}: one container");
    let c = &containers[0];
    assert!(
        c["lifecycle"]["preStop"].is_badvalue(),
        "{file}: no preStop hook is needed"
    );
    let mut argv = strings(&c["command"], "command");
    argv.extend(strings(&c["args"], "args"));
    check_flags(file, &argv);
    let grace = Duration::from_secs(grace as u64);
    check_grace(file, &argv, grace);
    // No preStop sleep: the lame duck must outlast the probe's verdict (Kubernetes' defaults:
    // every 10 s, 3 failures).
    let rp = &c["readinessProbe"];
    let verdict = Duration::from_secs(
        (rp["periodSeconds"].as_i64().unwrap_or(10) * rp["failureThreshold"].as_i64().unwrap_or(3))
            as u64,
    );
    assert!(
        lame_duck(&argv) > verdict,
        "{file}: --lame-duck {:?} must be longer than the readiness probe's periodSeconds × \
         failureThreshold ({verdict:?}), or the endpoint is still there when accepting stops",
        lame_duck(&argv)
    );
    let probe = &c["readinessProbe"]["httpGet"];
    let path = probe["path"].as_str().expect("readinessProbe.httpGet.path");
    let port = match &probe["port"] {
        Yaml::Integer(p) => *p,
        Yaml::String(name) => c["ports"]
            .as_vec()
            .expect("ports")
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_i64())
            .unwrap_or_else(|| panic!("{file}: no port named {name}")),
        other => panic!("{file}: probe port {other:?}"),
    };
    let mut ports = Ports::default();
    let argv_here = on_this_host(&ctx, &argv, &mut ports);
    assert!(
        ports.0.contains_key(&(port as u16)),
        "{file}: the probe's port {port} is not one the command listens on"
    );
    let serve = (ports.host(SNIPPET_PORT as u16), ports.host(port as u16));
    serve_probe_stop(
        &ctx,
        file,
        &[],
        &argv_here,
        serve,
        path,
        libc::SIGTERM, // what the kubelet sends
        (grace, lame_duck(&argv)),
    );
}

#[test]
fn kubernetes_library_deployment() {
    check_deployment("kubernetes/deployment.yaml");
}

#[test]
fn kubernetes_supervisor_deployment() {
    check_deployment("kubernetes/deployment-supervisor.yaml");
}

// ---------------------------------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------------------------------

/// `(section, key) -> values` of a unit file, continuation lines joined.
fn unit(file: &str) -> HashMap<(String, String), Vec<String>> {
    let text = guide(file).replace("\\\n", " ");
    let mut section = String::new();
    let mut out: HashMap<(String, String), Vec<String>> = HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{file}: not key=value: {line}"));
        out.entry((section.clone(), k.trim().to_string()))
            .or_default()
            .push(v.trim().to_string());
    }
    out
}

fn one<'a>(
    u: &'a HashMap<(String, String), Vec<String>>,
    file: &str,
    sec: &str,
    key: &str,
) -> &'a str {
    match u
        .get(&(sec.to_string(), key.to_string()))
        .map(Vec::as_slice)
    {
        Some([v]) => v,
        other => panic!("{file}: [{sec}] {key}= should be set once: {other:?}"),
    }
}

fn exec_start(u: &HashMap<(String, String), Vec<String>>, file: &str) -> Vec<String> {
    let line = one(u, file, "Service", "ExecStart");
    assert!(
        !line.contains('"') && !line.contains('\''),
        "{file}: ExecStart is read without quoting rules; keep it unquoted"
    );
    line.split_whitespace().map(str::to_string).collect()
}

/// Checks a socket + service pair, then runs the service's command under
/// `systemd-socket-activate` with the socket's address mapped to a free port: the first
/// probe is what activates it, as with systemd.
fn check_socket_and_service(socket_file: &str, service_file: &str) {
    let ctx = Ctx::new();
    let socket = unit(socket_file);
    let service = unit(service_file);
    let listen = one(&socket, socket_file, "Socket", "ListenStream");
    assert_eq!(listen, SNIPPET_LISTEN, "{socket_file}");
    let argv = exec_start(&service, service_file);
    check_flags(service_file, &argv);
    assert!(
        argv.iter().any(|a| a.contains(SNIPPET_LISTEN)),
        "{service_file}: --listen {SNIPPET_LISTEN}, the socket's address"
    );
    let ty = one(&service, service_file, "Service", "Type");
    assert!(
        matches!(ty, "notify" | "notify-reload"),
        "{service_file}: Type={ty}"
    );
    assert_eq!(one(&service, service_file, "Service", "KillMode"), "mixed");
    let grace = handover::parse_duration(one(&service, service_file, "Service", "TimeoutStopSec"))
        .expect("TimeoutStopSec in handover's duration syntax");
    check_grace(service_file, &argv, grace);
    if ty == "notify-reload" {
        assert!(
            !service.contains_key(&("Service".into(), "ExecReload".into())),
            "{service_file}: notify-reload reloads by SIGHUP"
        );
    }
    let mut ports = Ports::default();
    let argv_here = on_this_host(&ctx, &argv, &mut ports);
    let port = ports.host(SNIPPET_PORT as u16);
    let mut wrapper: Vec<String> = vec![
        "systemd-socket-activate".into(),
        "-l".into(),
        format!("127.0.0.1:{port}"),
    ];
    if let Some(name) = socket
        .get(&("Socket".to_string(), "FileDescriptorName".to_string()))
        .and_then(|v| v.first())
    {
        wrapper.push(format!("--fdname={name}"));
    }
    serve_probe_stop(
        &ctx,
        service_file,
        &wrapper,
        &argv_here,
        (port, port),
        "/",
        libc::SIGTERM, // KillSignal= is not set: systemd's default
        (grace, lame_duck(&argv)),
    );
}

#[test]
fn systemd_library_units() {
    check_socket_and_service("systemd/hello.socket", "systemd/hello.service");
}

#[test]
fn systemd_supervisor_units() {
    check_socket_and_service("systemd/app.socket", "systemd/app.service");
    check_socket_and_service("systemd/app.socket", "systemd/app-notify-reload.service");
}

fn systemd_version() -> u32 {
    let out = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .expect("systemd-analyze is needed (apt-get install systemd)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the version of systemd: {text}"))
}

/// `systemd-analyze verify` needs no running systemd (CI's PID 1 is not systemd), only the
/// programs named in `Exec*=`: the units are verified with the built binaries in place of
/// the installed ones, each service with its socket.
#[test]
fn systemd_analyze_verify_passes_on_the_units() {
    let ctx = Ctx::new();
    let version = systemd_version();
    for (socket, service, installed_as) in [
        ("hello.socket", "hello.service", "hello.service"),
        ("app.socket", "app.service", "app.service"),
        ("app.socket", "app-notify-reload.service", "app.service"),
    ] {
        let dir = ctx.path(&format!("units-{service}"));
        fs::create_dir_all(&dir).unwrap();
        let place = |name: &str, as_name: &str| {
            let text = guide(&format!("systemd/{name}"))
                .replace(INSTALLED_HANDOVER, handover())
                .replace(INSTALLED_HELLO, hello());
            let p = dir.join(as_name);
            fs::write(&p, text).unwrap();
            p
        };
        let files = [place(socket, socket), place(service, installed_as)];
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .args(&files)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Type=notify-reload is systemd 253's; 252 (Debian 12) warns that it does not know it
        // and verifies the rest.
        let unexpected: Vec<&str> = stderr
            .lines()
            .filter(|l| {
                !(version < 253
                    && l.ends_with("Failed to parse service type, ignoring: notify-reload"))
            })
            .collect();
        assert!(
            out.status.success() && unexpected.is_empty(),
            "systemd-analyze verify {socket} {service} (systemd {version}): {}\n{stderr}",
            out.status
        );
        eprintln!("systemd-analyze verify {socket} {service}: ok (systemd {version})");
    }
}

// ---------------------------------------------------------------------------------------------
// Docker and Nomad
// ---------------------------------------------------------------------------------------------

#[test]
fn docker_image_and_compose() {
    let ctx = Ctx::new();
    let file = "docker/Dockerfile";
    let dockerfile = guide(file);
    let instruction = |name: &str| {
        let found: Vec<&str> = dockerfile
            .lines()
            .filter_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .collect();
        assert_eq!(found.len(), 1, "{file}: one {name}");
        found[0].trim().to_string()
    };
    let argv: Vec<String> = serde_json::from_str(&instruction("ENTRYPOINT"))
        .expect("ENTRYPOINT in exec form (a JSON array): signals reach handover, not a shell");
    let stop_signal = instruction("STOPSIGNAL");
    check_stop_signal(file, &stop_signal);
    check_flags(file, &argv);

    let compose_file = "docker/compose.yaml";
    let compose = YamlLoader::load_from_str(&guide(compose_file)).unwrap();
    let app = &compose[0]["services"]["app"];
    let compose_signal = app["stop_signal"].as_str().expect("stop_signal");
    assert_eq!(
        compose_signal, stop_signal,
        "{compose_file} and {file} agree"
    );
    let grace = handover::parse_duration(
        app["stop_grace_period"]
            .as_str()
            .expect("stop_grace_period"),
    )
    .expect("stop_grace_period in handover's duration syntax");
    check_grace(compose_file, &argv, grace);
    let mut ports = Ports::default();
    let argv_here = on_this_host(&ctx, &argv, &mut ports);
    let port = ports.host(SNIPPET_PORT as u16);
    // A load balancer's health check goes to the supervisor's --admin /healthz.
    let (probe_port, path) = match flag_value(&argv, "--admin") {
        Some(admin) => {
            let p: u16 = admin.rsplit(':').next().unwrap().parse().unwrap();
            (ports.host(p), "/healthz")
        }
        None => (port, "/"),
    };
    serve_probe_stop(
        &ctx,
        file,
        &[],
        &argv_here,
        (port, probe_port),
        path,
        signal_number(&stop_signal),
        (grace, lame_duck(&argv)),
    );
}

/// The job file's attributes, each on one line as `name = VALUE` where VALUE is a string or a
/// list of strings, which HCL writes as JSON does.
fn hcl_attribute<T: serde::de::DeserializeOwned>(text: &str, file: &str, name: &str) -> T {
    let found: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == name).then(|| v.trim())
        })
        .collect();
    assert_eq!(found.len(), 1, "{file}: one `{name} = ...` line");
    serde_json::from_str(found[0]).unwrap_or_else(|e| panic!("{file}: {name}: {e}"))
}

#[test]
fn nomad_job() {
    let ctx = Ctx::new();
    let file = "nomad/hello.nomad.hcl";
    let text = guide(file);
    let signal: String = hcl_attribute(&text, file, "kill_signal");
    check_stop_signal(file, &signal);
    let timeout: String = hcl_attribute(&text, file, "kill_timeout");
    let grace = handover::parse_duration(&timeout).expect("kill_timeout");
    let mut argv: Vec<String> = hcl_attribute(&text, file, "entrypoint");
    argv.extend(hcl_attribute::<Vec<String>>(&text, file, "args"));
    check_flags(file, &argv);
    check_grace(file, &argv, grace);
    let to: i64 = hcl_attribute(&text, file, "to");
    assert_eq!(
        to, SNIPPET_PORT,
        "{file}: the port mapped is the served one"
    );
    let path: String = hcl_attribute(&text, file, "path");
    let interval: String = hcl_attribute(&text, file, "interval");
    let interval = handover::parse_duration(&interval).expect("interval");
    assert!(
        lame_duck(&argv) > interval,
        "{file}: --lame-duck must be longer than the check interval ({interval:?})"
    );
    let mut ports = Ports::default();
    let argv_here = on_this_host(&ctx, &argv, &mut ports);
    let port = ports.host(SNIPPET_PORT as u16);
    serve_probe_stop(
        &ctx,
        file,
        &[],
        &argv_here,
        (port, port),
        &path,
        signal_number(&signal),
        (grace, lame_duck(&argv)),
    );
}
