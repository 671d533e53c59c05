//! Notify stage: telling people. Events (`event.rs`) are made where things
//! happen; each channel groups them (`group.rs`) into one message
//! (`render.rs`) and delivers it (`channel.rs`: mail over SMTP or
//! sendmail, a webhook, or a program with the message on stdin). The
//! daemon's `actions::notify` runs the queue, the retries and the counts.

pub mod channel;
pub mod event;
pub mod group;
pub mod render;

pub use event::{Event, Kind, Severity};
