//! Everything `handover-cli`'s old kit (`crates/handover-cli/tests/support/mod.rs`) exported,
//! for a test that said `use support::*;` (see the crate doc for where each item lives now).

pub use crate::handoff::upgrade_without_a_stale_answer;
pub use crate::http10::{get, pid_of, version_of, Answer, Failure, Load, Stats};
pub use crate::logs::Log;
pub use crate::proc::{descendants, is_alive, proc_stat, zombies_of, ProcInfo};
pub use crate::supervisor::{handover_exe, run_bounded, write_app, Ctx, Supervisor};
pub use crate::sys::signal;
pub use crate::tools::python;
pub use crate::wait::{poll_until, LONG, SHORT};
