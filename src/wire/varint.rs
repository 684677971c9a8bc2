//! QUIC variable-length integers (RFC 9000, section 16): the two high bits of the first byte give the length
//! (1, 2, 4 or 8 bytes), the remaining bits hold the value big-endian, so values up to 2^62 - 1 fit.
//!
//! Unlike QUIC, which accepts any of the lengths that can hold a value, this codec accepts only the shortest
//! one. The whole frame encoding is therefore canonical: decoding then re-encoding gives back the same bytes,
//! which the fuzz target checks.

use super::DecodeError;

/// The largest value a varint can hold.
pub const VARINT_MAX: u64 = (1 << 62) - 1;

/// How many bytes the shortest encoding of `v` takes.
pub(crate) fn len(v: u64) -> usize {
    match v {
        0..=0x3f => 1,
        0x40..=0x3fff => 2,
        0x4000..=0x3fff_ffff => 4,
        _ => 8,
    }
}

/// Appends the shortest encoding of `v`.
///
/// # Panics
///
/// When `v` is larger than [`VARINT_MAX`].
pub(crate) fn put(v: u64, out: &mut Vec<u8>) {
    assert!(v <= VARINT_MAX, "{v} is too large for a QUIC varint");
    match len(v) {
        1 => out.push(v as u8),
        2 => out.extend_from_slice(&(v as u16 | 0x4000).to_be_bytes()),
        4 => out.extend_from_slice(&(v as u32 | 0x8000_0000).to_be_bytes()),
        _ => out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes()),
    }
}

/// Reads a varint from the front of `buf`; returns it and the number of bytes it took.
pub(crate) fn get(buf: &[u8]) -> Result<(u64, usize), DecodeError> {
    let first = *buf.first().ok_or(DecodeError::Incomplete)?;
    let n = 1usize << (first >> 6);
    let bytes = buf.get(..n).ok_or(DecodeError::Incomplete)?;
    let v = bytes[1..].iter().fold(u64::from(first & 0x3f), |v, &b| v << 8 | u64::from(b));
    if len(v) != n {
        return Err(DecodeError::Malformed("varint not in its shortest form"));
    }
    Ok((v, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put(v, &mut out);
        out
    }

    #[test]
    fn rfc_9000_examples() {
        let cases: [(&[u8], u64); 4] = [
            (&[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c], 151_288_809_941_952_652),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
        ];
        for (bytes, v) in cases {
            assert_eq!(get(bytes), Ok((v, bytes.len())));
            assert_eq!(enc(v), bytes);
        }
    }

    #[test]
    fn boundaries_round_trip_at_their_length() {
        for (v, n) in [(0, 1), (63, 1), (64, 2), (16_383, 2), (16_384, 4), ((1 << 30) - 1, 4), (1 << 30, 8)] {
            let bytes = enc(v);
            assert_eq!(bytes.len(), n, "{v}");
            assert_eq!(get(&bytes), Ok((v, n)));
            assert_eq!(get(&bytes[..n - 1]), Err(DecodeError::Incomplete));
        }
        assert_eq!(get(&enc(VARINT_MAX)), Ok((VARINT_MAX, 8)));
    }

    #[test]
    fn rejects_longer_than_needed() {
        // RFC 9000 allows 0x4025 for 37; this codec does not.
        assert!(matches!(get(&[0x40, 0x25]), Err(DecodeError::Malformed(_))));
        assert!(matches!(get(&[0x80, 0, 0x3f, 0xff]), Err(DecodeError::Malformed(_))));
    }

    #[test]
    #[should_panic(expected = "too large")]
    fn refuses_to_encode_past_the_maximum() {
        enc(VARINT_MAX + 1);
    }
}
