//! Detectors: what turns what the sources saw into decisions. `rules` is
//! the rule engine fed by requests; `guards` steps each guard's state
//! machine on the machine's sample; `connections` runs the connection
//! rules over the kernel's table.

pub mod connections;
pub mod guards;
pub mod packets;
pub mod rules;
