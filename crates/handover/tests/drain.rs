//! The lossless drain under load: ten upgrades with keep-alive, connection-close and HTTP/2
//! clients, and not one failed request of any kind.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use handover_testkit::hello_kit::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const UPGRADES: usize = 10;

fn ten_upgrades_under_load(mode: LoadMode) {
    let ctx = Ctx::new();
    let mut server = ctx.start(&[]);
    let load = Load::start(server.addr(), 8, mode);
    load.wait_more(200);

    let mut version = Version::V1;
    let mut pids = vec![server.pid];
    for _ in 0..UPGRADES {
        version = version.other();
        ctx.install(version);
        let (_, new) = server.upgrade(libc::SIGUSR2);
        pids.push(new);
        load.wait_seen(new);
        load.wait_more(200);
    }

    let stats = load.finish();
    eprintln!("load: {}", stats.summary());
    stats.assert_no_failures();
    for pid in &pids {
        assert!(
            stats.by_pid.contains_key(pid),
            "generation {pid} answered no request: {}",
            stats.summary()
        );
    }
    assert_only_processes(&[server.pid], SHORT);
    assert_no_zombies();
}

/// Eight keep-alive clients, back to back, through ten upgrades: every request succeeds, and
/// every generation answered some.
#[test]
fn keepalive_load_through_ten_upgrades_loses_nothing() {
    ten_upgrades_under_load(LoadMode::KeepAlive);
}

/// Eight clients opening a connection per request through ten upgrades: none refused or reset.
#[test]
fn close_load_through_ten_upgrades_loses_nothing() {
    ten_upgrades_under_load(LoadMode::Close);
}

/// HTTP/2 (prior knowledge, h2c) clients multiplexing requests through ten upgrades: the old
/// generation sends GOAWAY, open streams finish, new streams go to the new generation, and no
/// request fails. A slow request in flight on the old connection completes.
///
/// The client resends a request only when it was refused by GOAWAY (NO_ERROR) before the
/// server processed it, as RFC 9113 section 6.8 allows and browsers do; hyper's pooled client
/// does not do this itself (hyperium/hyper#2500). Every other error is a failure.
#[test]
fn http2_load_through_ten_upgrades_loses_nothing() {
    let ctx = Ctx::new();
    let mut server = ctx.start(&[]);
    let Addr::Tcp(addr) = server.addr().clone() else {
        panic!("tcp listener expected")
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let answered = Arc::new(Mutex::new(std::collections::BTreeMap::<i32, usize>::new()));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, stop, failures, answered) = (
            client.clone(),
            stop.clone(),
            failures.clone(),
            answered.clone(),
        );
        tasks.push(rt.spawn(async move {
            let uri: hyper::Uri = format!("http://{addr}/").parse().unwrap();
            while !stop.load(Ordering::SeqCst) {
                match get_h2(&client, uri.clone()).await {
                    Ok(pid) => *answered.lock().unwrap().entry(pid).or_default() += 1,
                    Err(e) => failures.lock().unwrap().push(e),
                }
            }
        }));
    }
    let count = |answered: &Mutex<std::collections::BTreeMap<i32, usize>>| -> usize {
        answered.lock().unwrap().values().sum()
    };
    let wait_more = |n: usize| {
        let target = count(&answered) + n;
        assert!(
            poll_until(LONG, || count(&answered) >= target),
            "h2 load stalled"
        );
    };
    wait_more(200);

    // A slow request on the first generation's connection, in flight across the first upgrade.
    let slow = {
        let client = client.clone();
        let uri: hyper::Uri = format!("http://{addr}/sleep/1500").parse().unwrap();
        rt.spawn(async move { get_h2(&client, uri).await })
    };
    let first = server.pid;

    let mut version = Version::V1;
    let mut pids = vec![first];
    for _ in 0..UPGRADES {
        version = version.other();
        ctx.install(version);
        let (_, new) = server.upgrade(libc::SIGUSR2);
        pids.push(new);
        assert!(
            poll_until(LONG, || answered.lock().unwrap().contains_key(&new)),
            "no h2 request answered by {new}"
        );
        wait_more(200);
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        rt.block_on(t).unwrap();
    }
    let slow = rt.block_on(slow).unwrap();
    assert_eq!(
        slow,
        Ok(first),
        "the slow h2 request must finish on the old generation"
    );

    let failures = failures.lock().unwrap().clone();
    let answered = answered.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} h2 requests failed (first: {:?}); answered by pid: {answered:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    for pid in &pids {
        assert!(
            answered.contains_key(pid),
            "generation {pid} answered no h2 request: {answered:?}"
        );
    }
    drop(client);
    drop(rt);
    assert_only_processes(&[server.pid], SHORT);
    assert_no_zombies();
}

type H2Client = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

async fn get_h2(client: &H2Client, uri: hyper::Uri) -> Result<i32, String> {
    let mut refused = 0;
    let resp = loop {
        let r = tokio::time::timeout(Duration::from_secs(10), client.get(uri.clone()))
            .await
            .map_err(|_| "timeout".to_string())?;
        match r {
            Ok(resp) => break resp,
            Err(e) if refused_by_goaway(&e) && refused < 3 => refused += 1,
            Err(e) => return Err(format!("request: {e:?}")),
        }
    };
    if resp.version() != hyper::Version::HTTP_2 {
        return Err(format!("not HTTP/2: {:?}", resp.version()));
    }
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    let body = String::from_utf8_lossy(&body).to_string();
    if status != 200 {
        return Err(format!("status {status}: {body}"));
    }
    body.rsplit_once(" pid=")
        .and_then(|(_, p)| p.trim().parse().ok())
        .ok_or_else(|| format!("unexpected body {body:?}"))
}

/// A request the server refused with a graceful GOAWAY before processing it (safe to resend).
fn refused_by_goaway(e: &hyper_util::client::legacy::Error) -> bool {
    let text = format!("{e:?}");
    text.contains("GoAway") && text.contains("NO_ERROR") && text.contains("Remote")
}
