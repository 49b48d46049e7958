//! `cargo +nightly fuzz run where_clause`: see `shapeshard::fuzzing::where_clause`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (_, target) = shapeshard::fuzzing::TARGETS
        .iter()
        .find(|(name, _)| *name == "where_clause")
        .expect("a target of that name");
    target(data);
});
