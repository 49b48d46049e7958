//! Which shard owns what: a pure function every shard can compute, so a
//! request is routed without asking anyone.

/// The owner of `key` among `shards` shards.
pub fn shard_of(key: u64, shards: usize) -> usize {
    assert!(shards > 0, "a server has at least one shard");
    (key % shards as u64) as usize
}

/// A stable 64-bit hash (FNV-1a): the same bytes hash the same on every
/// shard, every run and every build, unlike `std`'s randomised hasher.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ b as u64).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_stable_and_in_range() {
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        for n in 1..8 {
            for key in ["public.items", "public.users|id = 1", ""] {
                let h = stable_hash(key.as_bytes());
                assert!(shard_of(h, n) < n);
                assert_eq!(shard_of(h, n), shard_of(stable_hash(key.as_bytes()), n));
            }
        }
    }
}
