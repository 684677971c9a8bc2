//! Reading fragmented MP4 (CMAF) as it arrives: just enough of ISO BMFF to cut a live upload into
//! LL-HLS parts.
//!
//! A CMAF segment is a run of chunks, each a `moof` box (the fragment's sample table) followed by an
//! `mdat` (its samples), optionally led by `styp`, `prft` or `emsg` boxes. The origin cuts parts at chunk
//! boundaries, so it needs three facts per chunk: where it ends in the byte stream, how long it plays
//! (sample durations from `trun`, or the defaults of `tfhd` and of the init segment's `trex`, in the track's
//! `mdhd` timescale), and whether it starts with a sync sample (an independent frame a player can start
//! decoding at). [`InitInfo::parse`] reads the timescale and defaults from an init segment; [`Chunks`]
//! takes a segment's bytes in whatever pieces the network delivers and hands back each complete chunk.
//!
//! This reads bytes from publishers, so every length is checked against what is there and against
//! [`MAX_BOX`]; malformed input is a [`Fmp4Error`], never a panic (fuzzed: `fuzz/fuzz_targets/fmp4_chunks.rs`).
//! Sample data is never looked at. Pure: no I/O, no clock.

use bytes::{Buf, Bytes, BytesMut};

/// The largest top-level box accepted: a chunk of a live stream is a fraction of a second of media.
pub const MAX_BOX: u64 = 16 << 20;

/// Why bytes are not the fragmented MP4 a live part is cut from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fmp4Error {
    /// A box declares a size smaller than its own header.
    #[error("box '{kind}' at byte {at} declares size {size}, smaller than its header")]
    BadSize {
        /// The box type, as text.
        kind: String,
        /// Offset of the box in the upload.
        at: u64,
        /// The declared size.
        size: u64,
    },
    /// A box is larger than [`MAX_BOX`] (or runs to the end of the file, which a live chunk cannot).
    #[error("box '{kind}' at byte {at} is {size} bytes, over the {MAX_BOX}-byte limit for a live chunk")]
    TooLarge {
        /// The box type, as text.
        kind: String,
        /// Offset of the box in the upload.
        at: u64,
        /// The declared size (0: to the end of the file).
        size: u64,
    },
    /// A box inside a `moof` (or `moov`) is cut short or holds impossible counts.
    #[error("malformed '{0}' box")]
    Malformed(&'static str),
    /// An `mdat` with no `moof` before it: not a CMAF chunk.
    #[error("'mdat' at byte {0} without a 'moof' before it")]
    MdatWithoutMoof(u64),
    /// The upload ended inside a box.
    #[error("the upload ended {0} bytes into an unfinished box")]
    Truncated(usize),
}

/// What an init segment says about the first track: enough to time its fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitInfo {
    /// Ticks per second (`mdhd`).
    pub timescale: u32,
    /// `trex` default sample duration, used when neither `trun` nor `tfhd` gives one.
    pub default_duration: u32,
    /// `trex` default sample flags.
    pub default_flags: u32,
}

/// One complete chunk (`[styp|prft|emsg]* moof mdat`) of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The chunk's bytes, exactly as uploaded.
    pub bytes: Bytes,
    /// How long it plays, in the track's timescale.
    pub duration: u64,
    /// Whether its first sample is a sync sample.
    pub independent: bool,
}

/// A box header: its four-character type, the size of the whole box and of the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BoxHeader {
    kind: [u8; 4],
    size: u64,
    header: usize,
}

fn kind_text(kind: [u8; 4]) -> String {
    kind.iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '?' }).collect()
}

/// Reads the box header at the start of `buf`: `Ok(None)` when `buf` is too short to hold it. `at` is the
/// box's offset, for errors. A size of 0 ("to the end of the file") is refused: a live chunk ends.
fn header(buf: &[u8], at: u64) -> Result<Option<BoxHeader>, Fmp4Error> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let small = u32::from_be_bytes(buf[0..4].try_into().expect("4 bytes")) as u64;
    let kind: [u8; 4] = buf[4..8].try_into().expect("4 bytes");
    let (size, header) = match small {
        1 => {
            if buf.len() < 16 {
                return Ok(None);
            }
            (u64::from_be_bytes(buf[8..16].try_into().expect("8 bytes")), 16)
        }
        n => (n, 8),
    };
    if size == 0 || size > MAX_BOX {
        return Err(Fmp4Error::TooLarge { kind: kind_text(kind), at, size });
    }
    if size < header as u64 {
        return Err(Fmp4Error::BadSize { kind: kind_text(kind), at, size });
    }
    Ok(Some(BoxHeader { kind, size, header }))
}

/// The complete child boxes of a box's payload, as (type, payload) pairs.
/// A box's type and payload.
type Child<'a> = ([u8; 4], &'a [u8]);

fn children<'a>(mut payload: &'a [u8], of: &'static str) -> Result<Vec<Child<'a>>, Fmp4Error> {
    let mut out = Vec::new();
    while !payload.is_empty() {
        let h = header(payload, 0).map_err(|_| Fmp4Error::Malformed(of))?.ok_or(Fmp4Error::Malformed(of))?;
        let size = usize::try_from(h.size).map_err(|_| Fmp4Error::Malformed(of))?;
        if size > payload.len() {
            return Err(Fmp4Error::Malformed(of));
        }
        out.push((h.kind, &payload[h.header..size]));
        payload = &payload[size..];
    }
    Ok(out)
}

fn child<'a>(payload: &'a [u8], of: &'static str, kind: &[u8; 4]) -> Result<Option<&'a [u8]>, Fmp4Error> {
    Ok(children(payload, of)?.into_iter().find(|(k, _)| k == kind).map(|(_, p)| p))
}

/// A cursor over a full box's payload that turns running short into [`Fmp4Error::Malformed`].
struct Fields<'a> {
    buf: &'a [u8],
    of: &'static str,
}

impl Fields<'_> {
    fn u32(&mut self) -> Result<u32, Fmp4Error> {
        if self.buf.remaining() < 4 {
            return Err(Fmp4Error::Malformed(self.of));
        }
        Ok(self.buf.get_u32())
    }

    fn u64(&mut self) -> Result<u64, Fmp4Error> {
        if self.buf.remaining() < 8 {
            return Err(Fmp4Error::Malformed(self.of));
        }
        Ok(self.buf.get_u64())
    }

    fn skip(&mut self, n: usize) -> Result<(), Fmp4Error> {
        if self.buf.remaining() < n {
            return Err(Fmp4Error::Malformed(self.of));
        }
        self.buf.advance(n);
        Ok(())
    }
}

impl InitInfo {
    /// Reads the first track's timescale (`moov/trak/mdia/mdhd`) and sample defaults (`moov/mvex/trex`)
    /// from an init segment.
    pub fn parse(init: &[u8]) -> Result<InitInfo, Fmp4Error> {
        let moov = child(init, "file", b"moov")?.ok_or(Fmp4Error::Malformed("moov"))?;
        let trak = child(moov, "moov", b"trak")?.ok_or(Fmp4Error::Malformed("trak"))?;
        let mdia = child(trak, "trak", b"mdia")?.ok_or(Fmp4Error::Malformed("mdia"))?;
        let mdhd = child(mdia, "mdia", b"mdhd")?.ok_or(Fmp4Error::Malformed("mdhd"))?;
        let mut f = Fields { buf: mdhd, of: "mdhd" };
        let version = f.u32()? >> 24;
        // creation and modification times: 4 bytes each in version 0, 8 in version 1
        f.skip(if version == 1 { 16 } else { 8 })?;
        let timescale = f.u32()?;
        if timescale == 0 {
            return Err(Fmp4Error::Malformed("mdhd"));
        }
        let (mut default_duration, mut default_flags) = (0, 0);
        if let Some(mvex) = child(moov, "moov", b"mvex")? {
            if let Some(trex) = child(mvex, "mvex", b"trex")? {
                let mut f = Fields { buf: trex, of: "trex" };
                f.skip(4 + 4 + 4)?; // version and flags, track id, default sample description index
                default_duration = f.u32()?;
                f.skip(4)?; // default sample size
                default_flags = f.u32()?;
            }
        }
        Ok(InitInfo { timescale, default_duration, default_flags })
    }
}

/// Whether sample flags mark a sync sample: `sample_is_non_sync_sample` clear, or the sample depends on no
/// other (`sample_depends_on` = 2).
fn is_sync(flags: u32) -> bool {
    flags & 0x0001_0000 == 0 || (flags >> 24) & 0x3 == 2
}

/// The duration (in ticks) and independence of a `moof`'s first track fragment.
fn timing(moof: &[u8], init: &InitInfo) -> Result<(u64, bool), Fmp4Error> {
    let traf = child(moof, "moof", b"traf")?.ok_or(Fmp4Error::Malformed("traf"))?;
    let boxes = children(traf, "traf")?;
    let tfhd = boxes.iter().find(|(k, _)| k == b"tfhd").map(|(_, p)| *p).ok_or(Fmp4Error::Malformed("tfhd"))?;
    let mut f = Fields { buf: tfhd, of: "tfhd" };
    let flags = f.u32()? & 0x00ff_ffff;
    f.skip(4)?; // track id
    if flags & 0x01 != 0 {
        f.u64()?; // base data offset
    }
    if flags & 0x02 != 0 {
        f.u32()?; // sample description index
    }
    let default_duration = if flags & 0x08 != 0 { f.u32()? } else { init.default_duration };
    if flags & 0x10 != 0 {
        f.u32()?; // default sample size
    }
    let default_flags = if flags & 0x20 != 0 { f.u32()? } else { init.default_flags };
    let (mut duration, mut first_flags) = (0u64, None);
    for (_, trun) in boxes.iter().filter(|(k, _)| k == b"trun") {
        let mut f = Fields { buf: trun, of: "trun" };
        let flags = f.u32()? & 0x00ff_ffff;
        let count = f.u32()?;
        if flags & 0x01 != 0 {
            f.u32()?; // data offset
        }
        let first = if flags & 0x04 != 0 { Some(f.u32()?) } else { None };
        let per_sample = [0x100, 0x200, 0x400, 0x800].iter().filter(|&&bit| flags & bit != 0).count();
        if (count as usize).saturating_mul(per_sample * 4) > f.buf.len() {
            return Err(Fmp4Error::Malformed("trun"));
        }
        if per_sample == 0 {
            // Every sample takes the defaults: no need to walk a count that the box does not bound.
            if count > 0 && first_flags.is_none() {
                first_flags = Some(first.unwrap_or(default_flags));
            }
            duration += count as u64 * default_duration as u64;
            continue;
        }
        for i in 0..count {
            let sample_duration = if flags & 0x100 != 0 { f.u32()? } else { default_duration };
            if flags & 0x200 != 0 {
                f.u32()?; // size
            }
            let sample_flags = if flags & 0x400 != 0 { Some(f.u32()?) } else { None };
            if flags & 0x800 != 0 {
                f.u32()?; // composition time offset
            }
            if i == 0 && first_flags.is_none() {
                first_flags = Some(first.or(sample_flags).unwrap_or(default_flags));
            }
            duration += sample_duration as u64;
        }
    }
    Ok((duration, first_flags.is_some_and(is_sync)))
}

/// Splits a segment upload into its chunks as its bytes arrive.
#[derive(Debug)]
pub struct Chunks {
    init: InitInfo,
    /// Bytes received and not yet handed out in a chunk.
    pending: BytesMut,
    /// How far into `pending` complete boxes of the current chunk reach.
    scanned: usize,
    /// Whether the current chunk has its `moof` (its timing, once read).
    moof: Option<(u64, bool)>,
    /// Offset of `pending`'s first byte in the upload.
    offset: u64,
}

impl Chunks {
    /// A splitter for a segment of the track `init` describes.
    pub fn new(init: InitInfo) -> Self {
        Self { init, pending: BytesMut::new(), scanned: 0, moof: None, offset: 0 }
    }

    /// Takes the next bytes of the upload and returns the chunks they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Chunk>, Fmp4Error> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            let at = self.offset + self.scanned as u64;
            let Some(h) = header(&self.pending[self.scanned..], at)? else { break };
            let size = h.size as usize; // at most MAX_BOX
            if self.pending.len() - self.scanned < size {
                break;
            }
            let payload = &self.pending[self.scanned + h.header..self.scanned + size];
            match &h.kind {
                b"moof" => {
                    self.moof = Some(timing(payload, &self.init)?);
                    self.scanned += size;
                }
                b"mdat" => {
                    let (duration, independent) = self.moof.take().ok_or(Fmp4Error::MdatWithoutMoof(at))?;
                    let end = self.scanned + size;
                    let bytes = self.pending.split_to(end).freeze();
                    self.offset += end as u64;
                    self.scanned = 0;
                    out.push(Chunk { bytes, duration, independent });
                }
                _ => self.scanned += size, // styp, prft, emsg, sidx, free: they travel with the next chunk
            }
        }
        Ok(out)
    }

    /// Ends the upload: the bytes after the last complete chunk, which must be none (trailing boxes that
    /// belong to no chunk, such as a closing `sidx` or `mfra`, are returned to be appended to the segment).
    pub fn finish(self) -> Result<Bytes, Fmp4Error> {
        if self.scanned < self.pending.len() {
            return Err(Fmp4Error::Truncated(self.pending.len() - self.scanned));
        }
        if self.moof.is_some() {
            return Err(Fmp4Error::Malformed("moof"));
        }
        Ok(self.pending.freeze())
    }
}

/// A copy of `chunk` whose track fragments decode `by` ticks later (`tfdt`'s base media decode time moved
/// on): a looped clip plays on as one continuous timeline. A 32-bit `tfdt` wraps.
pub fn shift_decode_time(chunk: &[u8], by: u64) -> Result<Bytes, Fmp4Error> {
    let mut out = chunk.to_vec();
    let mut at = 0;
    while at < out.len() {
        let h = header(&out[at..], at as u64)?.ok_or(Fmp4Error::Truncated(out.len() - at))?;
        let end =
            at.checked_add(h.size as usize).filter(|&e| e <= out.len()).ok_or(Fmp4Error::Truncated(out.len() - at))?;
        if &h.kind == b"moof" {
            let mut inner = at + h.header;
            while inner < end {
                let t = header(&out[inner..end], inner as u64)?.ok_or(Fmp4Error::Malformed("moof"))?;
                let t_end =
                    inner.checked_add(t.size as usize).filter(|&e| e <= end).ok_or(Fmp4Error::Malformed("moof"))?;
                if &t.kind == b"traf" {
                    let mut box_at = inner + t.header;
                    while box_at < t_end {
                        let b = header(&out[box_at..t_end], box_at as u64)?.ok_or(Fmp4Error::Malformed("traf"))?;
                        let b_end = box_at
                            .checked_add(b.size as usize)
                            .filter(|&e| e <= t_end)
                            .ok_or(Fmp4Error::Malformed("traf"))?;
                        if &b.kind == b"tfdt" {
                            let field = box_at + b.header + 4;
                            match out.get(box_at + b.header) {
                                Some(1) if field + 8 <= b_end => {
                                    let v = u64::from_be_bytes(out[field..field + 8].try_into().expect("8 bytes"));
                                    out[field..field + 8].copy_from_slice(&v.wrapping_add(by).to_be_bytes());
                                }
                                Some(0) if field + 4 <= b_end => {
                                    let v = u32::from_be_bytes(out[field..field + 4].try_into().expect("4 bytes"));
                                    out[field..field + 4].copy_from_slice(&v.wrapping_add(by as u32).to_be_bytes());
                                }
                                _ => return Err(Fmp4Error::Malformed("tfdt")),
                            }
                        }
                        box_at = b_end;
                    }
                }
                inner = t_end;
            }
        }
        at = end;
    }
    Ok(out.into())
}

/// Builders of fragmented MP4 for tests here and elsewhere in the crate (the part cutter's, the demo's).
#[cfg(test)]
pub(crate) mod build {
    fn boxed(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut out = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(payload);
        out
    }

    /// An init segment with one track of `timescale` ticks per second.
    pub fn init(timescale: u32) -> Vec<u8> {
        let mut mdhd = vec![0u8; 12];
        mdhd.extend_from_slice(&timescale.to_be_bytes());
        mdhd.extend_from_slice(&[0u8; 8]);
        let trak = boxed(b"trak", &boxed(b"mdia", &boxed(b"mdhd", &mdhd)));
        let mut trex = vec![0u8; 12];
        trex.extend_from_slice(&1000u32.to_be_bytes()); // default duration
        trex.extend_from_slice(&[0u8; 4]);
        trex.extend_from_slice(&0x0101_0000u32.to_be_bytes()); // default: not sync
        let mvex = boxed(b"mvex", &boxed(b"trex", &trex));
        let mut out = boxed(b"ftyp", b"iso6\0\0\0\0");
        out.extend(boxed(b"moov", &[trak, mvex].concat()));
        out
    }

    /// A chunk of `samples` samples of `duration` ticks each, the first a sync sample when `sync`.
    pub fn chunk(samples: u32, duration: u32, sync: bool) -> Vec<u8> {
        let tfhd = [0u8, 0, 0, 0, 0, 0, 0, 1].to_vec();
        let mut trun = 0x0000_0105u32.to_be_bytes().to_vec(); // data offset, first flags, durations
        trun.extend_from_slice(&samples.to_be_bytes());
        trun.extend_from_slice(&0u32.to_be_bytes());
        trun.extend_from_slice(&(if sync { 0x0200_0000u32 } else { 0x0101_0000 }).to_be_bytes());
        for _ in 0..samples {
            trun.extend_from_slice(&duration.to_be_bytes());
        }
        let tfdt = [1u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7].to_vec();
        let traf = boxed(b"traf", &[boxed(b"tfhd", &tfhd), boxed(b"tfdt", &tfdt), boxed(b"trun", &trun)].concat());
        let mut out = boxed(b"moof", &traf);
        out.extend(boxed(b"mdat", &vec![0xab; samples as usize * 7]));
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn init_gives_the_timescale_and_defaults() {
        let info = InitInfo::parse(&build::init(90_000)).unwrap();
        assert_eq!(info, InitInfo { timescale: 90_000, default_duration: 1000, default_flags: 0x0101_0000 });
        assert_eq!(InitInfo::parse(b"not mp4 at all"), Err(Fmp4Error::Malformed("file")));
        assert_eq!(InitInfo::parse(&[]), Err(Fmp4Error::Malformed("moov")));
    }

    #[test]
    fn chunks_come_out_whole_whatever_the_pieces() {
        let segment = [build::chunk(5, 512, true), build::chunk(5, 512, false), build::chunk(3, 512, false)].concat();
        let info = InitInfo::parse(&build::init(12_800)).unwrap();
        for piece in [1, 7, 100, segment.len()] {
            let mut chunks = Chunks::new(info);
            let mut got = Vec::new();
            for bytes in segment.chunks(piece) {
                got.extend(chunks.push(bytes).unwrap());
            }
            assert!(chunks.finish().unwrap().is_empty());
            let summary: Vec<_> = got.iter().map(|c| (c.duration, c.independent)).collect();
            assert_eq!(summary, [(2560, true), (2560, false), (1536, false)], "pieces of {piece}");
            assert_eq!(got.iter().flat_map(|c| c.bytes.to_vec()).collect::<Vec<_>>(), segment);
        }
    }

    #[test]
    fn decode_times_shift_and_nothing_else_changes() {
        let chunk = build::chunk(2, 10, true);
        let shifted = shift_decode_time(&chunk, 1000).unwrap();
        let at = chunk.windows(4).position(|w| w == b"tfdt").unwrap() + 8;
        assert_eq!(u64::from_be_bytes(shifted[at..at + 8].try_into().unwrap()), 1007);
        assert_eq!(shifted[..at], chunk[..at]);
        assert_eq!(shifted[at + 8..], chunk[at + 8..]);
        assert!(shift_decode_time(&chunk[..chunk.len() - 1], 1).is_err());
    }

    #[test]
    fn bad_input_is_an_error() {
        let info = InitInfo::parse(&build::init(1000)).unwrap();
        let mut chunks = Chunks::new(info);
        assert_eq!(chunks.push(b"\0\0\0\x04moof"), Err(Fmp4Error::BadSize { kind: "moof".into(), at: 0, size: 4 }));
        let mut chunks = Chunks::new(info);
        assert!(matches!(chunks.push(b"\xff\0\0\0mdat"), Err(Fmp4Error::TooLarge { .. })));
        let mut chunks = Chunks::new(info);
        assert_eq!(chunks.push(b"\0\0\0\x08mdat"), Err(Fmp4Error::MdatWithoutMoof(0)));
        let mut chunks = Chunks::new(info);
        chunks.push(&build::chunk(2, 10, true)[..20]).unwrap();
        assert_eq!(chunks.finish(), Err(Fmp4Error::Truncated(20)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever bytes arrive, in whatever pieces, the splitter answers without panicking, and the chunks
        /// it hands out are the upload's bytes in order.
        #[test]
        fn any_bytes_split_consistently(data in proptest::collection::vec(any::<u8>(), 0..600), piece in 1usize..64) {
            let mut chunks = Chunks::new(InitInfo { timescale: 1000, default_duration: 1, default_flags: 0 });
            let mut out = Vec::new();
            for bytes in data.chunks(piece) {
                match chunks.push(bytes) {
                    Ok(got) => out.extend(got.into_iter().flat_map(|c| c.bytes.to_vec())),
                    Err(_) => return Ok(()),
                }
            }
            prop_assert!(data.starts_with(&out));
        }
    }
}
