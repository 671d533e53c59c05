//! webfence: see who is hammering a web server, and fence them off.
//!
//! The crate is one pipeline, one module per stage:
//! [`source`] (bytes of complete lines, from files or followed live) →
//! [`log`] (parse into [`log::Request`]; [`net`] for packets) → [`stats`] (aggregate, or live
//! windows) and [`detect`] (rules into decisions) → [`enforce`] (kernel bans)
//! and [`report`] (tables, JSON, CSV). [`pipeline`] runs the batch stages
//! across threads; [`cli`] is the thin front, with `webfence top`'s dashboard.

pub mod cli;
pub mod daemon;
pub mod detect;
pub mod enforce;
pub mod log;
pub mod net;
pub mod notify;
pub mod pipeline;
pub mod report;
pub mod source;
pub mod stats;
pub mod units;
