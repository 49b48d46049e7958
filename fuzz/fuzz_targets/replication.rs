//! `cargo +nightly fuzz run replication`: see `shapeshard::fuzzing::replication`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (_, target) = shapeshard::fuzzing::TARGETS
        .iter()
        .find(|(name, _)| *name == "replication")
        .expect("a target of that name");
    target(data);
});
