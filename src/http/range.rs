//! `Range: bytes=...` as RFC 9110 (section 14) defines it, for one range: which bytes of a representation
//! of `len` bytes a request asks for.
//!
//! Players ask for byte ranges of segments (hls.js and AVPlayer for byte-range playlists and resumed
//! downloads); one range is answered with 206, none that the body can satisfy with 416. A request for
//! several ranges at once (`bytes=0-99,200-299`) would need a `multipart/byteranges` body; RFC 9110 lets a
//! server answer it with the whole representation, and so does lightpath. A header that does not parse is
//! ignored, as the RFC asks. Pure: no I/O.

use std::ops::RangeInclusive;

/// What a `Range` header asks of a body of known length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// Send the whole body: no header, a unit other than bytes, several ranges, or a header that does not
    /// parse.
    Whole,
    /// Send these bytes (first and last offsets, inclusive, within the body): 206.
    Part(RangeInclusive<u64>),
    /// No byte the header asks for exists: 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Reads a `Range` header value against a body of `len` bytes.
pub fn range(header: &str, len: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // `-n`: the last n bytes (all of them when n exceeds the length).
        (true, _, Some(suffix)) => {
            if suffix == 0 || len == 0 {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Part(len.saturating_sub(suffix)..=len - 1)
            }
        }
        // `a-`: from a to the end.
        (false, Some(first), None) if last.trim().is_empty() => {
            if first >= len {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Part(first..=len - 1)
            }
        }
        // `a-b`: a to b, cut at the end of the body.
        (false, Some(first), Some(last)) if first <= last => {
            if first >= len {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Part(first..=last.min(len - 1))
            }
        }
        _ => RangeRequest::Whole,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_three_forms_of_one_range() {
        assert_eq!(range("bytes=0-99", 1000), RangeRequest::Part(0..=99));
        assert_eq!(range("bytes=500-", 1000), RangeRequest::Part(500..=999));
        assert_eq!(range("bytes=-100", 1000), RangeRequest::Part(900..=999));
        assert_eq!(range("bytes=900-5000", 1000), RangeRequest::Part(900..=999), "cut at the end");
        assert_eq!(range("bytes=-5000", 1000), RangeRequest::Part(0..=999), "a suffix longer than the body");
        assert_eq!(range(" bytes= 3 - 4 ", 10), RangeRequest::Part(3..=4));
    }

    #[test]
    fn ranges_past_the_end_are_unsatisfiable() {
        assert_eq!(range("bytes=1000-", 1000), RangeRequest::Unsatisfiable);
        assert_eq!(range("bytes=1000-2000", 1000), RangeRequest::Unsatisfiable);
        assert_eq!(range("bytes=-0", 1000), RangeRequest::Unsatisfiable);
        assert_eq!(range("bytes=0-", 0), RangeRequest::Unsatisfiable);
        assert_eq!(range("bytes=-5", 0), RangeRequest::Unsatisfiable);
    }

    #[test]
    fn what_does_not_parse_or_asks_several_ranges_gets_the_whole_body() {
        for header in
            ["", "bytes", "bytes=", "bytes=-", "bytes=5-2", "bytes=a-b", "bytes=1-2-3", "items=0-5", "bytes=0-1,4-5"]
        {
            assert_eq!(range(header, 1000), RangeRequest::Whole, "{header:?}");
        }
        assert_eq!(range("bytes=+1-2", 1000), RangeRequest::Whole);
        assert_eq!(range("bytes=99999999999999999999999-", 1000), RangeRequest::Whole, "overflow");
    }

    proptest! {
        /// A satisfiable range always lies within the body, and a `a-b` range is exactly what was asked
        /// whenever it fits.
        #[test]
        fn parts_lie_within_the_body(a in 0u64..2000, b in 0u64..2000, len in 0u64..1500) {
            for header in [format!("bytes={a}-{b}"), format!("bytes={a}-"), format!("bytes=-{b}")] {
                if let RangeRequest::Part(part) = range(&header, len) {
                    prop_assert!(part.start() <= part.end() && *part.end() < len, "{header} of {len}: {part:?}");
                }
            }
            if a <= b && b < len {
                prop_assert_eq!(range(&format!("bytes={a}-{b}"), len), RangeRequest::Part(a..=b));
            }
        }
    }
}
