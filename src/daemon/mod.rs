//! The guard daemon's parts (`webfence run`): its settings, the enforcer
//! (ledger + backend + hooks behind one lock) and the control socket. The
//! follow loop that drives them lives in `cli/run.rs`.

pub mod control;
pub mod enforcer;
pub mod settings;

pub use settings::Settings;
