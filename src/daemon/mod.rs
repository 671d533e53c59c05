//! The guard daemon (`webfence run`) as components with plain data
//! between them:
//!
//! - [`sources`]: the logs (follower + parser) and the machine (load,
//!   memory, pressure, processes, the connection table);
//! - [`detectors`]: the rule engine over requests, the guards over the
//!   machine's sample, the connection rules over the kernel's table;
//! - [`actions`]: the enforcer (ledger + backend + hooks behind one lock)
//!   and its batches, the guards' programs, the kernel connection limits.
//!
//! [`runtime`] wires them: the follow loop, the enforcer thread, the
//! machine loop ([`watch`]) and the control socket ([`control`]), each on
//! a thread of its own; [`settings`] compiles `[daemon]`, `[guards]` and
//! `[limits]`. A new source, detector or action is a module in its folder
//! and a line in the loop that feeds it. `cli/run.rs` only turns
//! arguments into `RunOptions`.

pub mod actions;
pub mod control;
pub mod detectors;
pub mod runtime;
pub mod settings;
pub mod sources;
pub mod watch;

pub use settings::Settings;

/// Locks a mutex shared by the daemon's threads. A panic elsewhere while
/// holding it must not stop enforcement, so a poisoned lock is taken as is.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
