//! Feeds arbitrary bytes to the mesh frame decoder: it must never panic, and whatever it accepts must
//! re-encode to exactly the bytes it was decoded from (the encoding is canonical).
//!
//! Run from the repository root with `cargo +nightly fuzz run wire_decode fuzz/corpus/wire_decode
//! fuzz/seeds/wire_decode`: libFuzzer grows the first (ignored by git) from the committed seeds in the second.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lightpath::wire::Frame;

fuzz_target!(|data: &[u8]| {
    if let Ok((frame, used)) = Frame::decode(data) {
        let mut out = Vec::new();
        frame.encode(&mut out);
        assert_eq!(out, &data[..used]);
    }
});
