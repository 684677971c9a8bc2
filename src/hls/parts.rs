//! Cutting a segment's chunks into LL-HLS parts.
//!
//! An encoder pushes a segment as CMAF chunks ([`super::fmp4::Chunks`]), a fraction of a second each. A
//! part is one or more whole chunks: [`PartCutter`] closes the part it is filling when the next chunk would
//! take it past the part target (so that no part is longer than `EXT-X-PART-INF:PART-TARGET`, as the HLS
//! specification requires), when it reaches the target, and before a chunk that starts with an independent
//! frame (so that such a part is `INDEPENDENT=YES` and a player can start there). The segment's last part
//! closes when the segment ends. A single chunk longer than the target makes a part longer than the target:
//! the encoder's fragment duration must be at most the part target, which the origin logs.
//!
//! Pure: durations are in the track's timescale, no clock.

use bytes::{Bytes, BytesMut};

use super::fmp4::Chunk;

/// One LL-HLS part: whole chunks of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The chunks' bytes, in order.
    pub bytes: Bytes,
    /// Ticks of the track's timescale.
    pub duration: u64,
    /// Whether the part starts with an independent frame.
    pub independent: bool,
}

/// Collects a segment's chunks into parts of at most a target duration.
#[derive(Debug)]
pub struct PartCutter {
    target: u64,
    /// Ticks of slack when comparing with the target: timestamps rounded by the encoder.
    slack: u64,
    filling: Option<Part>,
    filling_bytes: BytesMut,
}

impl PartCutter {
    /// A cutter for parts of at most `target` ticks, with `slack` ticks of rounding allowed.
    pub fn new(target: u64, slack: u64) -> Self {
        Self { target, slack, filling: None, filling_bytes: BytesMut::new() }
    }

    /// Adds the segment's next chunk; returns the parts it closes (none, one, or two when the chunk alone
    /// fills a part).
    pub fn push(&mut self, chunk: Chunk) -> Vec<Part> {
        let mut out = Vec::new();
        if let Some(filling) = &self.filling {
            if chunk.independent || filling.duration + chunk.duration > self.target + self.slack {
                out.extend(self.close());
            }
        }
        let filling =
            self.filling.get_or_insert(Part { bytes: Bytes::new(), duration: 0, independent: chunk.independent });
        filling.duration += chunk.duration;
        self.filling_bytes.extend_from_slice(&chunk.bytes);
        if filling.duration + self.slack >= self.target {
            out.extend(self.close());
        }
        out
    }

    /// Ends the segment: its last part, if chunks are waiting.
    pub fn finish(&mut self) -> Option<Part> {
        self.close()
    }

    fn close(&mut self) -> Option<Part> {
        let mut part = self.filling.take()?;
        part.bytes = self.filling_bytes.split().freeze();
        Some(part)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn chunk(duration: u64, independent: bool) -> Chunk {
        Chunk { bytes: Bytes::from(vec![duration as u8; 3]), duration, independent }
    }

    fn cut(target: u64, chunks: &[(u64, bool)]) -> Vec<(u64, bool)> {
        let mut cutter = PartCutter::new(target, 0);
        let mut parts: Vec<Part> = chunks.iter().flat_map(|&(d, i)| cutter.push(chunk(d, i))).collect();
        parts.extend(cutter.finish());
        parts.iter().map(|p| (p.duration, p.independent)).collect()
    }

    #[test]
    fn chunks_at_the_target_are_parts() {
        assert_eq!(cut(200, &[(200, true), (200, false), (200, false)]), [(200, true), (200, false), (200, false)]);
    }

    #[test]
    fn short_chunks_gather_up_to_the_target() {
        // Frame-by-frame chunks of 40 ticks, a target of 200: five frames a part, and a short last part.
        let mut chunks = vec![(40, true)];
        chunks.extend([(40, false); 11]);
        assert_eq!(cut(200, &chunks), [(200, true), (200, false), (80, false)]);
        // Chunks that do not divide the target never push a part past it.
        assert_eq!(cut(200, &[(120, true), (120, false), (120, false)]), [(120, true), (120, false), (120, false)]);
    }

    #[test]
    fn an_independent_chunk_starts_a_part() {
        assert_eq!(cut(200, &[(40, false), (40, true), (40, false)]), [(40, false), (80, true)]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Parts hold every chunk's bytes once and in order, add up to the segment's duration, never exceed
        /// the target unless one chunk does, and every independent chunk begins a part.
        #[test]
        fn parts_add_up_to_the_segment(chunks in proptest::collection::vec((1u64..300, any::<bool>()), 0..40)) {
            let target = 200;
            let mut cutter = PartCutter::new(target, 0);
            let mut parts = Vec::new();
            let mut bytes = Vec::new();
            for (i, &(d, ind)) in chunks.iter().enumerate() {
                let c = Chunk { bytes: Bytes::from(vec![i as u8; 2]), duration: d, independent: ind };
                bytes.extend_from_slice(&c.bytes);
                parts.extend(cutter.push(c));
            }
            parts.extend(cutter.finish());
            let joined: Vec<u8> = parts.iter().flat_map(|p| p.bytes.to_vec()).collect();
            prop_assert_eq!(joined, bytes);
            prop_assert_eq!(parts.iter().map(|p| p.duration).sum::<u64>(), chunks.iter().map(|c| c.0).sum::<u64>());
            let longest = chunks.iter().map(|c| c.0).max().unwrap_or(0);
            for p in &parts {
                prop_assert!(p.duration <= target.max(longest));
            }
            let independent_chunks = chunks.iter().filter(|c| c.1).count();
            let independent_parts = parts.iter().filter(|p| p.independent).count();
            prop_assert_eq!(independent_parts, independent_chunks);
        }
    }
}
