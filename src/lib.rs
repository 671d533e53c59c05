//! webfence: see who is hammering a web server, and fence them off.
//!
//! The crate is one pipeline, one module per stage:
//! [`source`] (bytes of complete lines) → [`log`] (parse into [`log::Request`])
//! → [`stats`] (filter and aggregate) → [`report`] (tables, JSON, CSV).
//! [`pipeline`] runs the stages across threads; [`cli`] is the thin front.

pub mod cli;
pub mod detect;
pub mod enforce;
pub mod log;
pub mod pipeline;
pub mod report;
pub mod source;
pub mod stats;
pub mod units;
