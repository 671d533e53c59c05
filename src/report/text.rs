//! Terminal tables. Colour only on a terminal (or when asked); every string
//! that came from a log was escaped when the report was built, so a log line
//! cannot move the cursor or recolour the screen.

use std::fmt::Write as _;

use super::{Report, Row, Table, human_bytes};

/// Widest a text column may get before it is cut with an ellipsis.
const MAX_TEXT_WIDTH: usize = 64;
const BAR_WIDTH: usize = 40;

#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
    /// The terminal's width: tables shrink their text columns, then drop
    /// optional ones, to fit. None: no limit (a pipe, a file, `--wide`).
    pub width: Option<usize>,
}

impl Style {
    pub fn paint(&self, code: &str, text: &str) -> String {
        if self.color && !text.is_empty() {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

pub(crate) struct Column {
    title: &'static str,
    align: Align,
    /// Dropped, right-most first, when the table does not fit even with
    /// its text columns cut down.
    optional: bool,
    /// May be cut to fit (free text); addresses and times never are.
    cut: bool,
}

pub(crate) fn col(title: &'static str, align: Align) -> Column {
    Column {
        title,
        align,
        optional: false,
        cut: align == Align::Left,
    }
}

/// A column of values that mean nothing cut short (an address).
pub(crate) fn col_whole(title: &'static str) -> Column {
    Column {
        title,
        align: Align::Left,
        optional: false,
        cut: false,
    }
}

/// A column a narrow terminal can do without; never cut.
pub(crate) fn col_optional(title: &'static str) -> Column {
    Column {
        title,
        align: Align::Left,
        optional: true,
        cut: false,
    }
}

/// A cell: its text and an optional colour applied after padding, so colour
/// codes never upset the alignment.
pub(crate) struct Cell {
    text: String,
    color: Option<&'static str>,
}

impl Cell {
    pub(crate) fn text(&self) -> &str {
        &self.text
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell { text, color: None }
    }
}

pub(crate) fn colored(text: String, color: Option<&'static str>) -> Cell {
    Cell { text, color }
}

/// Cuts text to `max` characters, marking the cut with an ellipsis.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn render_table(
    out: &mut String,
    style: Style,
    title: &str,
    columns: &[Column],
    rows: Vec<Vec<Cell>>,
) {
    render_table_width(out, style, title, columns, rows, MAX_TEXT_WIDTH);
}

/// A table whose text cells are cut at `max_width` characters.
pub(crate) fn render_table_width(
    out: &mut String,
    style: Style,
    title: &str,
    columns: &[Column],
    rows: Vec<Vec<Cell>>,
    max_width: usize,
) {
    let _ = writeln!(out, "\n{}", style.paint("1;36", title));
    if rows.is_empty() {
        let _ = writeln!(out, "  (none)");
        return;
    }
    let rows: Vec<Vec<Cell>> = rows
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|c| Cell {
                    text: truncate(&c.text, max_width),
                    color: c.color,
                })
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |cell| cell.text.chars().count()))
                .max()
                .unwrap_or(0)
                .max(c.title.len())
        })
        .collect();
    let mut shown: Vec<bool> = vec![true; columns.len()];
    if let Some(limit) = style.width {
        fit(columns, &mut widths, &mut shown, limit);
    }
    let rows: Vec<Vec<Cell>> = rows
        .into_iter()
        .map(|r| {
            r.into_iter()
                .zip(&widths)
                .map(|(c, w)| Cell {
                    text: truncate(&c.text, *w),
                    color: c.color,
                })
                .collect()
        })
        .collect();
    let keep = |v: Vec<String>| -> Vec<String> {
        v.into_iter()
            .zip(&shown)
            .filter(|(_, s)| **s)
            .map(|(c, _)| c)
            .collect()
    };
    let pad = |text: &str, width: usize, align: Align| {
        let fill = " ".repeat(width.saturating_sub(text.chars().count()));
        match align {
            Align::Left => format!("{text}{fill}"),
            Align::Right => format!("{fill}{text}"),
        }
    };
    let header: Vec<String> = columns
        .iter()
        .zip(&widths)
        .map(|(c, w)| pad(c.title, *w, c.align))
        .collect();
    let header = keep(header);
    let _ = writeln!(out, "  {}", style.paint("1", header.join("  ").trim_end()));
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(columns.iter().zip(&widths))
            .map(|(cell, (c, w))| {
                let padded = pad(&cell.text, *w, c.align);
                match cell.color {
                    Some(code) => style.paint(code, &padded),
                    None => padded,
                }
            })
            .collect();
        let _ = writeln!(out, "  {}", keep(cells).join("  ").trim_end());
    }
}

/// The narrowest a text column is cut to before optional columns go.
const MIN_TEXT_COLUMN: usize = 12;

/// Fits a table into `limit` characters: the widest text columns are cut
/// first (never below their title or `MIN_TEXT_COLUMN`), then optional
/// columns are dropped from the right. Numbers and short keys are never
/// cut, so a narrow terminal loses detail, not meaning.
fn fit(columns: &[Column], widths: &mut [usize], shown: &mut [bool], limit: usize) {
    let total = |widths: &[usize], shown: &[bool]| {
        let visible: Vec<usize> = widths
            .iter()
            .zip(shown.iter())
            .filter(|(_, s)| **s)
            .map(|(w, _)| *w)
            .collect();
        2 + visible.iter().sum::<usize>() + 2 * visible.len().saturating_sub(1)
    };
    let floor = |i: usize| columns[i].title.len().max(MIN_TEXT_COLUMN);
    loop {
        let over = total(widths, shown).saturating_sub(limit);
        if over == 0 {
            return;
        }
        let widest = (0..columns.len())
            .filter(|&i| shown[i] && columns[i].cut && widths[i] > floor(i))
            .max_by_key(|&i| widths[i]);
        if let Some(i) = widest {
            widths[i] = widths[i].saturating_sub(over).max(floor(i));
            continue;
        }
        match (0..columns.len())
            .rev()
            .find(|&i| shown[i] && columns[i].optional)
        {
            Some(i) => shown[i] = false,
            None => return,
        }
    }
}

/// Breaks prose into lines of at most `width` characters at spaces (a
/// longer word stands alone on its line).
pub fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split(' ') {
        let n = word.chars().count();
        if line > 0 && line + 1 + n > width {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += n;
    }
    out
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}

pub(crate) fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{secs:.1}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn status_color(status: u16) -> Option<&'static str> {
    match status / 100 {
        2 => Some("32"),
        3 => Some("36"),
        4 => Some("33"),
        5 => Some("31"),
        _ => None,
    }
}

fn nonzero(n: u64, code: &'static str) -> Cell {
    colored(thousands(n), (n > 0).then_some(code))
}

fn keyed(out: &mut String, style: Style, title: &str, key_title: &'static str, table: &Table) {
    let rows = table
        .rows
        .iter()
        .map(|r: &Row| {
            let key = if r.key.is_empty() {
                "(empty)".to_string()
            } else {
                r.key.clone()
            };
            vec![
                thousands(r.hits).into(),
                format!("{:.2}%", r.percent).into(),
                human_bytes(r.bytes).into(),
                key.into(),
            ]
        })
        .collect();
    let columns = [
        col("Hits", Align::Right),
        col("%", Align::Right),
        col("Bytes", Align::Right),
        col(key_title, Align::Left),
    ];
    render_table(out, style, title, &columns, rows);
}

pub fn render(r: &Report, style: Style, by_bytes: bool) -> String {
    let mut out = String::new();
    let s = &r.summary;
    let _ = writeln!(out, "{}", style.paint("1;36", "Summary"));
    let line = |out: &mut String, label: &str, value: String| {
        let _ = writeln!(out, "  {label:<18}{value}");
    };
    if s.lines == 0 {
        line(&mut out, "Input", "empty: no line to report".into());
    } else {
        line(&mut out, "Format", s.format.clone());
    }
    line(&mut out, "Requests", thousands(s.requests));
    let malformed = thousands(s.malformed);
    line(
        &mut out,
        "Malformed lines",
        if s.malformed > 0 {
            style.paint("33", &malformed)
        } else {
            malformed
        },
    );
    if s.filtered > 0 {
        line(&mut out, "Filtered out", thousands(s.filtered));
    }
    line(&mut out, "Unique clients", thousands(s.unique_ips));
    line(&mut out, "Bandwidth", human_bytes(s.bytes));
    if let (Some(first), Some(last)) = (&s.first, &s.last) {
        line(
            &mut out,
            "Time span",
            format!("{first} → {last} ({})", duration(s.span_s)),
        );
    }
    line(&mut out, "Mean rate", format!("{:.2} req/s", s.mean_rps));
    if let Some(minute) = &s.peak_minute {
        line(
            &mut out,
            "Peak rate",
            format!("{:.2} req/s in the minute from {minute}", s.peak_rps),
        );
    }

    let rank = if by_bytes { "by bytes" } else { "by hits" };
    let ip_rows = r
        .ips
        .iter()
        .map(|ip| {
            vec![
                ip.ip.clone().into(),
                thousands(ip.hits).into(),
                format!("{:.2}%", ip.percent).into(),
                human_bytes(ip.bytes).into(),
                nonzero(ip.status_4xx, "33"),
                nonzero(ip.status_5xx, "31"),
                ip.first.clone().into(),
                ip.last.clone().into(),
            ]
        })
        .collect();
    render_table(
        &mut out,
        style,
        &format!("Top clients ({rank})"),
        &[
            col_whole("Client"),
            col("Hits", Align::Right),
            col("%", Align::Right),
            col("Bytes", Align::Right),
            col("4xx", Align::Right),
            col("5xx", Align::Right),
            col_optional("First seen"),
            col_optional("Last seen"),
        ],
        ip_rows,
    );

    let status_rows = r
        .statuses
        .iter()
        .map(|st| {
            vec![
                colored(
                    crate::log::parse::status_text(st.status),
                    status_color(st.status),
                ),
                thousands(st.hits).into(),
                format!("{:.2}%", st.percent).into(),
                human_bytes(st.bytes).into(),
            ]
        })
        .collect();
    render_table(
        &mut out,
        style,
        "Status codes",
        &[
            col("Status", Align::Left),
            col("Hits", Align::Right),
            col("%", Align::Right),
            col("Bytes", Align::Right),
        ],
        status_rows,
    );

    keyed(
        &mut out,
        style,
        &format!("Top paths ({rank}; query stripped)"),
        "Path",
        &r.paths,
    );
    keyed(&mut out, style, "Top static files", "Path", &r.static_files);
    keyed(&mut out, style, "Top 404 paths", "Path", &r.not_found);
    keyed(&mut out, style, "User agents", "User agent", &r.user_agents);
    if !r.hosts.rows.is_empty() {
        keyed(&mut out, style, "Virtual hosts", "Host", &r.hosts);
    }
    keyed(&mut out, style, "Referrers", "Referrer", &r.referrers);
    keyed(&mut out, style, "Methods", "Method", &r.methods);
    if !r.levels.rows.is_empty() {
        keyed(&mut out, style, "Error levels", "Level", &r.levels);
        keyed(
            &mut out,
            style,
            "Error messages (variable parts folded)",
            "Message",
            &r.error_messages,
        );
    }

    let max = r.timeline.iter().map(|b| b.hits).max().unwrap_or(0).max(1);
    let bucket = duration(r.timeline_bucket_s as f64);
    let timeline_rows = r
        .timeline
        .iter()
        .map(|b| {
            let len = (b.hits as usize * BAR_WIDTH).div_ceil(max as usize);
            vec![
                b.start.clone().into(),
                thousands(b.hits).into(),
                colored("█".repeat(len), Some("34")),
            ]
        })
        .collect();
    render_table(
        &mut out,
        style,
        &format!("Timeline (per {bucket})"),
        &[
            col("Start", Align::Left),
            col("Hits", Align::Right),
            col("", Align::Left),
        ],
        timeline_rows,
    );

    if !r.malformed_samples.is_empty() {
        let _ = writeln!(
            out,
            "\n{}",
            style.paint("1;33", "Malformed lines (first few)")
        );
        let fit = |text: String, indent: usize| match style.width {
            Some(w) => truncate(&text, w.saturating_sub(indent).max(20)),
            None => text,
        };
        for m in &r.malformed_samples {
            let said = fit(format!("{}:{}: {}", m.file, m.line, m.reason), 2);
            let _ = writeln!(out, "  {said}");
            let _ = writeln!(out, "      {}", fit(m.text.clone(), 6));
        }
    }
    for w in &r.warnings {
        let _ = writeln!(out, "\n{} {w}", style.paint("1;33", "warning:"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(5.25), "5.2s");
        assert_eq!(duration(125.0), "2m 05s");
        assert_eq!(duration(7260.0), "2h 01m");
        assert_eq!(duration(90000.0), "1d 01h");
    }

    #[test]
    fn long_cells_are_cut() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }

    #[test]
    fn plain_style_has_no_escape_codes() {
        let plain = Style {
            color: false,
            width: None,
        };
        assert_eq!(plain.paint("31", "x"), "x");
        let colored = Style {
            color: true,
            width: None,
        };
        assert_eq!(colored.paint("31", "x"), "\x1b[31mx\x1b[0m");
    }
}
