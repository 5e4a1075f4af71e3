//! Eight bytes at a time: the byte tests the reader (and the name rules) use to skip the slow
//! exact paths on ordinary text.

pub(super) const ONES: u64 = 0x0101_0101_0101_0101;
pub(super) const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Non-zero iff some byte of `x` is zero.
pub(super) fn has_zero(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// Non-zero iff some byte of `x` equals `b`.
pub(super) fn has_byte(x: u64, b: u8) -> u64 {
    has_zero(x ^ (ONES * u64::from(b)))
}

/// Bit 7 of each byte of `x` that equals `b`, and nothing else: exact per byte, unlike
/// [`has_byte`] (no borrow crosses bytes: each byte's low seven bits plus 0x7F stay below
/// 0x100).
pub(super) fn bytes_equal(x: u64, b: u8) -> u64 {
    let x = x ^ (ONES * u64::from(b));
    let low7 = !HIGHS;
    !(((x & low7).wrapping_add(low7)) | x | low7)
}

/// Non-zero iff some byte of `x` is below `n` (`n` at most 0x80): `x - n` borrows into
/// bit 7 of such a byte while bit 7 of `x` is clear.
pub(super) fn has_below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS
}

/// The first eight bytes of `b` (fewer: zero-padded), little-endian, without a
/// variable-length copy: a short `b` is read as two overlapping pieces.
#[inline(always)]
pub(super) fn load_le(b: &[u8]) -> u64 {
    let n = b.len();
    if let Some(c) = b.first_chunk::<8>() {
        return u64::from_le_bytes(*c);
    }
    if let (Some(lo), Some(hi)) = (b.first_chunk::<4>(), b.last_chunk::<4>()) {
        // n is 4..=7: the high piece overlaps the low one, ORing equal bytes.
        return u64::from(u32::from_le_bytes(*lo))
            | u64::from(u32::from_le_bytes(*hi)) << (8 * (n - 4));
    }
    match b {
        [] => 0,
        // n is 1..=3: bytes 0, n/2 and n-1 cover every position.
        [first, .., last] | [first @ last] => {
            u64::from(*first)
                | u64::from(b[n / 2]) << (8 * (n / 2))
                | u64::from(*last) << (8 * (n - 1))
        }
    }
}

/// True when `word` is non-zero for some eight bytes of `b` (a short `b` is tested byte
/// by byte, each repeated across a word).
pub(super) fn any(b: &[u8], word: impl Fn(u64) -> u64) -> bool {
    let mut chunks = b.chunks_exact(8);
    let mut acc = 0;
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        acc |= word(u64::from_le_bytes(w));
    }
    if let Some(last) = b.last_chunk::<8>() {
        // The last eight bytes again (overlapping is harmless for a yes/no test): no
        // variable-length copy.
        acc |= word(u64::from_le_bytes(*last));
    } else {
        for &c in chunks.remainder() {
            acc |= word(ONES * u64::from(c));
        }
    }
    acc != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_le_pads_with_zeros() {
        let src: Vec<u8> = (1..=12).collect();
        for n in 0..=12 {
            let mut want = [0u8; 8];
            let k = n.min(8);
            want[..k].copy_from_slice(&src[..k]);
            assert_eq!(load_le(&src[..n]), u64::from_le_bytes(want), "{n}");
        }
    }

    #[test]
    fn bytes_equal_is_exact_per_byte() {
        for target in [0u8, b' ', 0x7F, 0x80, 0xFF] {
            for other in 0..=255u8 {
                // `other` in every position, among bytes equal to the target and not.
                for pos in 0..8 {
                    for fill in [target, target ^ 1, 0, 0xFF] {
                        let mut b = [fill; 8];
                        b[pos] = other;
                        let m = bytes_equal(u64::from_le_bytes(b), target);
                        for (i, &c) in b.iter().enumerate() {
                            let bit = m >> (8 * i) & 0xFF;
                            assert_eq!(bit == 0x80, c == target, "{b:?} {target}");
                            assert!(bit == 0 || bit == 0x80);
                        }
                    }
                }
            }
        }
    }
}
