#!/usr/bin/env bash
# Regenerates crates/handover-frameworks/examples/proto/handover.demo.v1.rs from demo.proto
# (checked in, so that building the example needs neither protoc nor a build script).
# Needs protoc (Debian: apt-get install protobuf-compiler); builds tonic-prost-build in a
# throw-away crate.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
proto="$root/crates/handover-frameworks/examples/proto"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src"
cat >"$work/Cargo.toml" <<'TOML'
[package]
name = "gen-grpc"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
tonic-prost-build = "0.14"
[workspace]
TOML
cat >"$work/src/main.rs" <<'RUST'
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (proto, dir) = (&args[0], &args[1]);
    tonic_prost_build::configure()
        .out_dir(dir)
        .compile_protos(&[proto.as_str()], &[dir.as_str()])
        .expect("protoc failed");
}
RUST
cargo run --quiet --manifest-path "$work/Cargo.toml" -- "$proto/demo.proto" "$proto"
# The same layout as `cargo fmt --all` gives it.
rustfmt --edition 2021 "$proto/handover.demo.v1.rs"
echo "wrote $proto/handover.demo.v1.rs"
