//! Actions: what the daemon does about a decision. `enforcer` holds the
//! ledger, the kernel backend and the hooks behind one lock; `bans` turns
//! decisions into one batch for it; `commands` runs the guards' programs
//! without blocking; `guard` carries out what a guard's check decided;
//! `limits` installs the kernel's per-client connection limits; `notify`
//! groups events into messages and delivers them; `metrics` serves
//! Prometheus metrics and a health check.

pub mod bans;
pub mod blocklists;
pub mod commands;
pub mod digest;
pub mod enforcer;
pub mod farm;
pub mod guard;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod web;
