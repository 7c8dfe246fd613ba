//! The control socket end to end within one process: protocol, permissions, limits.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdStream;

fn status() -> Status {
    Status {
        schema_version: STATUS_SCHEMA_VERSION,
        kind: ServerKind::Supervisor,
        name: Some("app".into()),
        pid: 42,
        state: ServerState::Running,
        generation: 2,
        uptime_ms: 1000,
        restarts: 0,
        listeners: vec!["tcp://127.0.0.1:8080".into()],
        workers: vec![WorkerStatus {
            generation: 2,
            pid: 43,
            state: WorkerState::Ready,
            uptime_ms: 500,
        }],
        last_upgrade: None,
        resumed: None,
        canary: None,
    }
}

async fn handler(request: Request) -> Result<Response, String> {
    match request {
        Request::Status => Ok(Response::Status(status())),
        Request::Stop => Ok(Response::Stopping(StopReport { pid: 42 })),
        Request::Upgrade => Err("the new worker exited with status 3".into()),
        other => Err(format!("{other:?} is not served here")),
    }
}

/// Starts a server in a runtime of its own thread; returns its path.
fn server(dir: &Path, read_timeout: Duration) -> PathBuf {
    let path = dir.join("control.sock");
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = ControlServer::bind(&p)
                .unwrap()
                .with_read_timeout(read_timeout);
            tx.send(()).unwrap();
            server.serve(handler).await.unwrap();
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    path
}

fn raw(path: &Path, bytes: &[u8]) -> serde_json::Value {
    let mut s = StdStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.ends_with('\n'), "{out:?}");
    assert_eq!(out.matches('\n').count(), 1, "{out:?}");
    serde_json::from_str(&out).unwrap()
}

fn error_of(v: &serde_json::Value) -> String {
    assert_eq!(v["ok"], false, "{v}");
    v["error"].as_str().unwrap().to_string()
}

#[test]
fn requests_and_replies_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = server(dir.path(), DEFAULT_READ_TIMEOUT);
    let mode = std::fs::symlink_metadata(&path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        request(&path, Request::Status).unwrap(),
        Response::Status(status())
    );
    assert_eq!(
        request(&path, Request::Stop).unwrap(),
        Response::Stopping(StopReport { pid: 42 })
    );
    match request(&path, Request::Upgrade) {
        Err(ClientError::Failed(msg)) => assert!(msg.contains("status 3"), "{msg}"),
        other => panic!("{other:?}"),
    }
    let v = raw(&path, b"{\"request\":\"status\",\"extra\":1}\n");
    assert_eq!(v["ok"], true);
    assert_eq!(v["result"]["workers"][0]["state"], "ready");
    assert_eq!(v["result"]["kind"], "supervisor");
    // The end of the stream also ends the line.
    assert_eq!(raw(&path, b"{\"request\":\"stop\"}")["ok"], true);
}

#[test]
fn garbage_gets_an_error_reply_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let path = server(dir.path(), DEFAULT_READ_TIMEOUT);
    let cases: &[(&[u8], &str)] = &[
        (b"garbage\n", "not JSON"),
        (b"\xff\xfe\n", "not JSON"),
        (b"{\"request\":\"dance\"}\n", "unknown request \"dance\""),
        (b"{\"request\":7}\n", "must be a string"),
        (b"{}\n", "no \"request\" field"),
        (b"[1,2]\n", "no \"request\" field"),
        (b"\n", "empty request"),
        (b"", "empty request"),
    ];
    for (input, needle) in cases {
        let e = error_of(&raw(&path, input));
        assert!(e.contains(needle), "{input:?}: {e}");
    }
    let long = vec![b'x'; MAX_REQUEST_BYTES + 10];
    assert!(error_of(&raw(&path, &long)).contains("too long"));
    let mut long_line = vec![b' '; MAX_REQUEST_BYTES + 1];
    long_line.extend_from_slice(b"{\"request\":\"status\"}\n");
    assert!(error_of(&raw(&path, &long_line)).contains("too long"));
    // Exactly at the limit is fine.
    let mut at_limit = vec![b' '; MAX_REQUEST_BYTES - 20];
    at_limit.extend_from_slice(b"{\"request\":\"stop\"}");
    assert_eq!(at_limit.len(), MAX_REQUEST_BYTES - 2);
    assert_eq!(raw(&path, &at_limit)["ok"], true);
    assert!(request(&path, Request::Status).is_ok());
}

#[test]
fn a_silent_client_times_out_without_blocking_others() {
    let dir = tempfile::tempdir().unwrap();
    let path = server(dir.path(), Duration::from_millis(300));
    let mut idle = StdStream::connect(&path).unwrap();
    // Another client is served while the first one says nothing.
    assert!(request(&path, Request::Status).is_ok());
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = String::new();
    idle.read_to_string(&mut out).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(error_of(&v).contains("no complete request"), "{v}");
}

#[test]
fn bind_replaces_only_a_stale_socket_of_ours() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let path = dir.path().join("c.sock");

    // A stale socket (nobody listening) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = ControlServer::bind(&path).unwrap();
    // A live one is refused, and left alone.
    let e = ControlServer::bind(&path).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    drop(server);
    assert!(
        !path.exists(),
        "dropping the server removes its socket file"
    );

    // A regular file is never replaced.
    std::fs::write(&path, "precious").unwrap();
    let e = ControlServer::bind(&path).unwrap_err();
    assert!(e.to_string().contains("not a socket"), "{e}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    std::fs::remove_file(&path).unwrap();

    // Nor is a symbolic link followed.
    let target = dir.path().join("target");
    std::os::unix::fs::symlink(&target, &path).unwrap();
    assert!(ControlServer::bind(&path).is_err());
    assert!(!target.exists());
}

#[test]
fn an_adopted_socket_serves_and_is_kept_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inherited.sock");
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let first = ControlServer::bind(&p).unwrap().remove_on_drop(false);
            let fd = first.try_clone_fd().unwrap();
            drop(first);
            assert!(p.exists(), "remove_on_drop(false) keeps the file");
            // The next generation adopts the same socket.
            let adopted =
                ControlServer::from_listener(std::os::unix::net::UnixListener::from(fd)).unwrap();
            assert_eq!(adopted.path(), p);
            tx.send(()).unwrap();
            adopted.serve(handler).await.unwrap();
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(matches!(
        request(&path, Request::Stop),
        Ok(Response::Stopping(StopReport { pid: 42 }))
    ));
}

#[test]
fn client_errors_name_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nothing.sock");
    let e = request(&path, Request::Status).unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
    assert!(e.to_string().contains("nothing.sock"), "{e}");
}

#[test]
fn status_schema_is_stable() {
    let v = serde_json::to_value(status()).unwrap();
    for field in [
        "schema_version",
        "kind",
        "name",
        "pid",
        "state",
        "generation",
        "uptime_ms",
        "restarts",
        "listeners",
        "workers",
        "last_upgrade",
        "resumed",
    ] {
        assert!(v.get(field).is_some(), "missing {field}: {v}");
    }
    assert_eq!(v["state"], "running");
    // Unknown states from a newer server still decode.
    let mut newer = v.clone();
    newer["state"] = "hibernating".into();
    newer["workers"][0]["state"] = "dreaming".into();
    let s: Status = serde_json::from_value(newer).unwrap();
    assert_eq!(s.state, ServerState::Unknown);
    assert_eq!(s.workers[0].state, WorkerState::Unknown);
}
