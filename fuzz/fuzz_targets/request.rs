//! `cargo +nightly fuzz run request`: see `shapeshard::fuzzing::request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (_, target) = shapeshard::fuzzing::TARGETS
        .iter()
        .find(|(name, _)| *name == "request")
        .expect("a target of that name");
    target(data);
});
