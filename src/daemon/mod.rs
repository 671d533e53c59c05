//! The guard daemon (`webfence run`): its settings, the enforcer (ledger +
//! backend + hooks behind one lock), the control socket, and the runtime
//! (`runtime.rs`: the follow loop, the enforcer thread, reloads) that
//! drives them. `cli/run.rs` only turns arguments into `RunOptions`.

pub mod control;
pub mod enforcer;
pub mod runtime;
pub mod settings;

pub use settings::Settings;

/// Locks a mutex shared by the daemon's threads. A panic elsewhere while
/// holding it must not stop enforcement, so a poisoned lock is taken as is.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
