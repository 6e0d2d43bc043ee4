//! Which shard holds a key: twemproxy's ketama continuum (its default `distribution`),
//! with its default key hash, `fnv1a_64`, so a key lands on the shard twemproxy would
//! choose for the same servers and weights.
//!
//! Each shard is named `ip:port` (twemproxy's name for a server listed without one) and
//! gets `floor(weight / total * 160 / 4 * shards) * 4` points: for each group `i` of
//! four, the MD5 of `"<name>-<i>"` gives four 32-bit little-endian positions. A key's
//! hash goes to the first point at or after it, wrapping round. A shard's points depend
//! only on its name, weight and the totals, so adding a shard moves about 1/n of the
//! keys, and a shard that is down keeps its keys (they get errors, as with twemproxy's
//! `auto_eject_hosts: false`) rather than moving them where they are not.

/// Points per shard at equal weights (twemproxy's `KETAMA_POINTS_PER_SERVER`).
const POINTS_PER_SHARD: f32 = 160.0;
const POINTS_PER_HASH: u32 = 4;

/// A continuum over shards `0..n` (indexes into the caller's list).
#[derive(Debug)]
pub struct Continuum {
    /// (position, shard), sorted by position.
    points: Vec<(u32, u32)>,
}

impl Continuum {
    /// `shards`: each shard's name and weight, in the caller's order.
    pub fn new<'a>(shards: impl Iterator<Item = (&'a str, u32)> + Clone) -> Continuum {
        let count = shards.clone().count() as f32;
        let total: u64 = shards.clone().map(|(_, w)| u64::from(w)).sum();
        let mut points = Vec::new();
        for (index, (name, weight)) in shards.enumerate() {
            if total == 0 || weight == 0 {
                continue;
            }
            // Single precision, as twemproxy computes it, so the counts agree.
            let share = weight as f32 / total as f32;
            let groups = (share * POINTS_PER_SHARD / POINTS_PER_HASH as f32 * count
                + 0.000_000_000_1)
                .floor() as u32;
            for group in 0..groups {
                let digest = super::md5::digest(format!("{name}-{group}").as_bytes());
                for align in 0..POINTS_PER_HASH as usize {
                    let at =
                        u32::from_le_bytes(digest[align * 4..align * 4 + 4].try_into().unwrap());
                    points.push((at, index as u32));
                }
            }
        }
        points.sort_unstable();
        Continuum { points }
    }

    /// The shard for a key hash; None when no shard has weight.
    pub fn shard(&self, hash: u32) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let i = self.points.partition_point(|&(at, _)| at < hash);
        let (_, shard) = self.points[if i == self.points.len() { 0 } else { i }];
        Some(shard as usize)
    }
}

/// A key's position under `hash`.
#[inline]
pub fn hash(hash: sinew_config::redis::RedisHash, key: &[u8]) -> u32 {
    match hash {
        sinew_config::redis::RedisHash::Fnv1a64 => fnv1a_64(key),
        sinew_config::redis::RedisHash::Md5 => md5_hash(key),
    }
}

/// twemproxy's `md5` key hash: the digest's first four bytes, little-endian.
pub fn md5_hash(key: &[u8]) -> u32 {
    let d = super::md5::digest(key);
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

/// twemproxy's `fnv1a_64`: FNV-1a with the 64-bit constants truncated to 32 bits, and
/// each byte taken as a signed `char` (bytes over 0x7f are sign-extended).
pub fn fnv1a_64(key: &[u8]) -> u32 {
    let mut hash: u32 = 0xcbf2_9ce4_8422_2325_u64 as u32;
    for &b in key {
        hash ^= b as i8 as i32 as u32;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3_u64 as u32);
    }
    hash
}

/// The part of `key` that is hashed: with hash tags on, what lies between the first `{`
/// and the next `}` when that is not empty (twemproxy's `hash_tag: "{}"`).
pub fn hashed_part(key: &[u8], hashtags: bool) -> &[u8] {
    if hashtags {
        if let Some(open) = memchr::memchr(b'{', key) {
            if let Some(len) = memchr::memchr(b'}', &key[open + 1..]) {
                if len > 0 {
                    return &key[open + 1..open + 1 + len];
                }
            }
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_shards_get_160_points_each_and_weights_scale_them() {
        let c = Continuum::new(
            [("127.0.0.1:1", 1), ("127.0.0.1:2", 1), ("127.0.0.1:3", 1)].into_iter(),
        );
        assert_eq!(c.points.len(), 480);
        let c = Continuum::new([("a:1", 1), ("b:1", 3)].into_iter());
        let of = |s: u32| c.points.iter().filter(|p| p.1 == s).count();
        assert_eq!((of(0), of(1)), (80, 240));
    }

    #[test]
    fn a_key_keeps_its_shard_when_an_unrelated_shard_is_added() {
        let three = Continuum::new([("a:1", 1), ("b:1", 1), ("c:1", 1)].into_iter());
        let four = Continuum::new([("a:1", 1), ("b:1", 1), ("c:1", 1), ("d:1", 1)].into_iter());
        let keys: Vec<String> = (0..1000).map(|i| format!("key:{i}")).collect();
        let moved = keys
            .iter()
            .filter(|k| {
                let h = fnv1a_64(k.as_bytes());
                let (before, after) = (three.shard(h).unwrap(), four.shard(h).unwrap());
                after != 3 && after != before
            })
            .count();
        // Points of one weight share change with the count, so a few keys move anyway.
        assert!(moved < 100, "{moved} keys moved between old shards");
    }

    #[test]
    fn fnv1a_64_is_twemproxys_truncated_variant() {
        assert_eq!(fnv1a_64(b""), 0x8422_2325);
        // Worked by hand: (0x84222325 ^ 0x61) * 0x1b3 mod 2^32.
        assert_eq!(fnv1a_64(b"a"), (0x8422_2325u32 ^ 0x61).wrapping_mul(0x1b3));
    }

    #[test]
    fn hash_tags_hash_only_the_braced_part() {
        assert_eq!(hashed_part(b"user:{42}:name", true), b"42");
        assert_eq!(hashed_part(b"user:{}:name", true), b"user:{}:name");
        assert_eq!(hashed_part(b"user:{42}:name", false), b"user:{42}:name");
        assert_eq!(hashed_part(b"a{b", true), b"a{b");
    }
}
