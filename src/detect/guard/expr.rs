//! A guard's condition: `la1 >= 10 or la5 >= 6`, sysfence's syntax and
//! names plus a few of webfence's own. Parsed once into a small tree of
//! comparisons; evaluated every check against a [`Vars`] sample.
//!
//! Hand-written (a recursive-descent parser of ~200 lines) rather than a
//! parser crate: the grammar is five rules, and errors must point at the
//! column inside the quoted TOML string.

use std::fmt;

/// A quantity a condition can compare.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Var {
    La1,
    La5,
    La15,
    /// MemFree, bytes.
    MemFree,
    /// MemTotal − MemAvailable, bytes (what processes hold).
    MemUsed,
    /// MemAvailable, bytes: what "free" should mean today.
    MemAvail,
    SwapFree,
    SwapUsed,
    /// Pressure stall information, `some avg10`, percent.
    CpuPressure,
    IoPressure,
    MemPressure,
    /// Running processes whose name (comm) is this.
    Procs(String),
    /// Connections to this machine's listening ports (established and
    /// half-open).
    Conns,
    /// Half-open connections (SYN_RECV).
    ConnsSyn,
    /// The busiest client's connections.
    ConnsMaxIp,
    /// Requests per second over the last 10 s of the followed logs.
    ReqRate,
    /// 5xx responses per second over the last 10 s.
    Status5xxRate,
    /// Seconds the log follower is behind (its backlog at the current
    /// reading speed; 0 when caught up).
    Lag,
}

/// Every name a condition may use, for error messages.
pub const NAMES: &[&str] = &[
    "la1",
    "la5",
    "la15",
    "memfree",
    "memused",
    "memavail",
    "swapfree",
    "swapused",
    "cpu_pressure",
    "io_pressure",
    "mem_pressure",
    "procs(\"name\")",
    "conns",
    "conns_syn",
    "conns_max_ip",
    "req_rate",
    "status_5xx_rate",
    "lag",
];

impl Var {
    fn from_name(name: &str) -> Option<Var> {
        Some(match name {
            "la1" => Var::La1,
            "la5" => Var::La5,
            "la15" => Var::La15,
            "memfree" => Var::MemFree,
            "memused" => Var::MemUsed,
            "memavail" => Var::MemAvail,
            "swapfree" => Var::SwapFree,
            "swapused" => Var::SwapUsed,
            "cpu_pressure" => Var::CpuPressure,
            "io_pressure" => Var::IoPressure,
            "mem_pressure" => Var::MemPressure,
            "conns" => Var::Conns,
            "conns_syn" => Var::ConnsSyn,
            "conns_max_ip" => Var::ConnsMaxIp,
            "req_rate" => Var::ReqRate,
            "status_5xx_rate" => Var::Status5xxRate,
            "lag" => Var::Lag,
            _ => return None,
        })
    }

    /// The name as written, and as the environment variable's suffix.
    pub fn name(&self) -> String {
        match self {
            Var::La1 => "la1".into(),
            Var::La5 => "la5".into(),
            Var::La15 => "la15".into(),
            Var::MemFree => "memfree".into(),
            Var::MemUsed => "memused".into(),
            Var::MemAvail => "memavail".into(),
            Var::SwapFree => "swapfree".into(),
            Var::SwapUsed => "swapused".into(),
            Var::CpuPressure => "cpu_pressure".into(),
            Var::IoPressure => "io_pressure".into(),
            Var::MemPressure => "mem_pressure".into(),
            Var::Procs(n) => format!("procs(\"{n}\")"),
            Var::Conns => "conns".into(),
            Var::ConnsSyn => "conns_syn".into(),
            Var::ConnsMaxIp => "conns_max_ip".into(),
            Var::ReqRate => "req_rate".into(),
            Var::Status5xxRate => "status_5xx_rate".into(),
            Var::Lag => "lag".into(),
        }
    }

    /// `WEBFENCE_LA1`, `WEBFENCE_PROCS_NGINX`: how an action sees it.
    pub fn env_name(&self) -> String {
        let base = match self {
            Var::Procs(n) => format!("procs_{n}"),
            other => other.name(),
        };
        let clean: String = base
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("WEBFENCE_{clean}")
    }

    /// Whether a value needs the connection table read.
    pub fn needs_conns(&self) -> bool {
        matches!(self, Var::Conns | Var::ConnsSyn | Var::ConnsMaxIp)
    }
}

/// Where values come from: a sample of the machine at one check.
pub trait Vars {
    /// None when the machine cannot tell (no PSI in this kernel): a
    /// comparison with it is false.
    fn get(&self, var: &Var) -> Option<f64>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
    Ne,
}

impl Cmp {
    fn symbol(self) -> &'static str {
        match self {
            Cmp::Ge => ">=",
            Cmp::Gt => ">",
            Cmp::Le => "<=",
            Cmp::Lt => "<",
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Var(Var),
    Const(f64),
}

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    Cmp(Operand, Cmp, Operand),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
}

/// A parse error, with the byte column (0-based) in the condition text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column + 1, self.message)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Ident(String),
    Str(String),
    Op(Cmp),
    Open,
    Close,
    And,
    Or,
    Not,
}

fn lex(text: &str) -> Result<Vec<(usize, Tok)>, ExprError> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |column, message: String| Err(ExprError { column, message });
    while i < b.len() {
        let c = b[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' | b'{' => {
                out.push((i, Tok::Open));
                i += 1;
            }
            b')' | b'}' => {
                out.push((i, Tok::Close));
                i += 1;
            }
            b'>' | b'<' | b'=' | b'!' => {
                let two = b.get(i + 1) == Some(&b'=');
                let op = match (c, two) {
                    (b'>', true) => Cmp::Ge,
                    (b'>', false) => Cmp::Gt,
                    (b'<', true) => Cmp::Le,
                    (b'<', false) => Cmp::Lt,
                    (b'=', true) => Cmp::Eq,
                    (b'!', true) => Cmp::Ne,
                    _ => return err(i, format!("unexpected '{}'", c as char)),
                };
                out.push((i, Tok::Op(op)));
                i += if two { 2 } else { 1 };
            }
            b'&' if b.get(i + 1) == Some(&b'&') => {
                out.push((i, Tok::And));
                i += 2;
            }
            b'|' if b.get(i + 1) == Some(&b'|') => {
                out.push((i, Tok::Or));
                i += 2;
            }
            b'"' | b'\'' => {
                let end = b[i + 1..]
                    .iter()
                    .position(|&x| x == c)
                    .map(|p| i + 1 + p)
                    .ok_or(ExprError {
                        column: i,
                        message: "this quote is never closed".into(),
                    })?;
                out.push((i, Tok::Str(text[i + 1..end].to_string())));
                i = end + 1;
            }
            b'0'..=b'9' | b'.' => {
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                    i += 1;
                }
                let n: f64 = text[start..i].parse().map_err(|_| ExprError {
                    column: start,
                    message: format!("'{}' is not a number", &text[start..i]),
                })?;
                // sysfence writes sizes as 256M; K, M and G are binary.
                let unit_end = i + b[i..]
                    .iter()
                    .take_while(|x| x.is_ascii_alphabetic() || **x == b'%')
                    .count();
                let unit = &text[i..unit_end];
                let mult = match unit.to_ascii_lowercase().as_str() {
                    "" | "%" => 1.0,
                    "k" | "kb" | "kib" => 1024.0,
                    "m" | "mb" | "mib" => 1024.0 * 1024.0,
                    "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
                    "s" => 1.0,
                    _ => {
                        return err(
                            i,
                            format!("unknown unit '{unit}' after {n} (use K, M, G or %)"),
                        );
                    }
                };
                out.push((start, Tok::Num(n * mult)));
                i = unit_end;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let word = &text[start..i];
                out.push((
                    start,
                    match word.to_ascii_lowercase().as_str() {
                        "and" => Tok::And,
                        "or" => Tok::Or,
                        "not" => Tok::Not,
                        _ => Tok::Ident(word.to_string()),
                    },
                ));
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return err(i, format!("unexpected '{ch}'"));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn column(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |(c, _)| *c)
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, ExprError> {
        Err(ExprError {
            column: self.column(),
            message: message.into(),
        })
    }

    fn or(&mut self) -> Result<Cond, ExprError> {
        let mut parts = vec![self.and()?];
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Cond::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Cond, ExprError> {
        let mut parts = vec![self.not()?];
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            parts.push(self.not()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Cond::And(parts)
        })
    }

    fn not(&mut self) -> Result<Cond, ExprError> {
        match self.peek() {
            Some(Tok::Not) => {
                self.pos += 1;
                Ok(Cond::Not(Box::new(self.not()?)))
            }
            Some(Tok::Open) => {
                self.pos += 1;
                let inner = self.or()?;
                if self.peek() != Some(&Tok::Close) {
                    return self.fail("expected ')' here");
                }
                self.pos += 1;
                Ok(inner)
            }
            _ => self.comparison(),
        }
    }

    fn comparison(&mut self) -> Result<Cond, ExprError> {
        let left = self.operand()?;
        let op = match self.peek() {
            Some(Tok::Op(op)) => *op,
            _ => {
                return self.fail(format!(
                    "expected a comparison (>=, >, <=, <, ==, !=) after {}",
                    show(&left)
                ));
            }
        };
        self.pos += 1;
        let right = self.operand()?;
        if matches!((&left, &right), (Operand::Const(_), Operand::Const(_))) {
            return self.fail("a comparison needs a quantity such as la1 on one side");
        }
        Ok(Cond::Cmp(left, op, right))
    }

    fn operand(&mut self) -> Result<Operand, ExprError> {
        let column = self.column();
        match self.toks.get(self.pos).map(|(_, t)| t.clone()) {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Ok(Operand::Const(n))
            }
            Some(Tok::Ident(name)) => {
                self.pos += 1;
                let lower = name.to_ascii_lowercase();
                if lower == "procs" {
                    let arg = match (self.toks.get(self.pos), self.toks.get(self.pos + 1)) {
                        (Some((_, Tok::Open)), Some((_, Tok::Str(s)))) => s.clone(),
                        _ => return self.fail("procs needs a process name: procs(\"nginx\")"),
                    };
                    self.pos += 2;
                    if self.peek() != Some(&Tok::Close) {
                        return self.fail("expected ')' after the process name");
                    }
                    self.pos += 1;
                    if arg.is_empty() || arg.len() > 15 || arg.contains('/') {
                        return Err(ExprError {
                            column,
                            message: format!(
                                "invalid process name '{arg}': the kernel's names are 1 to 15 characters, without '/'"
                            ),
                        });
                    }
                    return Ok(Operand::Var(Var::Procs(arg)));
                }
                match Var::from_name(&lower) {
                    Some(v) => Ok(Operand::Var(v)),
                    None => {
                        let plain: Vec<&str> = NAMES.to_vec();
                        let hint = crate::detect::config::nearest(&lower, &plain)
                            .map(|n| format!("did you mean '{n}'? "))
                            .unwrap_or_default();
                        Err(ExprError {
                            column,
                            message: format!(
                                "unknown quantity '{name}' ({hint}known: {})",
                                NAMES.join(", ")
                            ),
                        })
                    }
                }
            }
            Some(_) => self.fail("expected a quantity such as la1, or a number"),
            None => self.fail("the condition ends too early: expected a quantity or a number"),
        }
    }
}

fn show(o: &Operand) -> String {
    match o {
        Operand::Var(v) => v.name(),
        Operand::Const(n) => format!("{n}"),
    }
}

impl Cond {
    /// Parses a condition; errors carry the column inside `text`.
    pub fn parse(text: &str) -> Result<Cond, ExprError> {
        let toks = lex(text)?;
        if toks.is_empty() {
            return Err(ExprError {
                column: 0,
                message: "the condition is empty".into(),
            });
        }
        let mut p = Parser {
            toks,
            pos: 0,
            end: text.len(),
        };
        let cond = p.or()?;
        if p.pos < p.toks.len() {
            return p.fail("unexpected text after the condition (missing 'and' or 'or'?)");
        }
        Ok(cond)
    }

    /// True when every quantity it needs is known and the logic holds.
    pub fn eval(&self, vars: &dyn Vars) -> bool {
        match self {
            Cond::Cmp(l, op, r) => {
                let value = |o: &Operand| match o {
                    Operand::Var(v) => vars.get(v),
                    Operand::Const(n) => Some(*n),
                };
                let (Some(a), Some(b)) = (value(l), value(r)) else {
                    return false;
                };
                match op {
                    Cmp::Ge => a >= b,
                    Cmp::Gt => a > b,
                    Cmp::Le => a <= b,
                    Cmp::Lt => a < b,
                    Cmp::Eq => a == b,
                    Cmp::Ne => a != b,
                }
            }
            Cond::And(parts) => parts.iter().all(|c| c.eval(vars)),
            Cond::Or(parts) => parts.iter().any(|c| c.eval(vars)),
            Cond::Not(c) => !c.eval(vars),
        }
    }

    /// The quantities named, in order of appearance, each once.
    pub fn vars(&self) -> Vec<Var> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect(&self, out: &mut Vec<Var>) {
        match self {
            Cond::Cmp(l, _, r) => {
                for o in [l, r] {
                    if let Operand::Var(v) = o {
                        if !out.contains(v) {
                            out.push(v.clone());
                        }
                    }
                }
            }
            Cond::And(p) | Cond::Or(p) => p.iter().for_each(|c| c.collect(out)),
            Cond::Not(c) => c.collect(out),
        }
    }
}

impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cond::Cmp(l, op, r) => write!(f, "{} {} {}", show(l), op.symbol(), show(r)),
            Cond::And(p) | Cond::Or(p) => {
                let word = if matches!(self, Cond::And(_)) {
                    " and "
                } else {
                    " or "
                };
                for (i, c) in p.iter().enumerate() {
                    if i > 0 {
                        f.write_str(word)?;
                    }
                    if matches!(c, Cond::And(_) | Cond::Or(_)) {
                        write!(f, "({c})")?;
                    } else {
                        write!(f, "{c}")?;
                    }
                }
                Ok(())
            }
            Cond::Not(c) => write!(f, "not ({c})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fake(HashMap<Var, f64>);
    impl Vars for Fake {
        fn get(&self, var: &Var) -> Option<f64> {
            self.0.get(var).copied()
        }
    }

    fn vars(pairs: &[(Var, f64)]) -> Fake {
        Fake(pairs.iter().cloned().collect())
    }

    #[test]
    fn sysfence_conditions_parse_and_evaluate() {
        let c = Cond::parse("la1 >= 10.00 or la5 >= 6.0").unwrap();
        assert!(c.eval(&vars(&[(Var::La1, 10.0), (Var::La5, 1.0)])));
        assert!(c.eval(&vars(&[(Var::La1, 1.0), (Var::La5, 6.0)])));
        assert!(!c.eval(&vars(&[(Var::La1, 9.99), (Var::La5, 5.0)])));
        let c = Cond::parse("swapused >= 256M").unwrap();
        assert!(c.eval(&vars(&[(Var::SwapUsed, 256.0 * 1024.0 * 1024.0)])));
        assert!(!c.eval(&vars(&[(Var::SwapUsed, 255.0 * 1024.0 * 1024.0)])));
    }

    #[test]
    fn and_binds_tighter_than_or_and_parentheses_and_not_work() {
        let c = Cond::parse("la1 > 1 or la5 > 1 and la15 > 1").unwrap();
        assert!(c.eval(&vars(&[(Var::La1, 2.0), (Var::La5, 0.0), (Var::La15, 0.0)])));
        let c = Cond::parse("(la1 > 1 or la5 > 1) and la15 > 1").unwrap();
        assert!(!c.eval(&vars(&[(Var::La1, 2.0), (Var::La5, 0.0), (Var::La15, 0.0)])));
        let c = Cond::parse("not la1 > 1").unwrap();
        assert!(c.eval(&vars(&[(Var::La1, 0.5)])));
        let c = Cond::parse("{ la1 > 1 && memavail < 1G }").unwrap();
        assert!(c.eval(&vars(&[(Var::La1, 2.0), (Var::MemAvail, 1.0)])));
    }

    #[test]
    fn procs_and_unknown_values() {
        let c = Cond::parse("procs(\"apache2\") > 150").unwrap();
        assert_eq!(c.vars(), vec![Var::Procs("apache2".into())]);
        assert!(c.eval(&vars(&[(Var::Procs("apache2".into()), 151.0)])));
        // No PSI in this kernel: the comparison is false either way.
        let c = Cond::parse("cpu_pressure > 50").unwrap();
        assert!(!c.eval(&vars(&[])));
        assert_eq!(
            Var::Procs("php-fpm7.4".into()).env_name(),
            "WEBFENCE_PROCS_PHP_FPM7_4"
        );
    }

    #[test]
    fn errors_name_the_column_and_the_known_names() {
        let e = Cond::parse("la1 >= 10 or la6 >= 6").unwrap_err();
        assert_eq!(e.column, 13);
        assert!(
            e.message.contains("unknown quantity 'la6'"),
            "{}",
            e.message
        );
        assert!(e.message.contains("did you mean 'la"), "{}", e.message);
        let e = Cond::parse("la1 >= ").unwrap_err();
        assert_eq!(e.column, 7);
        let e = Cond::parse("la1 10").unwrap_err();
        assert!(e.message.contains("expected a comparison"), "{}", e.message);
        let e = Cond::parse("(la1 > 1").unwrap_err();
        assert!(e.message.contains("expected ')'"));
        let e = Cond::parse("memfree < 10X").unwrap_err();
        assert!(e.message.contains("unknown unit 'X'"), "{}", e.message);
        assert!(Cond::parse("1 > 2").is_err());
        assert!(Cond::parse("").is_err());
        assert!(Cond::parse("la1 > 1 la5 > 2").is_err());
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "la1 >= 10 or la5 >= 6",
            "(la1 > 1 or la5 > 1) and not (memavail < 1024)",
            "procs(\"nginx\") > 3",
        ] {
            let c = Cond::parse(text).unwrap();
            assert_eq!(Cond::parse(&c.to_string()).unwrap(), c, "{text} → {c}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,40}") {
            let _ = Cond::parse(&s);
        }
    }
}
