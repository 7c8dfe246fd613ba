//! Nothing here: this crate holds examples (`examples/grpc.rs`, `examples/actix.rs`) and their
//! end-to-end tests, kept apart so that their dependencies do not weigh on the library's.
