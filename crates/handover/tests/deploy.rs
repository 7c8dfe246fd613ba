//! Deploying by re-pointing a `current -> releases/vN` symlink: the upgrade runs the path the
//! server was started from, not a canonicalised one, so the new target is what runs.

use std::fs;
use std::os::unix::fs::symlink;

use handover_testkit::hello_kit::*;

#[test]
fn upgrade_follows_a_repointed_current_symlink() {
    let ctx = Ctx::new();
    for (dir, v) in [("releases/v1", Version::V1), ("releases/v2", Version::V2)] {
        fs::create_dir_all(ctx.path(dir)).unwrap();
        fs::copy(binaries().for_version(v), ctx.path(&format!("{dir}/hello"))).unwrap();
    }
    symlink("releases/v1", ctx.path("current")).unwrap();

    let mut cmd = ctx.command("./current/hello");
    cmd.args(["--listen", "127.0.0.1:0"]);
    let mut server = ctx.start_with(cmd, 1);
    assert_eq!(server.hello().0, V1_GREETING);

    // Atomic re-point, as deploy tools do: a new link renamed over the old one.
    symlink("releases/v2", ctx.path("current.new")).unwrap();
    fs::rename(ctx.path("current.new"), ctx.path("current")).unwrap();

    let (old, new) = server.upgrade(libc::SIGUSR2);
    assert_eq!(server.hello(), (V2_GREETING.to_string(), new));
    assert!(!is_alive(old));
    assert_only_processes(&[new], SHORT);
}
