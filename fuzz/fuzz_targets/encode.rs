//! `cargo +nightly fuzz run encode`: see `shapeshard::fuzzing::encode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (_, target) = shapeshard::fuzzing::TARGETS
        .iter()
        .find(|(name, _)| *name == "encode")
        .expect("a target of that name");
    target(data);
});
