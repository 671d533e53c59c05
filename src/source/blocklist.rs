//! Known-bad address lists as a source: one address or CIDR per line,
//! with `#` or `;` comments (Spamhaus DROP: `1.10.16.0/20 ; SBL256894`,
//! FireHOL netsets, plain lists). Entries are merged (overlaps and
//! neighbours become one network) so the kernel set holds the fewest
//! intervals. Networks wider than /8 (IPv4) or /16 (IPv6) are refused: a
//! poisoned or broken list must not drop the Internet.

use ipnet::IpNet;

/// What a list's text held.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedList {
    /// Merged networks (hosts as /32 and /128).
    pub nets: Vec<IpNet>,
    /// Entries read, before merging.
    pub entries: usize,
    /// Lines that were not an address or CIDR: (line number, text), the
    /// first few.
    pub bad: Vec<(usize, String)>,
    pub bad_total: usize,
    /// Entries refused as too wide.
    pub too_wide: Vec<(usize, String)>,
}

/// Bad lines kept as samples.
const SAMPLES: usize = 5;

pub fn parse(text: &str) -> ParsedList {
    let mut out = ParsedList::default();
    let mut nets = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line
            .split(['#', ';'])
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next()
            .unwrap_or("");
        if entry.is_empty() {
            continue;
        }
        let net = entry
            .parse::<IpNet>()
            .ok()
            .or_else(|| entry.parse::<std::net::IpAddr>().ok().map(IpNet::from));
        match net {
            Some(n) => {
                let n = n.trunc();
                let wide = match n {
                    IpNet::V4(v) => v.prefix_len() < 8,
                    IpNet::V6(v) => v.prefix_len() < 16,
                };
                if wide {
                    if out.too_wide.len() < SAMPLES {
                        out.too_wide.push((i + 1, entry.to_string()));
                    }
                    continue;
                }
                out.entries += 1;
                nets.push(n);
            }
            None => {
                out.bad_total += 1;
                if out.bad.len() < SAMPLES {
                    out.bad.push((
                        i + 1,
                        crate::log::parse::escape_for_display(
                            &entry.as_bytes()[..entry.len().min(80)],
                        ),
                    ));
                }
            }
        }
    }
    out.nets = IpNet::aggregate(&nets);
    out
}

impl ParsedList {
    /// A list that is mostly not addresses (an HTML error page, a login
    /// wall) is refused whole; the last good one stays.
    pub fn looks_wrong(&self) -> Option<String> {
        if self.entries == 0 && self.bad_total > 0 {
            return Some(format!(
                "no address in it ({} lines that are not, such as line {}: '{}')",
                self.bad_total,
                self.bad.first().map_or(0, |b| b.0),
                self.bad.first().map_or("", |b| b.1.as_str())
            ));
        }
        if self.bad_total > self.entries {
            return Some(format!(
                "more lines are not addresses ({}) than are ({})",
                self.bad_total, self.entries
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spamhaus_firehol_and_plain_lists_parse_and_merge() {
        let drop = "; Spamhaus DROP List 2026/12/01\n; Last-Modified: Tue, 01 Dec 2026\n1.10.16.0/20 ; SBL256894\n2.56.192.0/22 ; SBL459831\n";
        let p = parse(drop);
        assert_eq!(p.entries, 2);
        assert_eq!(p.nets.len(), 2);
        let firehol = "#\n# firehol_level1\n#\n0.0.0.0/8\n1.19.0.0/16\n1.19.1.0/24\n1.20.0.0/16\n192.0.2.7\n2001:db8::/32\n";
        let p = parse(firehol);
        // 0.0.0.0/8 is kept (a /8 is not wider than /8); 1.19.1.0/24 is
        // inside 1.19.0.0/16, and 1.19/16 and 1.20/16 stay apart.
        assert_eq!(p.entries, 6);
        let text: Vec<String> = p.nets.iter().map(|n| n.to_string()).collect();
        assert!(
            text.contains(&"1.19.0.0/16".to_string()) && !text.contains(&"1.19.1.0/24".to_string()),
            "{text:?}"
        );
        assert!(text.contains(&"192.0.2.7/32".to_string()));
        assert!(text.contains(&"2001:db8::/32".to_string()));
        let p = parse("10.0.0.0/24\n10.0.1.0/24\n");
        assert_eq!(p.nets, vec!["10.0.0.0/23".parse::<IpNet>().unwrap()]);
    }

    #[test]
    fn garbage_and_the_whole_internet_are_refused() {
        let p = parse("0.0.0.0/0\n::/0\n10.0.0.0/4\n192.0.2.1\n");
        assert_eq!(p.entries, 1);
        assert_eq!(p.too_wide.len(), 3);
        let html = parse("<html>\n<body>Forbidden</body>\n</html>\n");
        let why = html.looks_wrong().unwrap();
        assert!(why.contains("no address in it (3 lines"), "{why}");
        assert!(parse("192.0.2.1\nnope\n").looks_wrong().is_none());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
            let _ = parse(&s).looks_wrong();
        }
    }
}
