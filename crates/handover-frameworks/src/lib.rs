//! Nothing here: this crate holds examples (`examples/grpc.rs`, `examples/actix.rs`) and their
//! end-to-end tests, kept apart so that their dependencies do not weigh on the library's.
//! The tests use the workspace's test kit, `crates/handover-testkit` (`hello_kit`, and
//! `binaries::example` to build an example).
