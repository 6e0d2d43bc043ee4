//! Sinew's fuzzing kit, shared by every crate's `fuzz_` tests.
//!
//! Fuzzing here runs on stable Rust as ordinary tests: proptest generates inputs and,
//! when one fails, shrinks it to a small one that becomes a named regression test. Two
//! kinds of input reach each parser: random bytes or tokens, and real samples (example
//! configs, captured requests, encoded resources) mutated the way real damage looks —
//! flipped bits, truncation, splices from another sample, duplicated or swapped lines.
//!
//! How many cases run is one knob for the whole workspace: `SINEW_FUZZ_CASES` (see
//! docs/fuzzing.md). A target weighs its cases with [`run`]'s `cost`, so a socket exchange
//! counts as many in-process parses, and the whole suite scales together.

use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};

pub use proptest;

/// Environment variable: cases per in-process parser target. Targets that cost more per
/// case run `cases / cost` of them.
pub const CASES_VAR: &str = "SINEW_FUZZ_CASES";
/// Environment variable: a fixed seed (decimal) to replay a run; otherwise each run
/// draws a new one and prints it when a case fails.
pub const SEED_VAR: &str = "SINEW_FUZZ_SEED";
/// Sized so that every fuzz target together takes about a minute in `scripts/test` on a
/// two-core machine (docs/fuzzing.md has the measurement).
pub const DEFAULT_CASES: u32 = 5_000;

/// Cases a target of this cost runs.
pub fn cases(cost: u32) -> u32 {
    let base = std::env::var(CASES_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(DEFAULT_CASES);
    (base / cost.max(1)).max(1)
}

/// Runs `test` on inputs from `strategy`; panics with the seed and the shrunk input when
/// one fails (a panic inside `test` counts as a failure). Returns the cases run.
pub fn run<S>(
    target: &str,
    cost: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> u32
where
    S: Strategy,
    S::Value: Debug,
{
    let cases = cases(cost);
    let seed = std::env::var(SEED_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(fresh_seed);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        // Failures become named regression tests in the code, not files beside it.
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(config, rng);
    match runner.run(&strategy, test) {
        Ok(()) => {
            eprintln!("{target}: {cases} cases, 0 failures (seed {seed})");
            cases
        }
        Err(TestError::Fail(why, input)) => panic!(
            "{target}: failed (replay with {SEED_VAR}={seed} {CASES_VAR}={cases}): {why}\n\
             minimal input: {input:?}"
        ),
        Err(TestError::Abort(why)) => {
            panic!("{target}: aborted (replay with {SEED_VAR}={seed}): {why}")
        }
    }
}

fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Counts panics anywhere in the process from the first call on, including those that
/// tokio catches in spawned tasks (which would otherwise pass unseen: a proxy's
/// connection task that panics just drops its connection).
pub fn panics_so_far() -> usize {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
    PANICS.load(Ordering::SeqCst)
}

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// One change to a sample. Positions are taken modulo the sample's length, so shrinking
/// them towards zero keeps them meaningful.
#[derive(Debug, Clone)]
pub enum Mutation {
    FlipBit {
        at: usize,
        bit: u8,
    },
    SetByte {
        at: usize,
        byte: u8,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    /// A token from the target's dictionary (delimiters, keywords, edge numbers).
    InsertToken {
        at: usize,
        token: usize,
    },
    /// Overwrites with a dictionary token instead of inserting it.
    ReplaceWithToken {
        at: usize,
        token: usize,
    },
    Delete {
        at: usize,
        len: usize,
    },
    Truncate {
        at: usize,
    },
    DuplicateRange {
        at: usize,
        len: usize,
        to: usize,
    },
    /// Bytes from another sample (or this one) spliced in.
    Splice {
        at: usize,
        sample: usize,
        from: usize,
        len: usize,
    },
    DuplicateLine {
        line: usize,
    },
    DeleteLine {
        line: usize,
    },
    SwapLines {
        a: usize,
        b: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = || any::<usize>();
    prop_oneof![
        (at(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        (at(), any::<u8>()).prop_map(|(at, byte)| Mutation::SetByte { at, byte }),
        (at(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (at(), any::<usize>()).prop_map(|(at, token)| Mutation::InsertToken { at, token }),
        (at(), any::<usize>()).prop_map(|(at, token)| Mutation::ReplaceWithToken { at, token }),
        (at(), 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        at().prop_map(|at| Mutation::Truncate { at }),
        (at(), 1usize..64, at()).prop_map(|(at, len, to)| Mutation::DuplicateRange { at, len, to }),
        (at(), any::<usize>(), at(), 1usize..128).prop_map(|(at, sample, from, len)| {
            Mutation::Splice {
                at,
                sample,
                from,
                len,
            }
        }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        any::<usize>().prop_map(|line| Mutation::DeleteLine { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
    ]
}

/// A sample with 1 to 8 mutations applied.
pub fn mutated(
    samples: Vec<Vec<u8>>,
    dictionary: &'static [&'static [u8]],
) -> impl Strategy<Value = Vec<u8>> {
    assert!(!samples.is_empty(), "mutated() needs at least one sample");
    let count = samples.len();
    (0..count, proptest::collection::vec(mutation(), 1..8))
        .prop_map(move |(i, ms)| apply(&samples[i], &samples, &ms, dictionary))
}

/// [`mutated`] for text: invalid UTF-8 the mutations make is replaced, so the parser
/// sees a `&str` as it would from a file read as text.
pub fn mutated_text(
    samples: Vec<String>,
    dictionary: &'static [&'static [u8]],
) -> impl Strategy<Value = String> {
    let samples = samples.into_iter().map(String::into_bytes).collect();
    mutated(samples, dictionary).prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Random input built from dictionary tokens and random bytes: shaped enough to get past
/// a parser's first checks, which uniform random bytes rarely do.
pub fn token_soup(
    dictionary: &'static [&'static [u8]],
    max_pieces: usize,
) -> impl Strategy<Value = Vec<u8>> {
    assert!(!dictionary.is_empty(), "token_soup() needs a dictionary");
    let piece = prop_oneof![
        3 => (0..dictionary.len()).prop_map(move |i| dictionary[i].to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 1..8),
    ];
    proptest::collection::vec(piece, 0..max_pieces).prop_map(|pieces| pieces.concat())
}

/// Applies `mutations` to `sample` in order.
pub fn apply(
    sample: &[u8],
    samples: &[Vec<u8>],
    mutations: &[Mutation],
    dictionary: &[&[u8]],
) -> Vec<u8> {
    let mut out = sample.to_vec();
    let token = |i: usize| -> &[u8] {
        if dictionary.is_empty() {
            b""
        } else {
            dictionary[i % dictionary.len()]
        }
    };
    for m in mutations {
        let len = out.len();
        // A position in 0..=len (an insertion point) and one in 0..len (a byte).
        let point = |at: usize| at % (len + 1);
        match m {
            Mutation::FlipBit { at, bit } if len > 0 => out[at % len] ^= 1 << bit,
            Mutation::SetByte { at, byte } if len > 0 => out[at % len] = *byte,
            Mutation::Insert { at, bytes } => {
                let at = point(*at);
                out.splice(at..at, bytes.iter().copied());
            }
            Mutation::InsertToken { at, token: t } => {
                let at = point(*at);
                out.splice(at..at, token(*t).iter().copied());
            }
            Mutation::ReplaceWithToken { at, token: t } => {
                let at = point(*at);
                let tok = token(*t);
                let end = (at + tok.len()).min(len);
                out.splice(at..end, tok.iter().copied());
            }
            Mutation::Delete { at, len: n } if len > 0 => {
                let at = at % len;
                out.drain(at..(at + n).min(len));
            }
            Mutation::Truncate { at } => out.truncate(point(*at)),
            Mutation::DuplicateRange { at, len: n, to } if len > 0 => {
                let at = at % len;
                let copy = out[at..(at + n).min(len)].to_vec();
                let to = point(*to);
                out.splice(to..to, copy);
            }
            Mutation::Splice {
                at,
                sample,
                from,
                len: n,
            } => {
                let other = &samples[sample % samples.len()];
                if !other.is_empty() {
                    let from = from % other.len();
                    let piece = &other[from..(from + n).min(other.len())];
                    let at = point(*at);
                    out.splice(at..at, piece.iter().copied());
                }
            }
            Mutation::DuplicateLine { line } => {
                let mut lines = split_lines(&out);
                if !lines.is_empty() {
                    let i = line % lines.len();
                    lines.insert(i, lines[i].clone());
                    out = lines.concat();
                }
            }
            Mutation::DeleteLine { line } => {
                let mut lines = split_lines(&out);
                if !lines.is_empty() {
                    lines.remove(line % lines.len());
                    out = lines.concat();
                }
            }
            Mutation::SwapLines { a, b } => {
                let mut lines = split_lines(&out);
                if !lines.is_empty() {
                    let n = lines.len();
                    lines.swap(a % n, b % n);
                    out = lines.concat();
                }
            }
            // Byte mutations of an empty input: nothing to change.
            _ => {}
        }
    }
    out
}

/// Lines with their line feeds kept, so joining them gives the input back.
fn split_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_stay_within_the_sample_and_lines_survive_a_round_trip() {
        let sample = b"a: 1\nb: 2\nc: 3\n".to_vec();
        let samples = vec![sample.clone()];
        let swapped = apply(
            &sample,
            &samples,
            &[Mutation::SwapLines { a: 0, b: 2 }],
            &[],
        );
        assert_eq!(swapped, b"c: 3\nb: 2\na: 1\n");
        let duplicated = apply(
            &sample,
            &samples,
            &[Mutation::DuplicateLine { line: 4 }],
            &[],
        );
        assert_eq!(duplicated, b"a: 1\nb: 2\nb: 2\nc: 3\n");
        let truncated = apply(&sample, &samples, &[Mutation::Truncate { at: 3 }], &[]);
        assert_eq!(truncated, b"a: ");
        let token = apply(
            &sample,
            &samples,
            &[Mutation::ReplaceWithToken { at: 3, token: 0 }],
            &[b"~"],
        );
        assert_eq!(token, b"a: ~\nb: 2\nc: 3\n");
        // Every mutation of an empty sample is harmless.
        let empty: Vec<u8> = Vec::new();
        for m in [
            Mutation::FlipBit { at: 5, bit: 1 },
            Mutation::Delete { at: 1, len: 3 },
            Mutation::DuplicateRange {
                at: 0,
                len: 2,
                to: 9,
            },
            Mutation::SwapLines { a: 1, b: 2 },
        ] {
            assert!(apply(&empty, std::slice::from_ref(&empty), &[m], &[]).is_empty());
        }
    }

    #[test]
    fn run_reports_a_failing_case_with_its_shrunk_input() {
        let outcome = std::panic::catch_unwind(|| {
            run("fuzz_selftest", 1, 0u32..1000, |n| {
                prop_assert!(n < 500);
                Ok(())
            })
        });
        let message = *outcome
            .expect_err("a property false for half the inputs must fail")
            .downcast::<String>()
            .expect("a formatted message");
        assert!(message.contains("minimal input: 500"), "{message}");
    }
}
