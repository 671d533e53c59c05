//! Byte searches for the short spans of a log line, where the set-up of a
//! vectorised search costs more than the search: each is met several times
//! a line, so they are kept inline.

/// `hay.starts_with(lit)` for the few bytes of a format's literals, compared
/// in place: `starts_with` calls `memcmp`, which costs more than the compare
/// for literals of one to three bytes, met about ten times a line.
#[inline(always)]
pub fn starts_with_short(hay: &[u8], lit: &[u8]) -> bool {
    hay.len() >= lit.len() && hay.iter().zip(lit).all(|(a, b)| a == b)
}

/// The first `b` in `hay`, for haystacks that are usually short (under 32
/// bytes), where a byte loop beats `memchr`'s dispatch; long ones go on
/// with `memchr`.
#[inline(always)]
pub fn find_near(b: u8, hay: &[u8]) -> Option<usize> {
    const NEAR: usize = 32;
    let head = &hay[..hay.len().min(NEAR)];
    match head.iter().position(|&c| c == b) {
        Some(k) => Some(k),
        None if hay.len() > NEAR => memchr::memchr(b, &hay[NEAR..]).map(|k| NEAR + k),
        None => None,
    }
}

/// The last `b` in `hay`, looking at the last 32 bytes first (the protocol
/// at the end of a request line, the extension at the end of a path).
#[inline(always)]
pub fn rfind_near(b: u8, hay: &[u8]) -> Option<usize> {
    const NEAR: usize = 32;
    let split = hay.len().saturating_sub(NEAR);
    match hay[split..].iter().rposition(|&c| c == b) {
        Some(k) => Some(split + k),
        None => memchr::memrchr(b, &hay[..split]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn searches_agree_with_memchr(hay in proptest::collection::vec(prop_oneof![Just(b' '), Just(b'a'), any::<u8>()], 0..100), b in prop_oneof![Just(b' '), any::<u8>()]) {
            prop_assert_eq!(find_near(b, &hay), memchr::memchr(b, &hay));
            prop_assert_eq!(rfind_near(b, &hay), memchr::memrchr(b, &hay));
        }

        #[test]
        fn starts_with_short_agrees(hay in proptest::collection::vec(prop_oneof![Just(b'"'), Just(b' '), any::<u8>()], 0..6), lit in proptest::collection::vec(prop_oneof![Just(b'"'), Just(b' ')], 0..4)) {
            prop_assert_eq!(starts_with_short(&hay, &lit), hay.starts_with(&lit));
        }
    }
}
