//! `cargo +nightly fuzz run segment`: see `shapeshard::fuzzing::segment`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (_, target) = shapeshard::fuzzing::TARGETS
        .iter()
        .find(|(name, _)| *name == "segment")
        .expect("a target of that name");
    target(data);
});
