//! Where the fields of a line in the NCSA combined family lie, found by
//! code written for that family instead of by executing the format's
//! tokens.
//!
//! Combined, common, nginx `main` and their host-first variants are what
//! most servers write, and finding the fields is about half of parsing a
//! line: the general interpreter spends most of that on dispatch. This
//! finder only handles lines it is sure of. At the first thing it is not
//! sure of (an escaped quote, a list of hops, a literal out of place), it
//! returns `None` and the general interpreter reads the line, so errors
//! and unusual lines come out exactly as before. Both paths hand the same
//! spans to the same code that builds the request (the property test in
//! `parse.rs` holds them to it).

use super::format::{Enclosure, FIELD_COUNT, Field, TextFormat, TimeLayout, Token};
use super::scan::{find_near, starts_with_short};

/// Each field's byte range in the line; `ABSENT` for fields the format
/// does not have.
pub(crate) type Spans = [(usize, usize); FIELD_COUNT];
pub(crate) const ABSENT: (usize, usize) = (usize::MAX, 0);

/// Which member of the family a format is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    /// `$host ` or `%v ` before the client.
    host_first: bool,
    /// nginx writes ` - $remote_user`, Apache ` %l %u`.
    nginx_user: bool,
    /// The quoted fields after the size: none (common), referrer and agent
    /// (combined), and X-Forwarded-For (main).
    tail: &'static [Field],
}

const TAILS: [&[Field]; 3] = [
    &[],
    &[Field::Referer, Field::UserAgent],
    &[Field::Referer, Field::UserAgent, Field::ForwardedFor],
];

impl Shape {
    /// The member of the family `f` is, if it is one.
    pub(crate) fn of(f: &TextFormat) -> Option<Shape> {
        if f.time != TimeLayout::Clf {
            return None;
        }
        [false, true]
            .into_iter()
            .flat_map(|host_first| [false, true].map(|nginx_user| (host_first, nginx_user)))
            .flat_map(|(host_first, nginx_user)| {
                TAILS.map(|tail| Shape {
                    host_first,
                    nginx_user,
                    tail,
                })
            })
            .find(|shape| shape.tokens() == f.tokens)
    }

    /// The tokens a format of this shape compiles to.
    fn tokens(&self) -> Vec<Token> {
        let lit = |s: &str| Token::Literal(s.as_bytes().into());
        let field = |field, enclosed| Token::Field { field, enclosed };
        let mut t = Vec::new();
        if self.host_first {
            t.extend([field(Field::Host, Enclosure::None), lit(" ")]);
        }
        t.push(field(Field::Client, Enclosure::None));
        if self.nginx_user {
            t.extend([lit(" - "), field(Field::Ignore, Enclosure::None)]);
        } else {
            t.extend([
                lit(" "),
                field(Field::Ignore, Enclosure::None),
                lit(" "),
                field(Field::Ignore, Enclosure::None),
            ]);
        }
        t.extend([
            lit(" ["),
            field(Field::Time, Enclosure::Brackets),
            lit("] \""),
            field(Field::Request, Enclosure::Quotes),
            lit("\" "),
            field(Field::Status, Enclosure::None),
            lit(" "),
            field(Field::Bytes, Enclosure::None),
        ]);
        for (i, &f) in self.tail.iter().enumerate() {
            t.extend([
                lit(if i == 0 { " \"" } else { "\" \"" }),
                field(f, Enclosure::Quotes),
            ]);
        }
        if !self.tail.is_empty() {
            t.push(lit("\""));
        }
        t
    }

    /// The spans of `line`, or `None` when the general interpreter must
    /// decide (an error, or a line this finder is not sure of).
    #[inline]
    pub(crate) fn spans(&self, line: &[u8]) -> Option<Spans> {
        let mut spans = [ABSENT; FIELD_COUNT];
        let mut at = Cursor { line, pos: 0 };
        if self.host_first {
            spans[Field::Host as usize] = at.until_space()?;
            at.expect(b" ")?;
        }
        // A comma means a list of hops, which the interpreter reads.
        let client = at.until_space()?;
        if line[client.0..client.1].contains(&b',') {
            return None;
        }
        spans[Field::Client as usize] = client;
        if self.nginx_user {
            at.expect(b" - ")?;
            at.until_space()?;
        } else {
            at.expect(b" ")?;
            at.until_space()?;
            at.expect(b" ")?;
            at.until_space()?;
        }
        at.expect(b" [")?;
        spans[Field::Time as usize] = at.until_near(b']')?;
        at.expect(b"] \"")?;
        spans[Field::Request as usize] = at.quoted()?;
        at.expect(b"\" ")?;
        spans[Field::Status as usize] = at.until_space()?;
        at.expect(b" ")?;
        if self.tail.is_empty() {
            // The last field ends at a space or a tab, or at the end.
            let rest = &line[at.pos..];
            let end = at.pos
                + rest
                    .iter()
                    .position(|&c| c == b' ' || c == b'\t')
                    .unwrap_or(rest.len());
            spans[Field::Bytes as usize] = (at.pos, end);
            at.pos = end;
        } else {
            spans[Field::Bytes as usize] = at.until_space()?;
            for (i, &field) in self.tail.iter().enumerate() {
                at.expect(if i == 0 { b" \"" } else { b"\" \"" })?;
                spans[field as usize] = at.quoted()?;
            }
            at.expect(b"\"")?;
        }
        // Extra fields after the format's last one are tolerated, as the
        // interpreter tolerates them; anything glued on is its to judge.
        (at.pos == line.len() || matches!(line[at.pos], b' ' | b'\t')).then_some(spans)
    }
}

struct Cursor<'a> {
    line: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    #[inline(always)]
    fn expect(&mut self, literal: &[u8]) -> Option<()> {
        starts_with_short(&self.line[self.pos..], literal).then(|| self.pos += literal.len())
    }

    /// An unenclosed field followed by a literal that starts with a space.
    #[inline(always)]
    fn until_space(&mut self) -> Option<(usize, usize)> {
        self.until_near(b' ')
    }

    #[inline(always)]
    fn until_near(&mut self, end: u8) -> Option<(usize, usize)> {
        let start = self.pos;
        self.pos += find_near(end, &self.line[start..])?;
        Some((start, self.pos))
    }

    /// A quoted field: up to the next quote, which must not be escaped.
    #[inline(always)]
    fn quoted(&mut self) -> Option<(usize, usize)> {
        let start = self.pos;
        self.pos += memchr::memchr(b'"', &self.line[start..])?;
        (self.pos == start || self.line[self.pos - 1] != b'\\').then_some((start, self.pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::format::Preset;

    #[test]
    fn the_family_is_recognised_and_others_are_not() {
        for p in [
            Preset::Combined,
            Preset::Common,
            Preset::Main,
            Preset::HostCombined,
            Preset::HostMain,
        ] {
            let f = p.text_format().unwrap();
            assert!(Shape::of(&f).is_some(), "{}", f.name);
        }
        let vhost = Preset::VhostCombined.text_format().unwrap();
        assert_eq!(Shape::of(&vhost), None);
    }

    #[test]
    fn ordinary_lines_take_the_fast_path() {
        let f = Preset::Combined.text_format().unwrap();
        let shape = Shape::of(&f).unwrap();
        let line = br#"203.0.113.7 - frank [10/Mar/2024:00:00:00 +0000] "GET /a?b HTTP/1.1" 200 37 "-" "Mozilla/5.0 (X11)""#;
        let spans = shape.spans(line).unwrap();
        let text = |f: Field| {
            let (s, e) = spans[f as usize];
            &line[s..e]
        };
        assert_eq!(text(Field::Client), b"203.0.113.7");
        assert_eq!(text(Field::Time), b"10/Mar/2024:00:00:00 +0000");
        assert_eq!(text(Field::Request), b"GET /a?b HTTP/1.1");
        assert_eq!(text(Field::UserAgent), b"Mozilla/5.0 (X11)");
        // Not sure: left to the interpreter.
        assert!(shape.spans(&line[..line.len() - 1]).is_none());
        let escaped =
            br#"203.0.113.7 - - [10/Mar/2024:00:00:00 +0000] "GET /\"a HTTP/1.1" 200 37 "-" "x""#;
        assert!(shape.spans(escaped).is_none());
    }
}
