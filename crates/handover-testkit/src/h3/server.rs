//! The library's `h3` example under test: installed, started, upgraded.

use super::*;

/// Installs the library's `h3` example (built with `quic`) as `<dir>/h3`, the start path its
/// upgrades re-execute, and returns that path.
pub fn install_h3(ctx: &Ctx) -> PathBuf {
    let bin = example_binary_with("h3", "quic");
    let path = ctx.path("h3");
    let tmp = ctx.path("h3.tmp");
    let _ = fs::remove_file(&tmp);
    if fs::hard_link(&bin, &tmp).is_err() {
        fs::copy(&bin, &tmp).expect("copy h3");
    }
    fs::rename(&tmp, &path).expect("rename over h3");
    path
}

/// A test's certificates (in `ctx`'s directory), `<dir>/h3` installed, and a client trusting
/// the certificates.
pub fn setup_h3(ctx: &Ctx) -> (Pki, quinn::ClientConfig) {
    let pki = Pki::new(ctx.dir.path());
    install_h3(ctx);
    let config = client_config(&pki);
    (pki, config)
}

/// `<dir>/h3 --listen udp://127.0.0.1:0 --tls-cert .. --tls-key .. <extra>`.
pub fn h3_command(ctx: &Ctx, pki: &Pki, extra: &[&str]) -> Command {
    let mut cmd = ctx.command(ctx.path("h3"));
    cmd.args(["--listen", "udp://127.0.0.1:0", "--tls-cert"])
        .arg(&pki.cert)
        .arg("--tls-key")
        .arg(&pki.key)
        .args(extra);
    cmd
}

/// Spawns `cmd` (some form of `h3`), waits for its `serving udp://IP:PORT` line and for
/// `GET /` over HTTP/3 to be answered by it. The server and its UDP address.
pub fn start_h3(ctx: &Ctx, cmd: Command, config: &quinn::ClientConfig) -> (Server, SocketAddr) {
    let sp = ctx.spawn("h3", cmd);
    let pid = sp.pid;
    let (_, line) = wait_line_while_alive(&sp.log, pid, 0, LONG, |l| l.contains("serving udp://"))
        .unwrap_or_else(|why| panic!("h3 did not log `serving udp://ADDR` {why}"));
    let addr: SocketAddr = line
        .split("serving udp://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse the address in {line:?}"));
    let server = Server {
        pid,
        log: sp.log,
        addrs: Vec::new(),
    };
    let (_, answered_by) = hello(addr, config)
        .unwrap_or_else(|e| panic!("GET / over HTTP/3 failed: {e}; log:\n{}", server.log.text()));
    assert_eq!(answered_by, pid, "GET / answered by an unexpected pid");
    (server, addr)
}

/// `SIGUSR2` to the serving generation, the handover, and `GET /` on new connections answered
/// by the new one (every answer meanwhile a 200). Returns (old pid, new pid); the old one may
/// still be draining.
pub fn upgrade_h3(
    server: &mut Server,
    addr: SocketAddr,
    config: &quinn::ClientConfig,
) -> (i32, i32) {
    let old = server.pid;
    let from = server.log.len();
    signal(old, libc::SIGUSR2);
    let new = server.wait_upgrade_complete(from, old);
    assert_ne!(new, old, "the pid did not change");
    server.pid = new;
    let mut last = None;
    let answered = poll_until(SHORT, || {
        let (_, p) = hello(addr, config)
            .unwrap_or_else(|e| panic!("GET / over HTTP/3: {e}; log:\n{}", server.log.text()));
        last = Some(p);
        p == new
    });
    assert!(
        answered,
        "new connections still answered by {last:?}, expected {new}"
    );
    (old, new)
}

// ---------------------------------------------------------------------------------------------
// A relay that holds a client's datagrams
