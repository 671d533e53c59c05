//! `webfence conns` as text: the busiest clients first, with their
//! connections by state, their share and the ports they hold.

use std::fmt::Write;

use crate::stats::conns::ConnTable;

/// Renders the table's first `top` clients.
pub fn render(t: &ConnTable, top: usize, grouped: bool) -> String {
    let mut out = String::new();
    let ports: Vec<String> = t.listening.iter().map(u16::to_string).collect();
    let via = match t.via {
        Some(crate::source::conns::Via::Proc) => " (read from /proc/net/tcp)",
        _ => "",
    };
    let _ = writeln!(
        out,
        "{} connections to listening ports {}: {} established, {} half-open (syn-recv), {} other; {} {}{via}",
        t.total,
        if ports.is_empty() {
            "(none)".to_string()
        } else {
            ports.join(", ")
        },
        t.established,
        t.syn_recv,
        t.total - t.established - t.syn_recv,
        t.clients.len(),
        match (grouped, t.clients.len()) {
            (true, 1) => "network",
            (true, _) => "networks",
            (false, 1) => "client",
            (false, _) => "clients",
        },
    );
    if t.clients.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "\n{:>7}  {:>6}  {:>11}  {:>8}  {:>6}  {:<18}  {}",
        "conns",
        "share",
        "established",
        "syn-recv",
        "other",
        "ports",
        if grouped { "network" } else { "client" }
    );
    for c in t.clients.iter().take(top) {
        let share = if t.total == 0 {
            0.0
        } else {
            c.total as f64 * 100.0 / t.total as f64
        };
        let mut ports: Vec<String> = c
            .ports
            .iter()
            .take(3)
            .map(|p| {
                if c.ports.len() == 1 {
                    p.port.to_string()
                } else {
                    format!("{}×{}", p.port, p.conns)
                }
            })
            .collect();
        if c.ports.len() > 3 {
            ports.push(format!("+{}", c.ports.len() - 3));
        }
        let _ = writeln!(
            out,
            "{:>7}  {:>5.1}%  {:>11}  {:>8}  {:>6}  {:<18}  {}",
            c.total,
            share,
            c.established,
            c.syn_recv,
            c.other,
            ports.join(" "),
            c.client
        );
    }
    if t.clients.len() > top {
        let _ = writeln!(out, "… {} more (--top N shows more)", t.clients.len() - top);
    }
    out
}
