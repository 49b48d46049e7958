//! `cargo +nightly fuzz run pgoutput`: see `shapeshard::fuzzing::pgoutput`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (_, target) = shapeshard::fuzzing::TARGETS
        .iter()
        .find(|(name, _)| *name == "pgoutput")
        .expect("a target of that name");
    target(data);
});
