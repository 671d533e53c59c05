//! Detection: rules over parsed requests, turned into decisions.
//!
//! - [`config`]: the TOML file, layered and located;
//! - [`compile`]: config → [`rules::RuleSet`], with every check;
//! - [`rules`]: the stateless part run on the parse workers (which rules a
//!   request concerns, as a small [`rules::Event`]);
//! - [`window`], [`engine`]: per-key state and the sequential engine that
//!   turns events into [`engine::Decision`]s;
//! - [`shard`]: how the engine is split by client to run on several threads;
//! - [`farmcount`]: counts shared across a farm's nodes (`scope = "farm"`);
//! - [`allow`]: the allowlist.

pub mod addr;
pub mod allow;
pub mod compile;
pub mod config;
pub mod connrules;
pub mod crawlers;
pub mod engine;
pub mod farmcount;
pub mod guard;
pub mod matcher;
pub mod memo;
pub mod p2p;
pub mod packetrules;
pub mod rules;
pub mod shard;
pub mod window;

pub use config::{Config, ConfigErrors};
pub use engine::{Decision, Engine};
pub use rules::{Event, RuleSet};
