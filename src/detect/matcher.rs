//! Pattern matching on one request field, for every rule at once.
//!
//! All literal patterns (exact, prefix, suffix, contains) that any rule sets
//! on a field go into one Aho-Corasick automaton per case mode, and all its
//! regular expressions into one `RegexSet` (a linear-time engine), so a
//! field is scanned once however many rules and patterns there are. Each
//! pattern is tagged with the condition it belongs to; a scan sets the bits
//! of the conditions that hold.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, Anchored, Input, MatchKind, StartKind};
use regex::bytes::{RegexSet, RegexSetBuilder};

/// Bits of satisfied conditions, one per condition id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CondBits(Vec<u64>);

impl CondBits {
    pub fn with_len(n: usize) -> Self {
        CondBits(vec![0; n.div_ceil(64).max(1)])
    }

    pub fn words(&self) -> usize {
        self.0.len()
    }

    pub fn clear(&mut self) {
        self.0.iter_mut().for_each(|w| *w = 0);
    }

    pub fn set(&mut self, i: u32) {
        if let Some(w) = self.0.get_mut(i as usize / 64) {
            *w |= 1 << (i % 64);
        }
    }

    /// The conditions set, ascending.
    pub fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros();
                rest &= rest - 1;
                Some(w as u32 * 64 + bit)
            })
        })
    }

    pub fn get(&self, i: u32) -> bool {
        self.0
            .get(i as usize / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LitKind {
    Exact,
    Prefix,
    Suffix,
    Contains,
}

/// One literal before compilation.
#[derive(Debug, Clone)]
pub struct Literal {
    pub cond: u32,
    pub kind: LitKind,
    pub text: Vec<u8>,
    pub ignore_case: bool,
}

/// Literals of one case mode, split by how they can be searched fastest.
#[derive(Debug, Clone)]
struct LiteralScan {
    /// Prefix patterns, one anchored automaton per condition: the search
    /// stops as soon as the start of the value leaves every pattern (a few
    /// bytes, usually), and one match settles the condition.
    prefixes: Vec<(u32, AhoCorasick)>,
    /// Exact patterns; compared by length first, so few bytes are read.
    exact: Vec<(u32, Vec<u8>)>,
    /// Contains and suffix patterns: a search over the whole value.
    floating: Option<Floating>,
    ignore_case: bool,
}

#[derive(Debug, Clone)]
struct Floating {
    automaton: AhoCorasick,
    tags: Vec<(u32, LitKind)>,
    /// When every pattern is a `contains` of one condition, the first match
    /// settles it: a leftmost search with prefilters, no overlapping walk.
    single: Option<u32>,
    /// Otherwise a leftmost search over the same patterns first: most
    /// requests match none, and this search keeps its prefilters, which
    /// the overlapping walk (needed to learn every condition) does not.
    any: Option<AhoCorasick>,
}

fn automaton(
    pats: &[&Literal],
    ignore_case: bool,
    kind: MatchKind,
    start: StartKind,
) -> Result<AhoCorasick, String> {
    AhoCorasickBuilder::new()
        .ascii_case_insensitive(ignore_case)
        .match_kind(kind)
        .start_kind(start)
        .build(pats.iter().map(|l| &l.text))
        .map_err(|e| format!("cannot build the pattern automaton: {e}"))
}

impl LiteralScan {
    fn build(lits: &[&Literal], ignore_case: bool) -> Result<Option<Self>, String> {
        if lits.is_empty() {
            return Ok(None);
        }
        let mut conds: Vec<u32> = lits
            .iter()
            .filter(|l| l.kind == LitKind::Prefix)
            .map(|l| l.cond)
            .collect();
        conds.sort_unstable();
        conds.dedup();
        let mut prefixes = Vec::new();
        for c in conds {
            let pats: Vec<&Literal> = lits
                .iter()
                .copied()
                .filter(|l| l.kind == LitKind::Prefix && l.cond == c)
                .collect();
            prefixes.push((
                c,
                automaton(
                    &pats,
                    ignore_case,
                    MatchKind::LeftmostFirst,
                    StartKind::Anchored,
                )?,
            ));
        }
        let exact = lits
            .iter()
            .filter(|l| l.kind == LitKind::Exact)
            .map(|l| (l.cond, l.text.clone()))
            .collect();
        let floating: Vec<&Literal> = lits
            .iter()
            .copied()
            .filter(|l| matches!(l.kind, LitKind::Contains | LitKind::Suffix))
            .collect();
        let floating = if floating.is_empty() {
            None
        } else {
            let first = floating[0].cond;
            let single = floating
                .iter()
                .all(|l| l.cond == first && l.kind == LitKind::Contains)
                .then_some(first);
            // Otherwise an overlapping search, which needs standard
            // semantics: it reports every pattern, not just the first.
            let kind = if single.is_some() {
                MatchKind::LeftmostFirst
            } else {
                MatchKind::Standard
            };
            let any = match single {
                Some(_) => None,
                None => Some(automaton(
                    &floating,
                    ignore_case,
                    MatchKind::LeftmostFirst,
                    StartKind::Unanchored,
                )?),
            };
            Some(Floating {
                automaton: automaton(&floating, ignore_case, kind, StartKind::Unanchored)?,
                tags: floating.iter().map(|l| (l.cond, l.kind)).collect(),
                single,
                any,
            })
        };
        Ok(Some(LiteralScan {
            prefixes,
            exact,
            floating,
            ignore_case,
        }))
    }

    fn scan(&self, value: &[u8], hits: &mut CondBits) {
        for (cond, a) in &self.prefixes {
            if a.is_match(Input::new(value).anchored(Anchored::Yes)) {
                hits.set(*cond);
            }
        }
        for (cond, text) in &self.exact {
            let eq = text.len() == value.len()
                && if self.ignore_case {
                    text.eq_ignore_ascii_case(value)
                } else {
                    text == value
                };
            if eq {
                hits.set(*cond);
            }
        }
        let Some(f) = &self.floating else { return };
        if let Some(cond) = f.single {
            if f.automaton.is_match(value) {
                hits.set(cond);
            }
            return;
        }
        if f.any.as_ref().is_some_and(|a| !a.is_match(value)) {
            return;
        }
        for m in f.automaton.find_overlapping_iter(value) {
            let Some(&(cond, kind)) = f.tags.get(m.pattern().as_usize()) else {
                continue;
            };
            if kind == LitKind::Contains || m.end() == value.len() {
                hits.set(cond);
            }
        }
    }
}

/// Every condition on one field (in one decoding mode).
#[derive(Debug, Clone)]
pub struct FieldMatcher {
    pub decode: bool,
    /// The conditions this matcher decides, ascending.
    pub conds: Vec<u32>,
    /// The conditions an empty value meets (an access log has no error
    /// message, most requests no query): known without a scan.
    pub on_empty: Vec<u32>,
    exact_case: Option<LiteralScan>,
    any_case: Option<LiteralScan>,
    regexes: Option<(RegexSet, Vec<u32>)>,
}

impl FieldMatcher {
    /// `regexes` are (condition, pattern) with case folding already written
    /// into the pattern.
    pub fn build(
        decode: bool,
        literals: &[Literal],
        regexes: &[(u32, String)],
    ) -> Result<Self, String> {
        let mut conds: Vec<u32> = literals
            .iter()
            .map(|l| l.cond)
            .chain(regexes.iter().map(|(c, _)| *c))
            .collect();
        conds.sort_unstable();
        conds.dedup();
        let (ci, cs): (Vec<&Literal>, Vec<&Literal>) = literals.iter().partition(|l| l.ignore_case);
        // Case-insensitive patterns are lowered here and the value at scan
        // time: a case-sensitive automaton keeps its fast prefilters, which
        // case-insensitive ones with many patterns lose.
        let lowered: Vec<Literal> = ci
            .iter()
            .map(|l| Literal {
                text: l.text.to_ascii_lowercase(),
                ignore_case: false,
                ..(*l).clone()
            })
            .collect();
        let ci: Vec<&Literal> = lowered.iter().collect();
        let regexes = if regexes.is_empty() {
            None
        } else {
            let set = RegexSetBuilder::new(regexes.iter().map(|(_, p)| p))
                .size_limit(64 << 20)
                .dfa_size_limit(16 << 20)
                .build()
                .map_err(|e| e.to_string())?;
            Some((set, regexes.iter().map(|(c, _)| *c).collect()))
        };
        let mut m = FieldMatcher {
            decode,
            on_empty: Vec::new(),
            exact_case: LiteralScan::build(&cs, false)?,
            any_case: LiteralScan::build(&ci, false)?,
            regexes,
            conds,
        };
        let mut bits = CondBits::with_len(m.conds.last().map_or(0, |&c| c as usize + 1));
        m.scan(b"", &mut bits, &mut Vec::new());
        m.on_empty = bits.ones().collect();
        Ok(m)
    }

    /// Sets the bits of the conditions `value` satisfies; `lower` is a
    /// reusable buffer.
    pub fn scan(&self, value: &[u8], hits: &mut CondBits, lower: &mut Vec<u8>) {
        if let Some(s) = &self.exact_case {
            s.scan(value, hits);
        }
        if let Some(s) = &self.any_case {
            // Paths are mostly lower case already: no copy then.
            if value.iter().any(u8::is_ascii_uppercase) {
                lower.clear();
                lower.extend(value.iter().map(u8::to_ascii_lowercase));
                s.scan(lower, hits);
            } else {
                s.scan(value, hits);
            }
        }
        if let Some((set, conds)) = &self.regexes {
            // Most requests match nothing: one cheap test before asking which.
            if set.is_match(value) {
                for i in set.matches(value).iter() {
                    if let Some(&c) = conds.get(i) {
                        hits.set(c);
                    }
                }
            }
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_once(input: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == b'%' {
            if let (Some(h), Some(l)) = (
                input.get(i + 1).copied().and_then(hex),
                input.get(i + 2).copied().and_then(hex),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
}

/// Percent-decodes twice (double encoding such as `%252e` is a classic
/// evasion), into reused buffers; returns the input itself when there is
/// nothing to decode, which is the common case.
pub fn percent_decode<'a>(input: &'a [u8], buf: &'a mut (Vec<u8>, Vec<u8>)) -> &'a [u8] {
    if memchr::memchr(b'%', input).is_none() {
        return input;
    }
    decode_once(input, &mut buf.0);
    if memchr::memchr(b'%', &buf.0).is_none() {
        return &buf.0;
    }
    decode_once(&buf.0, &mut buf.1);
    &buf.1
}

/// A decoded path as a server resolves it: `//` collapsed, `.` segments
/// dropped and `..` segments applied, so `/x/../wp-login.php` and
/// `//wp-login.php` match `/wp-login.php`. Returns the input when there is
/// nothing to do (the common case); `out` is reused. The traversal rule
/// matches the target, which is never normalised, so `../` stays visible
/// to it.
pub fn normalize_path<'a>(path: &'a [u8], out: &'a mut Vec<u8>) -> &'a [u8] {
    // One pass over the slashes: a segment that is empty or starts with
    // '.' is the only case with work to do (most paths have none).
    let needs =
        memchr::memchr_iter(b'/', path).any(|i| matches!(path.get(i + 1), Some(b'/' | b'.')));
    if !needs || !path.starts_with(b"/") {
        return path;
    }
    out.clear();
    for segment in path.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                // Back to the previous '/', never above the root.
                let cut = memchr::memrchr(b'/', out).unwrap_or(0);
                out.truncate(cut);
            }
            s => {
                out.push(b'/');
                out.extend_from_slice(s);
            }
        }
    }
    let ends_in_dir = path.ends_with(b"/") || path.ends_with(b"/.") || path.ends_with(b"/..");
    if out.is_empty() || ends_in_dir {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_resolved_as_a_server_would() {
        let mut out = Vec::new();
        for (raw, want) in [
            ("/plain/path", "/plain/path"),
            ("//wp-login.php", "/wp-login.php"),
            ("/x/../wp-login.php", "/wp-login.php"),
            ("/./.env", "/.env"),
            ("/a/b/../../../../etc/passwd", "/etc/passwd"),
            ("/a//b/./c/", "/a/b/c/"),
            ("/a/..", "/"),
            ("/", "/"),
        ] {
            assert_eq!(
                std::str::from_utf8(normalize_path(raw.as_bytes(), &mut out)).unwrap(),
                want,
                "{raw}"
            );
        }
    }

    fn lit(cond: u32, kind: LitKind, text: &str, ignore_case: bool) -> Literal {
        Literal {
            cond,
            kind,
            text: text.as_bytes().to_vec(),
            ignore_case,
        }
    }

    fn hits(m: &FieldMatcher, value: &str, n: usize) -> Vec<u32> {
        let mut bits = CondBits::with_len(n);
        m.scan(value.as_bytes(), &mut bits, &mut Vec::new());
        (0..n as u32).filter(|&i| bits.get(i)).collect()
    }

    #[test]
    fn literal_kinds_share_one_pass() {
        let m = FieldMatcher::build(
            false,
            &[
                lit(0, LitKind::Prefix, "/.env", false),
                lit(1, LitKind::Contains, "env", false),
                lit(2, LitKind::Exact, "/x", false),
                lit(3, LitKind::Suffix, ".php", true),
            ],
            &[(4, "^/a+$".to_string())],
        )
        .unwrap();
        assert_eq!(hits(&m, "/.env", 5), vec![0, 1]);
        assert_eq!(hits(&m, "/a/.env", 5), vec![1]);
        assert_eq!(hits(&m, "/x", 5), vec![2]);
        assert_eq!(hits(&m, "/x/", 5), Vec::<u32>::new());
        assert_eq!(hits(&m, "/shell.PHP", 5), vec![3]);
        assert_eq!(hits(&m, "/aaa", 5), vec![4]);
    }

    #[test]
    fn an_empty_value_meets_what_a_scan_of_it_would() {
        let m = FieldMatcher::build(
            false,
            &[
                lit(0, LitKind::Exact, "", false),
                lit(1, LitKind::Contains, "x", false),
            ],
            &[(2, "^$".to_string()), (3, ".".to_string())],
        )
        .unwrap();
        assert_eq!(m.on_empty, vec![0, 2]);
        assert_eq!(hits(&m, "", 4), m.on_empty);
    }

    #[test]
    fn thousands_of_patterns() {
        let lits: Vec<Literal> = (0..5000)
            .map(|i| lit(i % 7, LitKind::Contains, &format!("bot-{i:05}"), true))
            .collect();
        let m = FieldMatcher::build(false, &lits, &[]).unwrap();
        assert_eq!(hits(&m, "Mozilla BOT-04998 x", 7), vec![4998 % 7]);
        assert!(hits(&m, "Mozilla/5.0", 7).is_empty());
    }

    #[test]
    fn decoding_undoes_double_encoding() {
        let mut buf = Default::default();
        assert_eq!(percent_decode(b"/a%2e%2e%2fb", &mut buf), b"/a../b");
        assert_eq!(percent_decode(b"%252e%252e%252f", &mut buf), b"../");
        assert_eq!(percent_decode(b"/plain", &mut buf), b"/plain");
        assert_eq!(percent_decode(b"/bad%zz%4", &mut buf), b"/bad%zz%4");
    }
}

#[cfg(test)]
mod prefix_tests {
    use super::*;

    #[test]
    fn many_prefixes_sharing_a_start() {
        let lits: Vec<Literal> = ["/wp-login.php", "/wp-admin", "/wp-content/", "/wp/"]
            .iter()
            .map(|p| Literal {
                cond: 0,
                kind: LitKind::Prefix,
                text: p.as_bytes().to_vec(),
                ignore_case: true,
            })
            .collect();
        let m = FieldMatcher::build(false, &lits, &[]).unwrap();
        for (v, want) in [
            ("/wp-login.php", true),
            ("/WP-ADMIN/x", true),
            ("/wp/", true),
            ("/x/wp/", false),
            ("/w", false),
        ] {
            let mut bits = CondBits::with_len(1);
            m.scan(v.as_bytes(), &mut bits, &mut Vec::new());
            assert_eq!(bits.get(0), want, "{v}");
        }
    }
}
