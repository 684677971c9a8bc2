//! Feeds arbitrary text to the GraphML importer (`lightpath topology import`): it must never panic, and
//! whatever it imports must be a topology file that checks.
//!
//! Run from the repository root with `cargo +nightly fuzz run graphml_import fuzz/corpus/graphml_import
//! fuzz/seeds/graphml_import`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lightpath::topology::graphml::{import, ImportOptions};
use lightpath::topology::Topology;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for options in [ImportOptions::default(), ImportOptions { skip_unplaced: true, keep_largest: true, ..Default::default() }] {
        if let Ok(imported) = import(text, "fuzz", &options) {
            assert!(Topology::parse(&imported.text, "fuzz").is_ok());
        }
    }
});
