//! The `webfence top` dashboard: state (what the user chose) and drawing
//! (a pure function of a snapshot and that state), kept apart from
//! collection so frames are tested on a `TestBackend`.

use ratatui::Frame;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, Tabs};

use crate::report::human_bytes;
use crate::report::text::thousands;
use crate::stats::conns::ConnTable;
use crate::stats::live::{Snapshot, SortBy};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Panel {
    #[default]
    Clients,
    Paths,
    Statuses,
    Hosts,
    Agents,
    Decisions,
    Connections,
}

const PANELS: [Panel; 7] = [
    Panel::Clients,
    Panel::Paths,
    Panel::Statuses,
    Panel::Hosts,
    Panel::Agents,
    Panel::Decisions,
    Panel::Connections,
];

/// A decision of the rules, ready to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRow {
    pub at: String,
    pub action: String,
    pub client: String,
    pub rule: String,
    pub reason: String,
    /// The size of what was decided on: the evidence's count.
    pub count: u64,
}

/// How the decisions panel orders its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecisionOrder {
    #[default]
    Newest,
    Rule,
    Size,
}

impl DecisionOrder {
    fn name(self) -> &'static str {
        match self {
            DecisionOrder::Newest => "newest first",
            DecisionOrder::Rule => "by rule",
            DecisionOrder::Size => "largest first",
        }
    }
}

impl Panel {
    fn title(self) -> &'static str {
        match self {
            Panel::Clients => "Clients",
            Panel::Paths => "Paths",
            Panel::Statuses => "Statuses",
            Panel::Hosts => "Hosts",
            Panel::Agents => "User agents",
            Panel::Decisions => "Decisions",
            Panel::Connections => "Connections",
        }
    }

    fn index(self) -> usize {
        PANELS.iter().position(|p| *p == self).unwrap_or(0)
    }
}

/// What the user chose; changed only by keys.
#[derive(Debug, Clone, Default)]
pub struct Dash {
    pub panel: Panel,
    pub sort: SortBy,
    pub group: bool,
    pub paused: bool,
    pub filter: String,
    /// The filter being typed after '/'.
    pub editing: Option<String>,
    pub help: bool,
    /// The first decision row shown (the panel scrolls).
    pub decisions_from: usize,
    pub decision_order: DecisionOrder,
}

/// The machine's load and memory, from /proc, and its connection table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Machine {
    pub load: [f64; 3],
    pub mem_total_kib: u64,
    pub mem_available_kib: u64,
    pub swap_used_kib: u64,
    /// None when the table could not be read.
    pub conns: Option<ConnTable>,
}

impl Machine {
    /// A client's connections (as the clients panel names it), when the
    /// table was read and the client is an address.
    fn conns_of(&self, client: &str) -> Option<u64> {
        let t = self.conns.as_ref()?;
        let subject: crate::detect::addr::Subject = client.parse().ok()?;
        Some(
            t.clients
                .iter()
                .filter(|c| subject.contains(c.client.bits))
                .map(|c| c.total)
                .sum(),
        )
    }
}

impl Machine {
    /// Reads /proc (as the guards do); what cannot be read stays 0.
    pub fn read() -> Machine {
        use crate::source::system::{ProcProbe, SystemProbe};
        let s = ProcProbe::default().sample(&[]).unwrap_or_default();
        Machine {
            load: [s.la1, s.la5, s.la15],
            mem_total_kib: s.mem_total / 1024,
            mem_available_kib: s.mem_avail / 1024,
            swap_used_kib: s.swap_used() / 1024,
            conns: None,
        }
    }
}

impl Dash {
    /// Keeps the decisions panel's scroll position within the rows there
    /// are: scrolling past the end and back must not take as many key
    /// presses the other way.
    pub fn clamp_decisions(&mut self, rows: usize) {
        self.decisions_from = self.decisions_from.min(rows.saturating_sub(1));
    }
}

/// Applies a key; returns true to quit.
pub fn handle_key(d: &mut Dash, key: KeyEvent) -> bool {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return true;
    }
    if let Some(text) = &mut d.editing {
        match key.code {
            KeyCode::Enter => {
                d.filter = std::mem::take(text);
                d.editing = None;
            }
            KeyCode::Esc => d.editing = None,
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char(c) => text.push(c),
            _ => {}
        }
        return false;
    }
    if d.help {
        d.help = false;
        return matches!(key.code, KeyCode::Char('q'));
    }
    match key.code {
        KeyCode::Char('q') | KeyCode::Esc => return true,
        KeyCode::Tab | KeyCode::Right => d.panel = PANELS[(d.panel.index() + 1) % PANELS.len()],
        KeyCode::BackTab | KeyCode::Left => {
            d.panel = PANELS[(d.panel.index() + PANELS.len() - 1) % PANELS.len()]
        }
        KeyCode::Char(c @ '1'..='7') => d.panel = PANELS[(c as u8 - b'1') as usize],
        KeyCode::Char('s') => {
            d.sort = match d.sort {
                SortBy::Now => SortBy::Last1m,
                SortBy::Last1m => SortBy::Last5m,
                SortBy::Last5m => SortBy::Last15m,
                SortBy::Last15m => SortBy::Now,
            }
        }
        KeyCode::Char('g') => d.group = !d.group,
        KeyCode::Char('p') | KeyCode::Char(' ') => d.paused = !d.paused,
        KeyCode::Char('/') => d.editing = Some(d.filter.clone()),
        KeyCode::Char('?') | KeyCode::Char('h') => d.help = true,
        KeyCode::Char('o') => {
            d.decision_order = match d.decision_order {
                DecisionOrder::Newest => DecisionOrder::Rule,
                DecisionOrder::Rule => DecisionOrder::Size,
                DecisionOrder::Size => DecisionOrder::Newest,
            };
            d.decisions_from = 0;
        }
        KeyCode::Down | KeyCode::Char('j') => d.decisions_from += 1,
        KeyCode::Up | KeyCode::Char('k') => d.decisions_from = d.decisions_from.saturating_sub(1),
        KeyCode::PageDown => d.decisions_from += PAGE,
        KeyCode::PageUp => d.decisions_from = d.decisions_from.saturating_sub(PAGE),
        KeyCode::Home => d.decisions_from = 0,
        _ => {}
    }
    false
}

/// The width of the help overlay's key column.
const KEY_COLUMN: usize = 16;

/// Rows a Page Up or Down moves the decisions panel.
const PAGE: usize = 10;

fn sort_name(s: SortBy) -> &'static str {
    match s {
        SortBy::Now => "req/s now",
        SortBy::Last1m => "1 min",
        SortBy::Last5m => "5 min",
        SortBy::Last15m => "15 min",
    }
}

const HELP: &[(&str, &str)] = &[
    ("Tab ← →  1-7", "switch panel"),
    ("s", "sort clients: now, 1, 5, 15 min"),
    ("/", "filter clients, paths, agents (Enter, Esc)"),
    ("g", "group clients by /24 and /64"),
    ("↑ ↓ PgUp PgDn", "scroll the decisions"),
    ("o", "order decisions: newest, rule, size"),
    ("p  space", "pause the display"),
    ("q  Esc  Ctrl-C", "quit"),
    ("?", "this help"),
];

/// Draws one frame.
pub fn draw(
    f: &mut Frame,
    s: &Snapshot,
    d: &Dash,
    m: &Machine,
    sources: &str,
    decisions: &[DecisionRow],
) {
    let area = f.area();
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(5),
            Constraint::Length(1),
            Constraint::Min(3),
            Constraint::Length(1),
        ])
        .split(area);
    draw_header(f, rows[0], s, m);
    let titles: Vec<Line> = PANELS
        .iter()
        .enumerate()
        .map(|(i, p)| Line::from(format!("{} {}", i + 1, p.title())))
        .collect();
    f.render_widget(
        Tabs::new(titles)
            .select(d.panel.index())
            .highlight_style(Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED)),
        rows[1],
    );
    // A wide terminal shows paths beside the clients.
    if d.panel == Panel::Clients && area.width >= 160 {
        let cols = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Percentage(65), Constraint::Percentage(35)])
            .split(rows[2]);
        draw_clients(f, cols[0], s, d, m);
        draw_counts(f, cols[1], "Paths (5 min)", "Path", &s.paths, s.last_5m);
    } else {
        match d.panel {
            Panel::Clients => draw_clients(f, rows[2], s, d, m),
            Panel::Paths => draw_counts(f, rows[2], "Paths (5 min)", "Path", &s.paths, s.last_5m),
            Panel::Statuses => {
                let v: Vec<(String, u64)> = s
                    .statuses
                    .iter()
                    .map(|(c, n)| (crate::log::parse::status_text(*c), *n))
                    .collect();
                draw_counts(f, rows[2], "Statuses (5 min)", "Status", &v, s.last_5m)
            }
            Panel::Hosts => draw_counts(f, rows[2], "Hosts (5 min)", "Host", &s.hosts, s.last_5m),
            Panel::Agents => draw_counts(
                f,
                rows[2],
                "User agents (5 min)",
                "User agent",
                &s.user_agents,
                s.last_5m,
            ),
            Panel::Decisions => draw_decisions(f, rows[2], decisions, d),
            Panel::Connections => draw_connections(f, rows[2], m),
        }
    }
    let status = match &d.editing {
        Some(t) => format!("filter: {t}▏  (Enter to apply, Esc to cancel)"),
        None => {
            let mut parts = vec![format!("sort: {}", sort_name(d.sort))];
            if d.group {
                parts.push("grouped /24 /64".into());
            }
            if !d.filter.is_empty() {
                parts.push(format!("filter: {}", d.filter));
            }
            if d.paused {
                parts.push("PAUSED".into());
            }
            parts.push("? help  q quit".into());
            format!("{}  ·  {sources}", parts.join("  ·  "))
        }
    };
    f.render_widget(
        Paragraph::new(status).style(Style::default().add_modifier(Modifier::DIM)),
        rows[3],
    );
    if d.help {
        draw_help(f, area);
    }
}

fn draw_header(f: &mut Frame, area: Rect, s: &Snapshot, m: &Machine) {
    let spark = if area.width >= 100 { 34 } else { 20 };
    let cols = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Min(40), Constraint::Length(spark)])
        .split(area);
    let st = &s.status;
    let total: u64 = st.iter().sum::<u64>().max(1);
    let pct = |n: u64| n as f64 * 100.0 / total as f64;
    let lines = vec![
        Line::from(vec![
            Span::styled(
                format!("{:.1} req/s", s.per_second),
                Style::default().add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!(
                "   1m {}  5m {}  15m {}",
                thousands(s.last_1m),
                thousands(s.last_5m),
                thousands(s.last_15m),
            )),
        ]),
        Line::from(vec![
            Span::raw(format!(
                "{}/s  {} clients{}   ",
                human_bytes(s.bytes_per_second as u64),
                thousands(s.active_clients as u64),
                if s.evicted_clients > 0 {
                    format!(" ({} dropped: memory cap)", thousands(s.evicted_clients))
                } else {
                    String::new()
                }
            )),
            Span::styled(
                format!("2xx {:.0}% ", pct(st[1])),
                Style::default().fg(Color::Green),
            ),
            Span::styled(
                format!("3xx {:.0}% ", pct(st[2])),
                Style::default().fg(Color::Cyan),
            ),
            Span::styled(
                format!("4xx {:.0}% ", pct(st[3])),
                Style::default().fg(Color::Yellow),
            ),
            Span::styled(
                format!("5xx {:.0}%", pct(st[4])),
                Style::default().fg(Color::Red),
            ),
        ]),
        Line::from(format!(
            "load {:.2} {:.2} {:.2}   mem {} free of {}{}{}",
            m.load[0],
            m.load[1],
            m.load[2],
            human_bytes(m.mem_available_kib * 1024),
            human_bytes(m.mem_total_kib * 1024),
            if m.swap_used_kib > 0 {
                format!("   swap {}", human_bytes(m.swap_used_kib * 1024))
            } else {
                String::new()
            },
            match &m.conns {
                // At 80 columns the half-open count may be cut: the
                // connections panel has it.
                Some(t) => format!(
                    "   conns {} ({} syn)",
                    thousands(t.total),
                    thousands(t.syn_recv)
                ),
                None => String::new(),
            }
        )),
    ];
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::BOTTOM)
                .title(" webfence top "),
        ),
        cols[0],
    );
    f.render_widget(
        Sparkline::default()
            .block(
                Block::default()
                    .borders(Borders::BOTTOM)
                    .title(" req/s, 60 s "),
            )
            .data(&s.history)
            .style(Style::default().fg(Color::Cyan)),
        cols[1],
    );
}

fn draw_clients(f: &mut Frame, area: Rect, s: &Snapshot, d: &Dash, m: &Machine) {
    let wide = area.width >= 110;
    let mut header = vec![
        "Client", "Req/s", "1m", "5m", "15m", "%", "Conns", "Top path",
    ];
    if wide {
        header.push("User agent");
    }
    let rows: Vec<Row> = s
        .clients
        .iter()
        .map(|c| {
            let mut cells = vec![
                Cell::from(c.client.clone()),
                Cell::from(format!("{:.1}", c.per_second)),
                Cell::from(thousands(c.last_1m)),
                Cell::from(thousands(c.last_5m)),
                Cell::from(thousands(c.last_15m)),
                Cell::from(format!("{:.1}", c.percent)),
                Cell::from(m.conns_of(&c.client).map_or("-".to_string(), thousands)),
                Cell::from(c.top_path.clone()),
            ];
            if wide {
                cells.push(Cell::from(c.user_agent.clone()));
            }
            Row::new(cells)
        })
        .collect();
    let mut widths = vec![
        Constraint::Length(if d.group { 22 } else { 18 }),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Min(12),
    ];
    if wide {
        widths.push(Constraint::Percentage(35));
    }
    let title = format!(" Clients, by {} ", sort_name(d.sort));
    f.render_widget(
        Table::new(rows, widths)
            .header(Row::new(header).style(Style::default().add_modifier(Modifier::BOLD)))
            .block(Block::default().borders(Borders::ALL).title(title)),
        area,
    );
}

fn draw_counts(
    f: &mut Frame,
    area: Rect,
    title: &str,
    key: &str,
    rows: &[(String, u64)],
    total: u64,
) {
    let rows: Vec<Row> = rows
        .iter()
        .map(|(k, n)| {
            let pct = if total > 0 {
                *n as f64 * 100.0 / total as f64
            } else {
                0.0
            };
            Row::new(vec![
                Cell::from(thousands(*n)),
                Cell::from(format!("{pct:.1}")),
                Cell::from(k.clone()),
            ])
        })
        .collect();
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(9),
                Constraint::Length(6),
                Constraint::Min(10),
            ],
        )
        .header(
            Row::new(vec!["Hits", "%", key]).style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(format!(" {title} ")),
        ),
        area,
    );
}

fn draw_decisions(f: &mut Frame, area: Rect, decisions: &[DecisionRow], dash: &Dash) {
    let mut ordered: Vec<&DecisionRow> = decisions.iter().collect();
    match dash.decision_order {
        DecisionOrder::Newest => {}
        DecisionOrder::Rule => ordered.sort_by(|a, b| a.rule.cmp(&b.rule)),
        DecisionOrder::Size => ordered.sort_by_key(|d| std::cmp::Reverse(d.count)),
    }
    // Borders and the header take three rows.
    let visible = usize::from(area.height.saturating_sub(3)).max(1);
    let from = dash
        .decisions_from
        .min(ordered.len().saturating_sub(visible));
    let rows: Vec<Row> = ordered
        .iter()
        .skip(from)
        .take(visible)
        .map(|d| {
            Row::new(vec![
                Cell::from(d.at.get(11..19).unwrap_or(&d.at).to_string()),
                Cell::from(d.action.clone()).style(Style::default().fg(Color::Red)),
                Cell::from(d.client.clone()),
                Cell::from(d.rule.clone()),
                Cell::from(d.reason.clone()),
            ])
        })
        .collect();
    let title = if ordered.len() > visible {
        format!(
            " Decisions the rules would take ({}), {}; {}-{} shown, ↑↓ to scroll ",
            decisions.len(),
            dash.decision_order.name(),
            from + 1,
            (from + visible).min(ordered.len())
        )
    } else {
        format!(
            " Decisions the rules would take ({}), {} ",
            decisions.len(),
            dash.decision_order.name()
        )
    };
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(20),
                Constraint::Length(18),
                Constraint::Min(10),
            ],
        )
        .header(
            Row::new(vec!["Time", "Action", "Client", "Rule", "Reason"])
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(Block::default().borders(Borders::ALL).title(title)),
        area,
    );
}

/// The connection table, busiest client first (what `webfence conns`
/// prints).
fn draw_connections(f: &mut Frame, area: Rect, m: &Machine) {
    let Some(t) = &m.conns else {
        f.render_widget(
            Paragraph::new("the connection table cannot be read here").block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(" Connections "),
            ),
            area,
        );
        return;
    };
    let rows: Vec<Row> = t
        .clients
        .iter()
        .take(area.height.saturating_sub(3) as usize)
        .map(|c| {
            let ports: Vec<String> = c.ports.iter().take(3).map(|p| p.port.to_string()).collect();
            Row::new(vec![
                Cell::from(thousands(c.total)),
                Cell::from(format!(
                    "{:.1}",
                    c.total as f64 * 100.0 / t.total.max(1) as f64
                )),
                Cell::from(thousands(c.established)),
                Cell::from(thousands(c.syn_recv)),
                Cell::from(thousands(c.other)),
                Cell::from(ports.join(" ")),
                Cell::from(c.client.to_string()),
            ])
        })
        .collect();
    let title = format!(
        " Connections: {} to ports {}, {} clients ",
        thousands(t.total),
        t.listening
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(" "),
        thousands(t.clients.len() as u64)
    );
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(7),
                Constraint::Length(6),
                Constraint::Length(11),
                Constraint::Length(8),
                Constraint::Length(6),
                Constraint::Length(16),
                Constraint::Min(15),
            ],
        )
        .header(
            Row::new(vec![
                "Conns",
                "%",
                "Established",
                "Syn-recv",
                "Other",
                "Ports",
                "Client",
            ])
            .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(Block::default().borders(Borders::ALL).title(title)),
        area,
    );
}

fn draw_help(f: &mut Frame, area: Rect) {
    // As wide as its longest line (key column, text, borders), so nothing
    // is cut on an 80-column terminal.
    let longest = HELP
        .iter()
        .map(|(_, v)| KEY_COLUMN + v.chars().count())
        .max()
        .unwrap_or(0);
    let w = (longest as u16 + 2).min(area.width);
    let h = (HELP.len() as u16 + 2).min(area.height);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, v)| {
            Line::from(vec![
                Span::styled(
                    format!("{k:<KEY_COLUMN$}"),
                    Style::default().add_modifier(Modifier::BOLD),
                ),
                Span::raw(*v),
            ])
        })
        .collect();
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" Keys ")),
        r,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::live::ClientRow;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::KeyEventKind;

    fn snapshot() -> Snapshot {
        Snapshot {
            now: 1_714_557_600,
            per_second: 52.5,
            history: (0..60).map(|i| (i % 7) as u64).collect(),
            last_1m: 3150,
            last_5m: 9000,
            last_15m: 21000,
            bytes_per_second: 1_048_576.0,
            status: [0, 8000, 100, 850, 50, 0],
            clients: vec![
                ClientRow {
                    client: "203.0.113.66".into(),
                    per_second: 48.0,
                    last_1m: 2880,
                    last_5m: 5000,
                    last_15m: 5000,
                    percent: 55.6,
                    top_path: "/search".into(),
                    user_agent: "EvilBot/1.0".into(),
                },
                ClientRow {
                    client: "198.51.100.7".into(),
                    per_second: 0.5,
                    last_1m: 30,
                    last_5m: 150,
                    last_15m: 400,
                    percent: 1.7,
                    top_path: "/".into(),
                    user_agent: "Firefox".into(),
                },
            ],
            paths: vec![("/search".into(), 5000), ("/".into(), 150)],
            hosts: vec![("example.com".into(), 9000)],
            user_agents: vec![("EvilBot/1.0".into(), 5000)],
            statuses: vec![(200, 8000), (404, 850)],
            active_clients: 2,
            evicted_clients: 0,
        }
    }

    fn machine() -> Machine {
        use crate::source::conns::{Conn, TcpState};
        let conn = |remote: &str, state| Conn {
            local: "192.0.2.1".parse().unwrap(),
            local_port: 443,
            remote: remote.parse().unwrap(),
            remote_port: 5000,
            state,
        };
        let mut conns = vec![conn("198.51.100.7", TcpState::Established)];
        conns.extend((0..40).map(|_| conn("203.0.113.66", TcpState::Established)));
        conns.extend((0..3).map(|_| conn("203.0.113.66", TcpState::SynRecv)));
        Machine {
            load: [3.5, 2.0, 1.25],
            mem_total_kib: 8 << 20,
            mem_available_kib: 2 << 20,
            swap_used_kib: 0,
            conns: Some(ConnTable::build(
                &[443].into(),
                &conns,
                &crate::stats::conns::ConnFilter::default(),
            )),
        }
    }

    fn frame(w: u16, h: u16, d: &Dash) -> Vec<String> {
        let decisions = vec![DecisionRow {
            at: "2024-05-01T10:00:06Z".into(),
            action: "ban 1h".into(),
            client: "203.0.113.66".into(),
            rule: "flood-ip".into(),
            reason: "121 requests in 10s (limit 120)".into(),
            count: 121,
        }];
        frame_with(w, h, d, &decisions)
    }

    fn frame_with(w: u16, h: u16, d: &Dash, decisions: &[DecisionRow]) -> Vec<String> {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| draw(f, &snapshot(), d, &machine(), "1 file", decisions))
            .unwrap();
        let buf = t.backend().buffer().clone();
        (0..h)
            .map(|y| {
                (0..w)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect()
    }

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent {
            code: c,
            modifiers: KeyModifiers::NONE,
            kind: KeyEventKind::Press,
            state: ratatui::crossterm::event::KeyEventState::NONE,
        }
    }

    #[test]
    fn frame_at_80x24() {
        let lines = frame(80, 24, &Dash::default());
        let text = lines.join("\n");
        assert!(lines[0].contains("webfence top"), "{text}");
        assert!(
            lines[1].starts_with("52.5 req/s   1m 3,150  5m 9,000  15m 21,000 "),
            "{text}"
        );
        assert!(
            lines[2].starts_with("1.0 MiB/s  2 clients   2xx 89% 3xx 1% 4xx 9% 5xx 1%"),
            "{text}"
        );
        assert!(
            lines[3].starts_with("load 3.50 2.00 1.25   mem 2.0 GiB free of 8.0 GiB   conns 44"),
            "{text}"
        );
        assert!(lines[5].contains("1 Clients"), "{text}");
        assert!(lines[7].contains("Conns"), "{text}");
        assert!(
            lines[8].contains(" 43 "),
            "the client's connections: {text}"
        );
        assert!(
            lines[7].contains("Client") && lines[7].contains("Req/s"),
            "{text}"
        );
        assert!(
            lines[8].contains("203.0.113.66")
                && lines[8].contains("48.0")
                && lines[8].contains("/search"),
            "{text}"
        );
        assert!(lines[9].contains("198.51.100.7"), "{text}");
        assert!(lines[23].contains("sort: req/s now"), "{text}");
        assert!(lines.iter().all(|l| l.chars().count() == 80));
    }

    #[test]
    fn the_connections_panel_lists_the_busiest_clients() {
        let d = Dash {
            panel: Panel::Connections,
            ..Dash::default()
        };
        let lines = frame(80, 24, &d);
        let text = lines.join("\n");
        assert!(
            text.contains("Connections: 44 to ports 443, 2 clients"),
            "{text}"
        );
        let row = lines
            .iter()
            .find(|l| l.contains("203.0.113.66"))
            .expect("the busiest client");
        assert!(
            row.contains("43") && row.contains("40") && row.contains("443"),
            "{row}"
        );
        let mut none = Dash::default();
        handle_key(
            &mut none,
            KeyEvent::new(KeyCode::Char('7'), KeyModifiers::NONE),
        );
        assert_eq!(none.panel, Panel::Connections);
    }

    #[test]
    fn scrolling_past_the_end_comes_back_at_once() {
        let mut d = Dash::default();
        for _ in 0..100 {
            handle_key(&mut d, key(KeyCode::Down));
        }
        d.clamp_decisions(3);
        assert_eq!(d.decisions_from, 2);
        handle_key(&mut d, key(KeyCode::Up));
        assert_eq!(d.decisions_from, 1);
        d.clamp_decisions(0);
        assert_eq!(d.decisions_from, 0);
    }

    #[test]
    fn wide_terminals_show_more() {
        let lines = frame(180, 40, &Dash::default());
        let text = lines.join("\n");
        assert!(lines[8].contains("EvilBot/1.0"), "{text}");
        assert!(text.contains("Paths (5 min)"), "{text}");
        assert!(lines[3].contains("conns 44 (3 syn)"), "{text}");
    }

    #[test]
    fn keys_change_the_view() {
        let mut d = Dash::default();
        assert!(!handle_key(&mut d, key(KeyCode::Tab)));
        assert_eq!(d.panel, Panel::Paths);
        handle_key(&mut d, key(KeyCode::Char('s')));
        assert_eq!(d.sort, SortBy::Last1m);
        handle_key(&mut d, key(KeyCode::Char('g')));
        assert!(d.group);
        handle_key(&mut d, key(KeyCode::Char('p')));
        assert!(d.paused);
        handle_key(&mut d, key(KeyCode::Char('/')));
        for c in "bot".chars() {
            handle_key(&mut d, key(KeyCode::Char(c)));
        }
        // 'q' while typing is text, not quit.
        assert!(!handle_key(&mut d, key(KeyCode::Char('q'))));
        handle_key(&mut d, key(KeyCode::Backspace));
        handle_key(&mut d, key(KeyCode::Enter));
        assert_eq!(d.filter, "bot");
        handle_key(&mut d, key(KeyCode::Char('?')));
        assert!(d.help);
        let lines = frame(80, 24, &d);
        assert!(lines.join("\n").contains("switch panel"));
        assert!(!handle_key(&mut d, key(KeyCode::Char('x'))));
        assert!(!d.help);
        assert!(handle_key(&mut d, key(KeyCode::Char('q'))));
        let ctrl_c = KeyEvent {
            modifiers: KeyModifiers::CONTROL,
            ..key(KeyCode::Char('c'))
        };
        assert!(handle_key(&mut Dash::default(), ctrl_c));
    }

    #[test]
    fn the_decisions_panel() {
        let d = Dash {
            panel: Panel::Decisions,
            ..Dash::default()
        };
        let lines = frame(80, 24, &d);
        let text = lines.join("\n");
        assert!(
            lines[6].contains("Decisions the rules would take (1)"),
            "{text}"
        );
        assert!(
            lines[8].contains("10:00:06")
                && lines[8].contains("ban 1h")
                && lines[8].contains("203.0.113.66"),
            "{text}"
        );
    }

    /// Regression: the decisions panel showed the newest rows only, with
    /// no way to reach the rest or to order them.
    #[test]
    fn the_decisions_panel_scrolls_and_orders() {
        let decisions: Vec<DecisionRow> = (0..50u64)
            .map(|i| DecisionRow {
                at: format!("2024-05-01T10:{:02}:00Z", 59 - i),
                action: "ban 1h".into(),
                client: format!("198.51.100.{i}"),
                rule: if i % 2 == 0 { "b-rule" } else { "a-rule" }.into(),
                reason: format!("{} requests", 100 + i),
                count: 100 + i,
            })
            .collect();
        let mut d = Dash {
            panel: Panel::Decisions,
            ..Dash::default()
        };
        let text = frame_with(80, 24, &d, &decisions).join("\n");
        assert!(
            text.contains("198.51.100.0 ") && !text.contains("198.51.100.30 "),
            "{text}"
        );
        assert!(text.contains("1-14 shown"), "{text}");
        for _ in 0..3 {
            handle_key(&mut d, key(KeyCode::PageDown));
        }
        let text = frame_with(80, 24, &d, &decisions).join("\n");
        assert!(
            text.contains("198.51.100.30 ") && text.contains("31-44 shown"),
            "{text}"
        );
        // Past the end it stops at the last page.
        for _ in 0..10 {
            handle_key(&mut d, key(KeyCode::Down));
        }
        let text = frame_with(80, 24, &d, &decisions).join("\n");
        assert!(
            text.contains("198.51.100.49 ") && text.contains("37-50 shown"),
            "{text}"
        );
        handle_key(&mut d, key(KeyCode::Char('o')));
        let lines = frame_with(80, 24, &d, &decisions);
        assert!(lines[8].contains("a-rule"), "{}", lines.join("\n"));
        handle_key(&mut d, key(KeyCode::Char('o')));
        let lines = frame_with(80, 24, &d, &decisions);
        assert!(lines[8].contains("198.51.100.49 "), "{}", lines.join("\n"));
    }

    /// Regression: help lines were cut at 80 columns.
    #[test]
    fn the_help_fits_80x24_and_160x45() {
        let d = Dash {
            help: true,
            ..Dash::default()
        };
        for (w, h) in [(80, 24), (160, 45)] {
            let text = frame(w, h, &d).join("\n");
            for (k, v) in HELP {
                assert!(text.contains(v), "{w}x{h}: '{k}' help cut:\n{text}");
            }
        }
    }

    #[test]
    fn machine_figures_come_from_proc() {
        let m = Machine::read();
        assert!(m.mem_total_kib > 0);
    }
}
