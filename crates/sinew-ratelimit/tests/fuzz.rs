//! Fuzzing what the global rate limiter reads from Redis. Sinew has no Redis reply reader
//! of its own: the `redis` crate parses RESP and converts the script's answer to
//! `(allowed, limit, remaining, reset_ms)`, and Sinew turns that into a verdict. So the
//! fuzzed bytes go where a Redis server's would, onto the limiter's real connection: a
//! loopback server answers the handshake and the script load as Redis does, then answers
//! the decision's EVALSHA with random or mutated bytes.
//!
//! Properties: a decision ends within its timeout (plus scheduling slack) whatever the
//! bytes, nothing panics, garbage is `Unavailable` (the caller's failure mode decides),
//! and a well-formed answer gives exactly the verdict it says. Case counts:
//! `SINEW_FUZZ_CASES` (docs/fuzzing.md).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sinew_fuzz::proptest::prelude::*;
use sinew_ratelimit::{Counter, GlobalLimiter, GlobalVerdict, RedisOptions, Window};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

/// Reads one RESP command (an array of bulk strings, as clients send them); its
/// arguments, or None at EOF or on bytes that are not a command.
async fn read_command(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<Vec<u8>>> {
    loop {
        if let Some((args, used)) = parse_command(buf) {
            buf.drain(..used);
            return Some(args);
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn parse_command(buf: &[u8]) -> Option<(Vec<Vec<u8>>, usize)> {
    let line = |at: usize| -> Option<(&[u8], usize)> {
        let end = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
        Some((&buf[at..end], end + 2))
    };
    let (head, mut at) = line(0)?;
    let count: usize = std::str::from_utf8(head.strip_prefix(b"*")?)
        .ok()?
        .parse()
        .ok()?;
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        let (len, next) = line(at)?;
        let len: usize = std::str::from_utf8(len.strip_prefix(b"$")?)
            .ok()?
            .parse()
            .ok()?;
        if buf.len() < next + len + 2 {
            return None;
        }
        args.push(buf[next..next + len].to_vec());
        at = next + len + 2;
    }
    Some((args, at))
}

/// A server that speaks Redis's side of the handshake and the script load, and answers
/// every EVALSHA or EVAL with the bytes in `reply`.
async fn scripted_redis(reply: Arc<Mutex<Vec<u8>>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(args) = read_command(&mut stream, &mut buf).await {
                    let name = args.first().map(|a| a.to_ascii_uppercase());
                    let answer = match name.as_deref() {
                        Some(b"EVALSHA" | b"EVAL") => reply.lock().unwrap().clone(),
                        // SCRIPT LOAD answers the script's SHA-1; the client keeps its own.
                        Some(b"SCRIPT") => {
                            b"$40\r\n0123456789abcdef0123456789abcdef01234567\r\n".to_vec()
                        }
                        _ => b"+OK\r\n".to_vec(),
                    };
                    if stream.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Answers as window.lua's return value comes back from a real Redis, and errors Redis
/// sends.
const REPLY_SAMPLES: &[&[u8]] = &[
    b"*4\r\n:1\r\n:10\r\n:9\r\n:1000\r\n",
    b"*4\r\n:0\r\n:10\r\n:0\r\n:250\r\n",
    b"*4\r\n:1\r\n:4294967295\r\n:4294967294\r\n:86400000\r\n",
    b"-NOSCRIPT No matching script. Please use EVAL.\r\n",
    b"-BUSY Redis is busy running a script.\r\n",
    b"$-1\r\n",
    b"*-1\r\n",
];

const RESP_DICTIONARY: &[&[u8]] = &[
    b"\r\n",
    b"*",
    b"$",
    b":",
    b"+",
    b"-",
    b"*4\r\n",
    b"*1000000000\r\n",
    b"$-1\r\n",
    b"$9999999999\r\n",
    b":-1\r\n",
    b":256\r\n",
    b":4294967296\r\n",
    b":18446744073709551616\r\n",
    b":99999999999999999999999\r\n",
    b"%1\r\n",
    b"_\r\n",
    b"#t\r\n",
    b",1.5\r\n",
];

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// One decision with a fresh limiter (a garbage reply may break a connection, and each
/// case must start from a working one); the verdict and how long it took.
async fn decide_once(addr: SocketAddr, timeout: Duration) -> (GlobalVerdict, Duration) {
    let limiter = GlobalLimiter::new(
        RedisOptions {
            address: addr.to_string(),
            timeout,
            connect_timeout: Duration::from_secs(2),
        },
        Window::Fixed,
    );
    limiter.start();
    limiter.first_attempt(Duration::from_secs(2)).await;
    assert!(
        limiter.is_connected(),
        "the handshake with the scripted server failed"
    );
    let counters = [Counter {
        key: b"fuzz".to_vec(),
        limit: 10,
        window: Duration::from_secs(1),
    }];
    let began = Instant::now();
    let verdict = limiter.decide(&counters).await;
    (verdict, began.elapsed())
}

#[test]
fn fuzz_redis_replies_mutated() {
    let rt = runtime();
    let reply = Arc::new(Mutex::new(Vec::new()));
    let addr = rt.block_on(scripted_redis(reply.clone()));
    let samples = REPLY_SAMPLES.iter().map(|s| s.to_vec()).collect();
    let strategy = prop_oneof![
        3 => sinew_fuzz::mutated(samples, RESP_DICTIONARY),
        1 => sinew_fuzz::token_soup(RESP_DICTIONARY, 16),
    ];
    let timeout = Duration::from_millis(50);
    sinew_fuzz::run("fuzz_redis_replies_mutated", 20, strategy, |bytes| {
        let panics_before = sinew_fuzz::panics_so_far();
        *reply.lock().unwrap() = bytes;
        let (_verdict, took) = rt.block_on(decide_once(addr, timeout));
        prop_assert!(
            took < timeout + Duration::from_secs(1),
            "a decision took {:?} with a {:?} timeout",
            took,
            timeout
        );
        prop_assert_eq!(sinew_fuzz::panics_so_far(), panics_before, "a panic");
        Ok(())
    });
}

#[test]
fn fuzz_redis_replies_well_formed() {
    let rt = runtime();
    let reply = Arc::new(Mutex::new(Vec::new()));
    let addr = rt.block_on(scripted_redis(reply.clone()));
    // Numbers around each field's type's edges (a RESP integer is an i64).
    let field = || {
        prop_oneof![
            0i128..3,
            250i128..260,
            (u32::MAX as i128 - 1)..(u32::MAX as i128 + 2),
            (i64::MAX as i128 - 1)..=(i64::MAX as i128),
            -2i128..0,
            any::<u32>().prop_map(i128::from),
        ]
    };
    let strategy = (field(), field(), field(), field());
    sinew_fuzz::run(
        "fuzz_redis_replies_well_formed",
        20,
        strategy,
        |(allowed, limit, remaining, reset)| {
            *reply.lock().unwrap() =
                format!("*4\r\n:{allowed}\r\n:{limit}\r\n:{remaining}\r\n:{reset}\r\n")
                    .into_bytes();
            let (verdict, _) = rt.block_on(decide_once(addr, Duration::from_secs(2)));
            let fits = u8::try_from(allowed).is_ok()
                && u32::try_from(limit).is_ok()
                && u32::try_from(remaining).is_ok()
                && u64::try_from(reset).is_ok();
            let want = if !fits {
                GlobalVerdict::Unavailable
            } else if allowed == 1 {
                GlobalVerdict::Allowed {
                    limit: limit as u32,
                    remaining: remaining as u32,
                    reset: Duration::from_millis(reset as u64),
                }
            } else {
                GlobalVerdict::OverLimit {
                    limit: limit as u32,
                    reset: Duration::from_millis(reset as u64),
                }
            };
            prop_assert_eq!(verdict, want);
            Ok(())
        },
    );
}

/// Found by fuzz_redis_replies_well_formed: the redis crate converted the script's
/// integers to `u8`/`u32` by truncating them, so an `allowed` of 257 read as 1 (allowed)
/// and a limit of 2^32 as 0. Out-of-range answers are now `Unavailable`.
#[test]
fn redis_regression_out_of_range_answers_are_not_truncated() {
    let rt = runtime();
    let reply = Arc::new(Mutex::new(Vec::new()));
    let addr = rt.block_on(scripted_redis(reply.clone()));
    for answer in [
        "*4\r\n:257\r\n:10\r\n:9\r\n:1000\r\n",
        "*4\r\n:1\r\n:4294967296\r\n:9\r\n:1000\r\n",
        "*4\r\n:1\r\n:10\r\n:-1\r\n:1000\r\n",
        "*4\r\n:0\r\n:10\r\n:0\r\n:-1\r\n",
    ] {
        *reply.lock().unwrap() = answer.as_bytes().to_vec();
        let (verdict, _) = rt.block_on(decide_once(addr, Duration::from_secs(2)));
        assert_eq!(verdict, GlobalVerdict::Unavailable, "{answer:?}");
    }
}
