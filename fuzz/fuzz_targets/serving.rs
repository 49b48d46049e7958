//! `cargo +nightly fuzz run serving`: see `shapeshard::fuzzing::serving`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (_, target) = shapeshard::fuzzing::TARGETS
        .iter()
        .find(|(name, _)| *name == "serving")
        .expect("a target of that name");
    target(data);
});
