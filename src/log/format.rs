//! Log formats: the predefined ones and the format strings users already have
//! (nginx `log_format`, Apache `LogFormat`, GoAccess `--log-format`), all
//! compiled into one token list that [`super::parse`] executes.

use std::fmt;

use super::time::{Strptime, StrptimeError};

/// What a field of the line means to webfence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Client,
    /// A complete timestamp (CLF, ISO 8601, epoch, or a strptime pattern).
    Time,
    /// GoAccess `%d`: the date half of a split timestamp.
    Date,
    /// GoAccess `%t`: the time-of-day half.
    TimeOfDay,
    Request,
    Method,
    /// Path with query (`$request_uri`).
    Target,
    Path,
    Query,
    Protocol,
    Status,
    Bytes,
    Referer,
    UserAgent,
    Host,
    ForwardedFor,
    DurationSecs,
    DurationMillis,
    DurationMicros,
    /// A field webfence does not use (`$remote_user`, `%l`, `%^`, …).
    Ignore,
}

pub(crate) const FIELD_COUNT: usize = Field::Ignore as usize + 1;

impl Field {
    pub fn describe(self) -> &'static str {
        match self {
            Field::Client => "client address",
            Field::Time => "timestamp",
            Field::Date => "date",
            Field::TimeOfDay => "time of day",
            Field::Request => "request line",
            Field::Method => "method",
            Field::Target => "request URI",
            Field::Path => "path",
            Field::Query => "query string",
            Field::Protocol => "protocol",
            Field::Status => "status",
            Field::Bytes => "response size",
            Field::Referer => "referrer",
            Field::UserAgent => "user agent",
            Field::Host => "host",
            Field::ForwardedFor => "X-Forwarded-For",
            Field::DurationSecs | Field::DurationMillis | Field::DurationMicros => "request time",
            Field::Ignore => "field",
        }
    }
}

/// How a `Time` field is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeLayout {
    /// `10/Oct/2000:13:55:36 -0700`
    Clf,
    Iso8601,
    /// Seconds, `$msec`-style seconds with fraction, or milliseconds.
    Epoch,
    Pattern(Strptime),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Literal(Box<[u8]>),
    Field {
        field: Field,
        /// Enclosed in `"…"` or `[…]`: may contain spaces, and (quotes) may
        /// contain backslash-escaped quotes.
        enclosed: Enclosure,
    },
    /// GoAccess `%~`: skip any run of spaces.
    SkipSpaces,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enclosure {
    None,
    Quotes,
    Brackets,
}

/// A compiled text format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextFormat {
    pub name: String,
    pub tokens: Vec<Token>,
    pub time: TimeLayout,
    /// GoAccess split timestamps: date and time-of-day patterns.
    pub date_pattern: Option<Strptime>,
    pub time_pattern: Option<Strptime>,
}

/// The predefined formats, in the order auto-detection prefers them when
/// several parse a line (most specific first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// JSON lines (nginx `escape=json`, Caddy).
    Json,
    /// Apache `%v:%p %h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i"`.
    #[value(name = "vhost_combined")]
    VhostCombined,
    /// The virtual host first, without a port (nginx `$host
    /// $remote_addr …`, Apache `%v %h …`), then combined, then
    /// `"$http_x_forwarded_for"`.
    #[value(name = "host_main")]
    HostMain,
    /// The virtual host first, without a port, then combined.
    #[value(name = "host_combined")]
    HostCombined,
    /// nginx `main` with `"$http_x_forwarded_for"` at the end.
    Main,
    /// NCSA combined (nginx and Apache default).
    Combined,
    /// NCSA common.
    Common,
    /// nginx's error log.
    #[value(name = "nginx_error")]
    NginxError,
    /// Apache's error log (2.2 and 2.4).
    #[value(name = "apache_error")]
    ApacheError,
}

impl Preset {
    pub const ALL: [Preset; 9] = [
        Preset::Json,
        Preset::VhostCombined,
        Preset::HostMain,
        Preset::HostCombined,
        Preset::Main,
        Preset::Combined,
        Preset::Common,
        Preset::NginxError,
        Preset::ApacheError,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Json => "json",
            Preset::VhostCombined => "vhost_combined",
            Preset::HostMain => "host_main",
            Preset::HostCombined => "host_combined",
            Preset::Main => "main",
            Preset::Combined => "combined",
            Preset::Common => "common",
            Preset::NginxError => "nginx_error",
            Preset::ApacheError => "apache_error",
        }
    }

    /// The text format behind a preset; `None` for JSON.
    pub fn text_format(self) -> Option<TextFormat> {
        let (dialect, spec) = match self {
            Preset::Json | Preset::NginxError | Preset::ApacheError => return None,
            Preset::VhostCombined => (
                Dialect::Apache,
                r#"%v:%p %h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i""#,
            ),
            Preset::HostMain => (
                Dialect::Nginx,
                r#"$host $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for""#,
            ),
            Preset::HostCombined => (
                Dialect::Apache,
                r#"%v %h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i""#,
            ),
            Preset::Main => (
                Dialect::Nginx,
                r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for""#,
            ),
            Preset::Combined => (
                Dialect::Apache,
                r#"%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i""#,
            ),
            Preset::Common => (Dialect::Apache, r#"%h %l %u %t "%r" %>s %b"#),
        };
        let mut f = compile(dialect, spec, None, None).ok()?;
        f.name = self.name().to_string();
        Some(f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Nginx,
    Apache,
    GoAccess,
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dialect::Nginx => "nginx log_format",
            Dialect::Apache => "Apache LogFormat",
            Dialect::GoAccess => "GoAccess log-format",
        })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("{dialect} '{spec}': {what}")]
    Invalid {
        dialect: Dialect,
        spec: String,
        what: String,
    },
    #[error(transparent)]
    Strptime(#[from] StrptimeError),
}

fn invalid(dialect: Dialect, spec: &str, what: impl Into<String>) -> FormatError {
    FormatError::Invalid {
        dialect,
        spec: spec.to_string(),
        what: what.into(),
    }
}

/// Compiles a format string as a user would paste it from their server's or
/// GoAccess's configuration.
pub fn compile(
    dialect: Dialect,
    spec: &str,
    date_format: Option<&str>,
    time_format: Option<&str>,
) -> Result<TextFormat, FormatError> {
    let body = strip_directive(dialect, spec);
    let mut b = Builder::default();
    let mut time = TimeLayout::Clf;
    let (mut date_pattern, mut time_pattern) = (None, None);
    match dialect {
        Dialect::Nginx => compile_nginx(&body, &mut b, &mut time),
        Dialect::Apache => {
            compile_apache(&body, &mut b, &mut time).map_err(|w| invalid(dialect, spec, w))?
        }
        Dialect::GoAccess => {
            if let Some(preset) = goaccess_preset(&body) {
                let mut f = preset
                    .text_format()
                    .ok_or_else(|| invalid(dialect, spec, "not a text format"))?;
                f.name = format!("goaccess {body}");
                return Ok(f);
            }
            let date = date_format.unwrap_or("%d/%b/%Y");
            let tod = time_format.unwrap_or("%H:%M:%S");
            compile_goaccess(&body, &mut b).map_err(|w| invalid(dialect, spec, w))?;
            if b.has(Field::Time) {
                time = TimeLayout::Pattern(Strptime::new(&format!("{date} {tod}"))?);
            }
            date_pattern = Some(Strptime::new(date)?);
            time_pattern = Some(Strptime::new(tod)?);
        }
    }
    let tokens = b.finish().map_err(|w| invalid(dialect, spec, w))?;
    let has = |f: Field| {
        tokens
            .iter()
            .any(|t| matches!(t, Token::Field { field, .. } if *field == f))
    };
    if !has(Field::Client) {
        return Err(invalid(
            dialect,
            spec,
            "it logs no client address (nginx $remote_addr, Apache %h or %a, GoAccess %h)",
        ));
    }
    let has_timestamp = has(Field::Time) || (has(Field::Date) && has(Field::TimeOfDay));
    if !has_timestamp {
        return Err(invalid(
            dialect,
            spec,
            "it logs no timestamp (nginx $time_local, $time_iso8601 or $msec, Apache %t, GoAccess %d and %t)",
        ));
    }
    if !has(Field::Status) {
        return Err(invalid(
            dialect,
            spec,
            "it logs no status (nginx $status, Apache %>s, GoAccess %s)",
        ));
    }
    Ok(TextFormat {
        name: format!("{dialect} '{body}'"),
        tokens,
        time,
        date_pattern,
        time_pattern,
    })
}

/// Accepts the whole directive as pasted (`log_format main '…' '…';`,
/// `LogFormat "…" combined`) as well as the bare format string.
fn strip_directive(dialect: Dialect, spec: &str) -> String {
    let trimmed = spec.trim();
    match dialect {
        Dialect::Nginx if trimmed.starts_with("log_format") => {
            // Concatenate the quoted pieces, as nginx does.
            let mut out = String::new();
            let mut chars = trimmed.chars();
            while let Some(c) = chars.next() {
                if c == '\'' || c == '"' {
                    for d in chars.by_ref() {
                        if d == c {
                            break;
                        }
                        out.push(d);
                    }
                }
            }
            out
        }
        Dialect::Apache => {
            let s = trimmed
                .strip_prefix("LogFormat")
                .map(str::trim)
                .unwrap_or(trimmed);
            let s = match s.strip_prefix('"') {
                Some(inner) if s.len() > 1 => match inner.rfind('"') {
                    Some(end) => &inner[..end],
                    None => inner,
                },
                _ => s,
            };
            s.replace("\\\"", "\"")
        }
        _ => trimmed.to_string(),
    }
}

fn goaccess_preset(name: &str) -> Option<Preset> {
    match name.to_ascii_uppercase().as_str() {
        "COMBINED" => Some(Preset::Combined),
        "COMMON" => Some(Preset::Common),
        "VCOMBINED" => Some(Preset::VhostCombined),
        _ => None,
    }
}

#[derive(Default)]
struct Builder {
    tokens: Vec<Token>,
}

impl Builder {
    fn literal(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Some(Token::Literal(prev)) = self.tokens.last_mut() {
            let mut joined = prev.to_vec();
            joined.extend_from_slice(bytes);
            *prev = joined.into_boxed_slice();
        } else {
            self.tokens.push(Token::Literal(bytes.into()));
        }
    }

    fn field(&mut self, field: Field) {
        self.tokens.push(Token::Field {
            field,
            enclosed: Enclosure::None,
        });
    }

    fn has(&self, f: Field) -> bool {
        self.tokens
            .iter()
            .any(|t| matches!(t, Token::Field { field, .. } if *field == f))
    }

    /// Decides each field's enclosure and rejects layouts no parser could
    /// split (two fields with nothing between them).
    fn finish(mut self) -> Result<Vec<Token>, String> {
        let n = self.tokens.len();
        for i in 0..n {
            let before = match i.checked_sub(1).map(|j| &self.tokens[j]) {
                Some(Token::Literal(l)) => l.last().copied(),
                _ => None,
            };
            let after = match self.tokens.get(i + 1) {
                Some(Token::Literal(l)) => l.first().copied(),
                _ => None,
            };
            let next_is_field = matches!(self.tokens.get(i + 1), Some(Token::Field { .. }));
            if let Token::Field { field, enclosed } = &mut self.tokens[i] {
                if next_is_field {
                    return Err(format!(
                        "the {} field is followed directly by another field; a separator is needed",
                        field.describe()
                    ));
                }
                *enclosed = match (before, after) {
                    (Some(b'"'), Some(b'"')) => Enclosure::Quotes,
                    (Some(b'['), Some(b']')) => Enclosure::Brackets,
                    _ => Enclosure::None,
                };
            }
        }
        if n == 0 {
            return Err("it is empty".into());
        }
        Ok(self.tokens)
    }
}

fn nginx_variable(name: &str, time: &mut TimeLayout) -> Field {
    match name {
        "remote_addr" | "realip_remote_addr" | "binary_remote_addr_text" => Field::Client,
        "time_local" => {
            *time = TimeLayout::Clf;
            Field::Time
        }
        "time_iso8601" => {
            *time = TimeLayout::Iso8601;
            Field::Time
        }
        "msec" => {
            *time = TimeLayout::Epoch;
            Field::Time
        }
        "request" => Field::Request,
        "request_method" => Field::Method,
        "request_uri" => Field::Target,
        "uri" | "document_uri" => Field::Path,
        "args" | "query_string" => Field::Query,
        "server_protocol" => Field::Protocol,
        "status" => Field::Status,
        "body_bytes_sent" | "bytes_sent" => Field::Bytes,
        "http_referer" => Field::Referer,
        "http_user_agent" => Field::UserAgent,
        "host" | "server_name" | "http_host" => Field::Host,
        "http_x_forwarded_for" | "proxy_add_x_forwarded_for" => Field::ForwardedFor,
        "request_time" => Field::DurationSecs,
        _ => Field::Ignore,
    }
}

fn compile_nginx(spec: &str, b: &mut Builder, time: &mut TimeLayout) {
    let s = spec.as_bytes();
    let mut i = 0;
    let mut lit = Vec::new();
    while i < s.len() {
        if s[i] == b'$' {
            let (name, next) = if s.get(i + 1) == Some(&b'{') {
                match s[i + 2..].iter().position(|&c| c == b'}') {
                    Some(end) => (&spec[i + 2..i + 2 + end], i + 3 + end),
                    None => ("", i + 1),
                }
            } else {
                let len = s[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                    .count();
                (&spec[i + 1..i + 1 + len], i + 1 + len)
            };
            if !name.is_empty() {
                b.literal(&lit);
                lit.clear();
                b.field(nginx_variable(name, time));
                i = next;
                continue;
            }
        }
        lit.push(s[i]);
        i += 1;
    }
    b.literal(&lit);
}

fn apache_header(name: &str) -> Field {
    match name.to_ascii_lowercase().as_str() {
        "referer" | "referrer" => Field::Referer,
        "user-agent" => Field::UserAgent,
        "x-forwarded-for" => Field::ForwardedFor,
        "host" => Field::Host,
        _ => Field::Ignore,
    }
}

/// Walks a `%`-directive format, the syntax Apache and GoAccess share: `%%`
/// is a literal percent, `%{arg}X` passes an argument, and Apache's
/// modifiers (`%>s`, `%!200u`) are skipped. Literal text between directives
/// goes to the builder; each directive goes to `directive`.
fn compile_percent(
    spec: &str,
    b: &mut Builder,
    mut directive: impl FnMut(&mut Builder, u8, Option<&str>) -> Result<(), String>,
) -> Result<(), String> {
    let s = spec.as_bytes();
    let mut i = 0;
    let mut lit = Vec::new();
    while i < s.len() {
        if s[i] != b'%' {
            lit.push(s[i]);
            i += 1;
            continue;
        }
        i += 1;
        while i < s.len() && (b"<>!,".contains(&s[i]) || s[i].is_ascii_digit()) {
            i += 1;
        }
        let mut arg = None;
        if s.get(i) == Some(&b'{') {
            let end = s[i..]
                .iter()
                .position(|&c| c == b'}')
                .ok_or_else(|| format!("unclosed '{{' at byte {i}"))?;
            arg = Some(&spec[i + 1..i + end]);
            i += end + 1;
        }
        let Some(&d) = s.get(i) else {
            return Err("it ends with a lone '%'".into());
        };
        i += 1;
        if d == b'%' {
            lit.push(b'%');
            continue;
        }
        b.literal(&lit);
        lit.clear();
        directive(b, d, arg)?;
    }
    b.literal(&lit);
    Ok(())
}

fn compile_apache(spec: &str, b: &mut Builder, time: &mut TimeLayout) -> Result<(), String> {
    compile_percent(spec, b, |b, d, arg| {
        let field = match (d, arg) {
            (b'h' | b'a', _) => Field::Client,
            (b't', None) => {
                // `%t` is the bracketed CLF time.
                b.literal(b"[");
                b.field(Field::Time);
                b.literal(b"]");
                return Ok(());
            }
            (b't', Some(fmt)) => {
                *time = match fmt {
                    "sec" | "msec" => TimeLayout::Epoch,
                    _ => TimeLayout::Pattern(Strptime::new(fmt).map_err(|e| e.to_string())?),
                };
                Field::Time
            }
            (b'r', _) => Field::Request,
            (b'm', _) => Field::Method,
            (b'U', _) => Field::Path,
            (b'q', _) => Field::Query,
            (b'H', _) => Field::Protocol,
            (b's', _) => Field::Status,
            (b'b' | b'B' | b'O', _) => Field::Bytes,
            (b'v' | b'V', _) => Field::Host,
            (b'D', _) => Field::DurationMicros,
            (b'T', None) => Field::DurationSecs,
            (b'i', Some(h)) => apache_header(h),
            (c, _) if c.is_ascii_alphabetic() => Field::Ignore,
            (c, _) => return Err(format!("unknown directive '%{}'", c as char)),
        };
        b.field(field);
        Ok(())
    })
}

fn compile_goaccess(spec: &str, b: &mut Builder) -> Result<(), String> {
    compile_percent(spec, b, |b, d, _| {
        let field = match d {
            b'~' => {
                b.tokens.push(Token::SkipSpaces);
                return Ok(());
            }
            b'h' => Field::Client,
            b'd' => Field::Date,
            b't' => Field::TimeOfDay,
            b'x' => Field::Time,
            b'r' => Field::Request,
            b'm' => Field::Method,
            b'U' => Field::Target,
            b'q' => Field::Query,
            b'H' => Field::Protocol,
            b's' => Field::Status,
            b'b' => Field::Bytes,
            b'R' => Field::Referer,
            b'u' => Field::UserAgent,
            b'v' => Field::Host,
            b'T' => Field::DurationSecs,
            b'L' => Field::DurationMillis,
            b'D' => Field::DurationMicros,
            b'^' | b'e' | b'C' | b'K' | b'k' | b'M' | b'n' => Field::Ignore,
            c => return Err(format!("unknown specifier '%{}'", c as char)),
        };
        b.field(field);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(f: &TextFormat) -> Vec<Field> {
        f.tokens
            .iter()
            .filter_map(|t| match t {
                Token::Field { field, .. } => Some(*field),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn presets_compile() {
        for p in Preset::ALL {
            let text = !matches!(p, Preset::Json | Preset::NginxError | Preset::ApacheError);
            if text {
                let f = p.text_format().expect("preset compiles");
                assert_eq!(f.name, p.name());
            }
        }
    }

    #[test]
    fn nginx_and_apache_combined_compile_to_the_same_fields() {
        let n = compile(
            Dialect::Nginx,
            r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#,
            None,
            None,
        )
        .unwrap();
        let a = compile(
            Dialect::Apache,
            r#"%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-agent}i\""#,
            None,
            None,
        )
        .unwrap();
        let g = compile(
            Dialect::GoAccess,
            r#"%h %^[%d:%t %^] "%r" %s %b "%R" "%u""#,
            Some("%d/%b/%Y"),
            Some("%H:%M:%S"),
        )
        .unwrap();
        let want_tail = [
            Field::Request,
            Field::Status,
            Field::Bytes,
            Field::Referer,
            Field::UserAgent,
        ];
        for f in [&n, &a, &g] {
            let fs = fields(f);
            assert_eq!(fs[0], Field::Client);
            assert_eq!(&fs[fs.len() - 5..], &want_tail);
        }
    }

    #[test]
    fn pasted_directives_are_accepted() {
        let n = compile(
            Dialect::Nginx,
            "log_format main '$remote_addr - $remote_user [$time_local] \"$request\" '\n    '$status $body_bytes_sent';",
            None,
            None,
        )
        .unwrap();
        assert!(n.name.contains("$status $body_bytes_sent"));
        let a = compile(
            Dialect::Apache,
            r#"LogFormat "%h %l %u %t \"%r\" %>s %b" common"#,
            None,
            None,
        )
        .unwrap();
        assert_eq!(fields(&a)[5], Field::Status);
    }

    #[test]
    fn unknown_variables_are_skipped_not_fatal() {
        let f = compile(
            Dialect::Nginx,
            "$remote_addr $connection [$time_local] \"$request\" $status $ssl_cipher ${pipe}",
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            fields(&f).iter().filter(|f| **f == Field::Ignore).count(),
            3
        );
    }

    #[test]
    fn enclosures_are_detected() {
        let f = Preset::Combined.text_format().unwrap();
        let enc: Vec<_> = f
            .tokens
            .iter()
            .filter_map(|t| match t {
                Token::Field { enclosed, .. } => Some(*enclosed),
                _ => None,
            })
            .collect();
        assert_eq!(enc[3], Enclosure::Brackets);
        assert_eq!(enc[4], Enclosure::Quotes);
        assert_eq!(enc[0], Enclosure::None);
    }

    #[test]
    fn errors_name_the_problem() {
        let e = compile(Dialect::Nginx, "$request $status", None, None).unwrap_err();
        assert!(e.to_string().contains("no client address"), "{e}");
        let e = compile(
            Dialect::Nginx,
            "$remote_addr$status [$time_local]",
            None,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("followed directly"), "{e}");
        let e = compile(Dialect::GoAccess, "%h %Z", None, None).unwrap_err();
        assert!(e.to_string().contains("'%Z'"), "{e}");
        let e = compile(Dialect::Apache, "%h %{Referer", None, None).unwrap_err();
        assert!(e.to_string().contains("unclosed"), "{e}");
        let e = compile(Dialect::GoAccess, "%h [%d:%t] %s", Some("%Q"), None).unwrap_err();
        assert!(e.to_string().contains("%Q"), "{e}");
    }
}
