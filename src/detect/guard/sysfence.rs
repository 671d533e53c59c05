//! sysfence's configuration, read as guards: `webfence import sysfence`
//! prints the TOML, and every command that takes `-c` reads a sysfence
//! file as if it were that TOML, so a sysfence user pastes nothing.
//!
//! ```text
//! rule "ApacheStop" { la1 >= 10.00 or la5 >= 6.0 } run '/etc/init.d/apache2 stop'
//! if "warning" { la1 >= 8.00 } run once 'echo "Load High" | mail admin'
//! rule "high load" { la1 > 3.0 and la15 > 2.0 } log
//! ```
//!
//! Braces group like parentheses; conditions written one after another
//! with no `and`/`or` between them are joined with `or` (and the output
//! says so). `run once` fires once per episode (webfence's default);
//! `run` without `once` runs at every check while the condition holds,
//! which is `repeat = "1s"`, and, as in sysfence, never while the last
//! run is still going. A command with shell syntax keeps its shell
//! (`["/bin/sh", "-c", ...]`): it is the admin's own text, never a log's.

use super::expr::Cond;

/// A problem at a line and column (1-based) of the sysfence file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Open,
    Close,
}

fn lex(text: &str) -> Result<Vec<(usize, Tok)>, (usize, String)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            c if c.is_ascii_whitespace() => i += 1,
            b'{' => {
                out.push((i, Tok::Open));
                i += 1;
            }
            b'}' => {
                out.push((i, Tok::Close));
                i += 1;
            }
            q @ (b'"' | b'\'') => {
                let start = i;
                let end = b[i + 1..]
                    .iter()
                    .position(|&x| x == q)
                    .map(|p| i + 1 + p)
                    .ok_or((start, "this quote is never closed".to_string()))?;
                out.push((start, Tok::Quoted(text[i + 1..end].to_string())));
                i = end + 1;
            }
            _ => {
                let start = i;
                while i < b.len()
                    && !b[i].is_ascii_whitespace()
                    && !matches!(b[i], b'{' | b'}' | b'"' | b'\'' | b'#')
                {
                    i += 1;
                }
                // Multi-byte characters end up inside a word, whole.
                while !text.is_char_boundary(i) {
                    i += 1;
                }
                out.push((start, Tok::Word(text[start..i].to_string())));
            }
        }
    }
    Ok(out)
}

/// Whether a file is sysfence's syntax rather than TOML: its first word
/// is `if` or `rule` followed by a name in quotes or a brace.
pub fn looks_like_sysfence(text: &str) -> bool {
    match lex(text) {
        Ok(t) => matches!(
            (t.first(), t.get(1)),
            (Some((_, Tok::Word(w))), Some((_, Tok::Quoted(_) | Tok::Open)))
                if w == "if" || w == "rule"
        ),
        Err(_) => false,
    }
}

fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |n| before.len() - n - 1)
        + 1;
    (line, column)
}

/// A guard name from a sysfence rule name: letters, digits, '-', '_'
/// and '.' kept, anything else a '-'.
fn guard_name(name: &str) -> String {
    let mut out: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    out.truncate(64);
    out
}

/// A shell command as an argument vector: split on blanks when it has no
/// shell syntax (a trailing ';' aside), else run by /bin/sh as sysfence did.
fn argv(command: &str) -> Vec<String> {
    let trimmed = command.trim().trim_end_matches(';').trim();
    let shell = trimmed
        .chars()
        .any(|c| ";|&$`<>*?(){}[]'\"\\~\n".contains(c));
    if shell || trimmed.is_empty() {
        vec!["/bin/sh".into(), "-c".into(), command.trim().to_string()]
    } else {
        trimmed.split_whitespace().map(String::from).collect()
    }
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The rules of a sysfence file as webfence TOML, or every problem found.
pub fn to_toml(source: &str, text: &str) -> Result<String, Vec<ImportError>> {
    let fail = |at: usize, message: String| {
        let (line, column) = line_col(text, at);
        ImportError {
            line,
            column,
            message,
        }
    };
    let toks = lex(text).map_err(|(at, m)| vec![fail(at, m)])?;
    let mut errors = Vec::new();
    let mut out = format!(
        "# Imported from {source} by webfence (sysfence's rules as guards).\n\
         # Each guard is checked every second; see `webfence status` for their state.\n"
    );
    let mut names: Vec<String> = Vec::new();
    let mut i = 0;
    let mut unnamed = 0;
    while i < toks.len() {
        let (at, tok) = &toks[i];
        let Tok::Word(kw) = tok else {
            errors.push(fail(*at, "expected 'rule' or 'if' to start a rule".into()));
            break;
        };
        if kw != "if" && kw != "rule" {
            errors.push(fail(
                *at,
                format!("expected 'rule' or 'if' to start a rule, found '{kw}'"),
            ));
            break;
        }
        let rule_at = *at;
        i += 1;
        let mut name = None;
        if let Some((_, Tok::Quoted(n))) = toks.get(i) {
            name = Some(n.clone());
            i += 1;
        }
        if !matches!(toks.get(i), Some((_, Tok::Open))) {
            let at = toks.get(i).map_or(text.len(), |t| t.0);
            errors.push(fail(at, "expected '{' and the rule's condition".into()));
            break;
        }
        // The condition: everything to the matching brace.
        let cond_at = toks[i].0;
        let mut depth = 0;
        let mut words: Vec<String> = Vec::new();
        let mut last_ended_comparison = false;
        let mut joined = false;
        loop {
            let Some((at, t)) = toks.get(i) else {
                errors.push(fail(cond_at, "this '{' is never closed".into()));
                return Err(errors);
            };
            match t {
                Tok::Open => {
                    if depth > 0 {
                        if last_ended_comparison {
                            words.push("or".into());
                            joined = true;
                        }
                        words.push("(".into());
                    }
                    depth += 1;
                    last_ended_comparison = false;
                }
                Tok::Close => {
                    depth -= 1;
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                    words.push(")".into());
                    last_ended_comparison = true;
                }
                Tok::Word(w) if w == "run" || w == "log" => {
                    errors.push(fail(
                        *at,
                        format!("'{w}' inside the condition: a '}}' is missing before it"),
                    ));
                    return Err(errors);
                }
                Tok::Word(w) => {
                    let lower = w.to_ascii_lowercase();
                    let is_logic = matches!(lower.as_str(), "and" | "or" | "not" | "&&" | "||");
                    let starts_quantity =
                        w.starts_with(|c: char| c.is_ascii_alphabetic()) && !is_logic;
                    if last_ended_comparison && starts_quantity {
                        words.push("or".into());
                        joined = true;
                    }
                    words.push(w.clone());
                    // A comparison ends with its value: a word that starts
                    // with a digit or a dot.
                    last_ended_comparison = w.starts_with(|c: char| c.is_ascii_digit() || c == '.')
                        || (w.contains(['<', '>', '='])
                            && w.ends_with(|c: char| c.is_ascii_alphanumeric()));
                }
                Tok::Quoted(q) => {
                    words.push(format!("\"{q}\""));
                    last_ended_comparison = false;
                }
            }
            i += 1;
        }
        let condition = words.join(" ").replace("( ", "(").replace(" )", ")");
        if let Err(e) = Cond::parse(&condition) {
            errors.push(fail(
                cond_at,
                format!("in the condition '{condition}': {}", e.message),
            ));
        }
        // The action.
        let (action, once) = match toks.get(i) {
            Some((_, Tok::Word(w))) if w == "run" => {
                i += 1;
                let once = matches!(toks.get(i), Some((_, Tok::Word(o))) if o == "once");
                if once {
                    i += 1;
                }
                match toks.get(i) {
                    Some((_, Tok::Quoted(cmd))) => {
                        i += 1;
                        (Some(cmd.clone()), once)
                    }
                    other => {
                        let at = other.map_or(text.len(), |t| t.0);
                        errors.push(fail(
                            at,
                            "expected the command in quotes after 'run'".into(),
                        ));
                        break;
                    }
                }
            }
            Some((_, Tok::Word(w))) if w == "log" => {
                i += 1;
                let once = matches!(toks.get(i), Some((_, Tok::Word(o))) if o == "once");
                if once {
                    i += 1;
                }
                (None, once)
            }
            other => {
                let at = other.map_or(text.len(), |t| t.0);
                errors.push(fail(
                    at,
                    "expected 'run' or 'log' after the condition".into(),
                ));
                break;
            }
        };
        let mut gname = name.as_deref().map(guard_name).unwrap_or_default();
        if gname.is_empty() {
            unnamed += 1;
            gname = format!("sysfence-{unnamed}");
        }
        let base = gname.clone();
        let mut n = 2;
        while names.contains(&gname) {
            gname = format!("{base}-{n}");
            n += 1;
        }
        names.push(gname.clone());
        let (line, _) = line_col(text, rule_at);
        out.push_str(&format!(
            "\n# {source}:{line}: {}\n[guards.{gname}]\n",
            name.as_deref()
                .map_or("(no name)".to_string(), |n| format!("rule \"{n}\""))
        ));
        if joined {
            out.push_str("# Conditions written one after another were joined with 'or': check that is what you meant.\n");
        }
        out.push_str(&format!("when = {}\n", toml_string(&condition)));
        match action {
            Some(cmd) => {
                let v: Vec<String> = argv(&cmd).iter().map(|a| toml_string(a)).collect();
                out.push_str(&format!("run = [{}]\n", v.join(", ")));
            }
            None => out.push_str("action = \"log\"\n"),
        }
        if !once {
            out.push_str("# sysfence without 'once' acts at every check while the condition holds (never while the last run is still going).\nrepeat = \"1s\"\n");
        }
    }
    if names.is_empty() && errors.is_empty() {
        errors.push(fail(
            0,
            "no rule found (expected: rule \"name\" { la1 >= 10 } run 'command')".into(),
        ));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blog's working configuration (its first rule fixed: the
    /// original misses a brace, which the next test shows).
    const BLOG: &str = "rule \"ApacheStop\" {\nla1 >= 10.00 or la5 >= 6.0\n} run '/etc/init.d/apache2 stop;'\n\nrule \"ApacheStart\" {\nla1 <=2 } run once '/etc/init.d/apache2 start;'\n\nrule \"warning\" { la1 >= 8.00 } run once 'echo \"Load High: BACKUP\" | mail'\n";

    #[test]
    fn the_blog_s_rules_become_guards() {
        assert!(looks_like_sysfence(BLOG));
        let toml = to_toml("/etc/sysfence.conf", BLOG).unwrap();
        assert!(toml.contains("# /etc/sysfence.conf:1: rule \"ApacheStop\"\n[guards.ApacheStop]\nwhen = \"la1 >= 10.00 or la5 >= 6.0\"\nrun = [\"/etc/init.d/apache2\", \"stop\"]\n"), "{toml}");
        assert!(toml.contains("[guards.ApacheStop]") && toml.contains("repeat = \"1s\""));
        assert!(toml.contains("[guards.ApacheStart]\nwhen = \"la1 <=2\"\nrun = [\"/etc/init.d/apache2\", \"start\"]\n\n"), "{toml}");
        assert!(
            toml.contains("run = [\"/bin/sh\", \"-c\", \"echo \\\"Load High: BACKUP\\\" | mail\"]"),
            "{toml}"
        );
        let config = crate::detect::Config::from_texts(vec![("i.toml".into(), toml)]).unwrap();
        let mut errors = Vec::new();
        let guards = crate::daemon::detectors::guards::compile(&config, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(guards.len(), 3);
    }

    #[test]
    fn the_blog_s_broken_example_is_located() {
        let e = to_toml(
            "s.conf",
            "rule \"ApacheStop\" {\nla1 >= 10.00 or la5 >= 6.0\nrun '/etc/init.d/apache2 stop;'\n",
        )
        .unwrap_err();
        assert_eq!(
            e[0],
            ImportError {
                line: 3,
                column: 1,
                message: "'run' inside the condition: a '}' is missing before it".into()
            }
        );
    }

    #[test]
    fn the_man_page_s_rules_import() {
        let man = "if {\n  la15 > 4.0\n  swapfree < 64M\n  memfree < 128M\n} run 'echo \"i wish you were here...\" | sendsms +48ADMINCELLPHONE'\n\nif {\n  swapused >= 256M\n} run '/etc/rc.d/init.d/zope restart'\n\nrule \"high load\" { la1 > 3.0 and la15 > 2.0 } log\nif { la1 >= 1 { la5 < 2 and la15 < 3 } } log once\n";
        let toml = to_toml("m.conf", man).unwrap();
        assert!(
            toml.contains(
                "[guards.sysfence-1]\n# Conditions written one after another were joined with 'or'"
            ),
            "{toml}"
        );
        assert!(
            toml.contains("when = \"la15 > 4.0 or swapfree < 64M or memfree < 128M\""),
            "{toml}"
        );
        assert!(
            toml.contains(
                "[guards.high-load]\nwhen = \"la1 > 3.0 and la15 > 2.0\"\naction = \"log\""
            ),
            "{toml}"
        );
        assert!(
            toml.contains("when = \"la1 >= 1 or (la5 < 2 and la15 < 3)\""),
            "{toml}"
        );
    }

    #[test]
    fn bad_conditions_and_shapes_are_located() {
        let e = to_toml("b.conf", "rule \"x\" { la7 > 1 } log\n").unwrap_err();
        assert_eq!((e[0].line, e[0].column), (1, 10));
        assert!(
            e[0].message.contains("unknown quantity 'la7'"),
            "{:?}",
            e[0]
        );
        let e = to_toml("b.conf", "rule \"x\" { la1 > 1 } reboot\n").unwrap_err();
        assert!(e[0].message.contains("expected 'run' or 'log'"));
        assert!(to_toml("b.conf", "").is_err());
        assert!(!looks_like_sysfence("[guards.x]\nwhen = \"la1 > 1\"\n"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,80}") {
            let _ = looks_like_sysfence(&s);
            let _ = to_toml("p.conf", &s);
        }
    }
}
