//! Feeds arbitrary bytes to the CMAF readers an origin runs on publishers' uploads: the init segment reader
//! and the chunk splitter, the upload cut at an arbitrary point. Neither may panic, and the chunks handed
//! out are the upload's bytes in order.
//!
//! Run from the repository root with `cargo +nightly fuzz run fmp4_chunks fuzz/corpus/fmp4_chunks
//! fuzz/seeds/fmp4_chunks`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lightpath::hls::fmp4::{Chunks, InitInfo};

fuzz_target!(|data: &[u8]| {
    let info = InitInfo::parse(data).unwrap_or(InitInfo { timescale: 90_000, default_duration: 3000, default_flags: 0 });
    let cut = data.first().map_or(0, |&b| b as usize).min(data.len());
    let mut chunks = Chunks::new(info);
    let mut out = Vec::new();
    for piece in [&data[..cut], &data[cut..]] {
        match chunks.push(piece) {
            Ok(got) => out.extend(got.into_iter().flat_map(|c| c.bytes.to_vec())),
            Err(_) => return,
        }
    }
    assert!(data.starts_with(&out));
    let _ = chunks.finish();
});
