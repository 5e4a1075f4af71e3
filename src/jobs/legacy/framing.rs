//! Knows only bytes: decides when a buffered reply is complete and enforces the size cap.
//! No socket here, so every edge (exactly at the cap, one past it, a delimiter split across
//! reads) is tested by feeding slices.

use std::ops::Range;

use super::payload::{Framing, PrefixWidth};

/// Why a buffered reply can never become a valid one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The reply is (or declares itself) larger than the cap.
    TooLarge { cap: usize, declared: Option<u64> },
    /// The peer closed before the framing said the reply was complete.
    Incomplete { received: usize },
}

/// Incremental decoder for one reply. The cap is a constructor argument so there is no way
/// to read a reply without one.
#[derive(Debug)]
pub(crate) struct ReplyDecoder {
    framing: Framing,
    cap: usize,
    /// Delimiter search resumes here, so a reply arriving in many small reads is scanned
    /// once, not once per read.
    searched: usize,
}

impl ReplyDecoder {
    pub(crate) fn new(framing: Framing, cap: usize) -> Self {
        Self {
            framing,
            cap,
            searched: 0,
        }
    }

    /// The most bytes worth buffering: one byte past what a reply within the cap could
    /// need, so "over the cap" is detected by seeing that byte and never by reading more.
    /// (The seed's C client wrote its terminator at `s[n + 1]`, one past the data; here the
    /// buffer limit and the cap check are computed in one place and tested at the edge.)
    pub(crate) fn read_limit(&self) -> usize {
        match &self.framing {
            Framing::UntilClose => self.cap.saturating_add(1),
            Framing::Delimiter(d) => self.cap.saturating_add(d.len()),
            Framing::LengthPrefix(w) => self.cap.saturating_add(w.bytes()),
            Framing::Exact(n) => (*n).min(self.cap.saturating_add(1)),
        }
    }

    /// Looks at everything received so far. `Ok(Some(range))` when the reply is complete
    /// (`range` is the stored reply within `buf`), `Ok(None)` when more bytes are needed.
    pub(crate) fn decode(&mut self, buf: &[u8]) -> Result<Option<Range<usize>>, FrameError> {
        let too_large = |declared| FrameError::TooLarge {
            cap: self.cap,
            declared,
        };
        match &self.framing {
            Framing::UntilClose => {
                if buf.len() > self.cap {
                    return Err(too_large(None));
                }
                Ok(None)
            }
            Framing::Delimiter(d) => {
                // Restart a delimiter's length back so a marker split across reads is found.
                let from = self.searched.saturating_sub(d.len().saturating_sub(1));
                if let Some(pos) = find(&buf[from..], d) {
                    let end = from + pos;
                    if end > self.cap {
                        return Err(too_large(None));
                    }
                    return Ok(Some(0..end));
                }
                self.searched = buf.len();
                if buf.len() >= self.read_limit() {
                    return Err(too_large(None));
                }
                Ok(None)
            }
            Framing::LengthPrefix(w) => {
                let Some(len) = prefix(buf, *w) else {
                    return Ok(None);
                };
                if len > self.cap as u64 {
                    return Err(too_large(Some(len)));
                }
                // `len <= cap` and `cap` is a usize, so this cannot truncate.
                let end = w.bytes() + len as usize;
                Ok((buf.len() >= end).then_some(w.bytes()..end))
            }
            Framing::Exact(n) => {
                if *n > self.cap && buf.len() > self.cap {
                    return Err(too_large(Some(*n as u64)));
                }
                Ok((buf.len() >= *n).then_some(0..*n))
            }
        }
    }

    /// The peer closed. Returns the reply for `until_close`, an error for the others (they
    /// would have completed in [`decode`](Self::decode) otherwise).
    pub(crate) fn decode_eof(&mut self, buf: &[u8]) -> Result<Range<usize>, FrameError> {
        if let Some(range) = self.decode(buf)? {
            return Ok(range);
        }
        match self.framing {
            Framing::UntilClose => Ok(0..buf.len()),
            _ => Err(FrameError::Incomplete {
                received: buf.len(),
            }),
        }
    }
}

fn prefix(buf: &[u8], w: PrefixWidth) -> Option<u64> {
    let head = buf.get(..w.bytes())?;
    Some(head.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    match needle {
        [] => return Some(0),
        [one] => return haystack.iter().position(|b| b == one),
        _ => {}
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn dec(f: Framing, cap: usize) -> ReplyDecoder {
        ReplyDecoder::new(f, cap)
    }

    /// Feeds `data` one byte at a time, the worst case for incremental decoding.
    fn trickle(d: &mut ReplyDecoder, data: &[u8]) -> Result<Option<Range<usize>>, FrameError> {
        for i in 0..=data.len() {
            if let Some(r) = d.decode(&data[..i])? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    #[test]
    fn until_close_exactly_at_cap_is_fine_and_one_past_is_not() {
        let mut d = dec(Framing::UntilClose, 4);
        assert_eq!(d.read_limit(), 5);
        assert_eq!(d.decode(b"abcd"), Ok(None));
        assert_eq!(d.decode_eof(b"abcd"), Ok(0..4));
        assert!(matches!(
            d.decode(b"abcde"),
            Err(FrameError::TooLarge { cap: 4, .. })
        ));
        assert_eq!(d.decode_eof(b""), Ok(0..0));
    }

    #[test]
    fn delimiter_split_across_reads_is_found_and_excluded() {
        let mut d = dec(Framing::Delimiter(Bytes::from_static(b"\r\n")), 100);
        assert_eq!(trickle(&mut d, b"hello\r\nrest"), Ok(Some(0..5)));
        let mut d = dec(Framing::Delimiter(Bytes::from_static(b"END")), 100);
        assert_eq!(d.decode(b"abcE"), Ok(None));
        assert_eq!(d.decode(b"abcEN"), Ok(None));
        assert_eq!(d.decode(b"abcEND"), Ok(Some(0..3)));
    }

    #[test]
    fn delimiter_at_cap_edge() {
        let delim = Bytes::from_static(b"\n");
        let mut d = dec(Framing::Delimiter(delim.clone()), 4);
        assert_eq!(d.read_limit(), 5);
        assert_eq!(trickle(&mut d, b"abcd\n"), Ok(Some(0..4)));
        let mut d = dec(Framing::Delimiter(delim), 4);
        assert!(matches!(
            trickle(&mut d, b"abcde\n"),
            Err(FrameError::TooLarge { .. })
        ));
        let mut d = dec(Framing::Delimiter(Bytes::from_static(b"--")), 4);
        assert_eq!(d.read_limit(), 6);
        assert!(matches!(
            d.decode(b"abcde-"),
            Err(FrameError::TooLarge { .. })
        ));
        let mut d = dec(Framing::Delimiter(Bytes::from_static(b"--")), 4);
        assert_eq!(d.decode(b"abcd--"), Ok(Some(0..4)));
        let mut d = dec(Framing::Delimiter(Bytes::from_static(b"\n")), 4);
        assert_eq!(
            d.decode_eof(b"ab"),
            Err(FrameError::Incomplete { received: 2 })
        );
    }

    #[test]
    fn length_prefix_widths_and_cap() {
        let mut d = dec(Framing::LengthPrefix(PrefixWidth::Two), 3);
        assert_eq!(d.read_limit(), 5);
        assert_eq!(d.decode(b"\x00"), Ok(None));
        assert_eq!(d.decode(b"\x00\x03ab"), Ok(None));
        assert_eq!(d.decode(b"\x00\x03abcXX"), Ok(Some(2..5)));
        assert_eq!(
            d.decode(b"\x00\x04"),
            Err(FrameError::TooLarge {
                cap: 3,
                declared: Some(4)
            })
        );
        let mut d = dec(Framing::LengthPrefix(PrefixWidth::Four), usize::MAX);
        assert_eq!(d.decode(b"\x00\x00\x00\x00"), Ok(Some(4..4)));
        assert_eq!(d.decode(b"\x01\x00\x00\x00"), Ok(None));
        let mut d = dec(Framing::LengthPrefix(PrefixWidth::One), 300);
        assert_eq!(d.decode(b"\xff"), Ok(None));
        assert_eq!(
            d.decode_eof(b"\x02a"),
            Err(FrameError::Incomplete { received: 2 })
        );
    }

    #[test]
    fn exact_count() {
        let mut d = dec(Framing::Exact(3), 3);
        assert_eq!(d.read_limit(), 3);
        assert_eq!(d.decode(b"ab"), Ok(None));
        assert_eq!(d.decode(b"abc"), Ok(Some(0..3)));
        let mut d = dec(Framing::Exact(5), 3);
        assert_eq!(d.read_limit(), 4);
        assert_eq!(d.decode(b"abc"), Ok(None));
        assert!(matches!(
            d.decode(b"abcd"),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(
            d.decode_eof(b"ab"),
            Err(FrameError::Incomplete { received: 2 })
        );
    }
}
