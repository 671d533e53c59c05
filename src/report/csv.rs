//! One report table as CSV, for spreadsheets and scripts.

use std::io::Write;

use super::{Report, Table};

/// The tables `--csv` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CsvTable {
    Summary,
    Ips,
    Statuses,
    Paths,
    #[value(name = "static_files")]
    StaticFiles,
    #[value(name = "not_found")]
    NotFound,
    #[value(name = "user_agents")]
    UserAgents,
    Hosts,
    Referrers,
    Methods,
    Timeline,
    /// Error logs: levels.
    Levels,
    /// Error logs: message kinds.
    #[value(name = "error_messages")]
    ErrorMessages,
}

/// A spreadsheet runs a cell that starts with `=`, `+`, `-`, `@` (or a
/// tab or carriage return before one) as a formula: a User-Agent such as
/// `=cmd|' /C calc'!A0` would. Such text from a log gets a leading `'`,
/// which spreadsheets show as text (the OWASP advice for CSV injection).
pub fn spreadsheet_safe(text: &str) -> std::borrow::Cow<'_, str> {
    match text.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{text}").into(),
        _ => text.into(),
    }
}

fn keyed<W: Write>(w: &mut csv::Writer<W>, t: &Table) -> csv::Result<()> {
    w.write_record([t.key_name, "hits", "bytes", "percent"])?;
    for r in &t.rows {
        w.write_record([
            &*spreadsheet_safe(&r.key),
            r.hits.to_string().as_str(),
            r.bytes.to_string().as_str(),
            r.percent.to_string().as_str(),
        ])?;
    }
    Ok(())
}

pub fn write<W: Write>(out: W, r: &Report, table: CsvTable) -> csv::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    match table {
        CsvTable::Summary => {
            let s = &r.summary;
            w.write_record(["metric", "value"])?;
            let rows = [
                ("requests", s.requests.to_string()),
                ("malformed", s.malformed.to_string()),
                ("filtered", s.filtered.to_string()),
                ("lines", s.lines.to_string()),
                ("unique_ips", s.unique_ips.to_string()),
                ("bytes", s.bytes.to_string()),
                ("first", s.first.clone().unwrap_or_default()),
                ("last", s.last.clone().unwrap_or_default()),
                ("mean_rps", s.mean_rps.to_string()),
                ("peak_rps", s.peak_rps.to_string()),
                ("peak_minute", s.peak_minute.clone().unwrap_or_default()),
                ("format", s.format.clone()),
            ];
            for (k, v) in rows {
                w.write_record([k, v.as_str()])?;
            }
        }
        CsvTable::Ips => {
            w.write_record([
                "ip",
                "hits",
                "percent",
                "bytes",
                "status_4xx",
                "status_5xx",
                "first",
                "last",
            ])?;
            for i in &r.ips {
                w.write_record([
                    i.ip.clone(),
                    i.hits.to_string(),
                    i.percent.to_string(),
                    i.bytes.to_string(),
                    i.status_4xx.to_string(),
                    i.status_5xx.to_string(),
                    i.first.clone(),
                    i.last.clone(),
                ])?;
            }
        }
        CsvTable::Statuses => {
            w.write_record(["status", "hits", "percent", "bytes"])?;
            for s in &r.statuses {
                w.write_record([
                    crate::log::parse::status_text(s.status),
                    s.hits.to_string(),
                    s.percent.to_string(),
                    s.bytes.to_string(),
                ])?;
            }
        }
        CsvTable::Timeline => {
            w.write_record(["start", "hits", "bytes"])?;
            for b in &r.timeline {
                w.write_record([b.start.clone(), b.hits.to_string(), b.bytes.to_string()])?;
            }
        }
        CsvTable::Paths => keyed(&mut w, &r.paths)?,
        CsvTable::StaticFiles => keyed(&mut w, &r.static_files)?,
        CsvTable::NotFound => keyed(&mut w, &r.not_found)?,
        CsvTable::UserAgents => keyed(&mut w, &r.user_agents)?,
        CsvTable::Hosts => keyed(&mut w, &r.hosts)?,
        CsvTable::Referrers => keyed(&mut w, &r.referrers)?,
        CsvTable::Methods => keyed(&mut w, &r.methods)?,
        CsvTable::Levels => keyed(&mut w, &r.levels)?,
        CsvTable::ErrorMessages => keyed(&mut w, &r.error_messages)?,
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::spreadsheet_safe;

    #[test]
    fn formulas_from_logs_are_neutralised() {
        for bad in ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)", "\t=1"] {
            assert_eq!(spreadsheet_safe(bad), format!("'{bad}"));
        }
        for fine in ["/index.html", "Mozilla/5.0", "", "GET"] {
            assert_eq!(spreadsheet_safe(fine), fine);
        }
    }
}
