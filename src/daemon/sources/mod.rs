//! Sources: what the daemon watches. `logs` follows the access and error
//! logs into requests; `machine` reads load, memory, pressure, processes
//! and the connection table once per check, only what a guard needs.

pub mod logs;
pub mod machine;
pub mod packets;
