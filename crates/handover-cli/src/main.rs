//! The `handover` binary. Everything is in the library (`lib.rs`), so that the supervisor's
//! state machine and the rest can be tested as units.

fn main() -> std::process::ExitCode {
    handover_cli::main()
}
