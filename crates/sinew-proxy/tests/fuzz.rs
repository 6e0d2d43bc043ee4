//! Fuzzing the data plane's own parsers, in process: the HTTP/1 head guard (the reader
//! that follows request framing ahead of hyper), the trace-context headers (W3C
//! `traceparent`, B3 single and multi), and config compilation (mutated examples/*.yaml
//! taken as far as `sinew validate` takes them). The bytes-over-a-socket targets are in
//! sinew-integration's fuzz_http1.rs and fuzz_http2.rs. Case counts: `SINEW_FUZZ_CASES`
//! (docs/fuzzing.md).

use http::{HeaderMap, HeaderName, HeaderValue};
use sinew_fuzz::proptest::prelude::*;
use sinew_proxy::bench_api::{HeadCheck, Scanner};
use sinew_proxy::trace::context::{extract, inject, Outgoing, Parent};
use sinew_upstream::tap::ReadObserver;

/// Requests as clients write them: every framing the guard follows.
const REQUEST_SAMPLES: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\n",
    b"\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x00",
    b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcPATCH /y HTTP/1.1\r\nHost: a\r\n\r\n",
];

/// Pieces of HTTP/1 framing, and the shapes smuggling is made of.
const HTTP1_DICTIONARY: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\r\n",
    b": ",
    b"GET / HTTP/1.1\r\n",
    b"POST / HTTP/1.1\r\n",
    b"PRI",
    b"P",
    b"CONNECT ",
    b"HTTP/1.0",
    b"Host: a\r\n",
    b"Content-Length: ",
    b"content-length:",
    b"Content-Length: 0\r\n",
    b"Content-Length: 18446744073709551616\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"transfer-encoding: gzip, chunked\r\n",
    b"Upgrade: h2c\r\n",
    b"Connection: close\r\n",
    b"0\r\n\r\n",
    b"ffffffffffffffff\r\n",
    b"5;a=b\r\n",
    b" ",
    b"\t",
    b"\x00",
    b"\xff",
];

fn request_samples() -> Vec<Vec<u8>> {
    REQUEST_SAMPLES.iter().map(|s| s.to_vec()).collect()
}

/// What the guard concluded about a byte stream: each request's verdict, in order, and
/// whether it stopped following the stream.
fn guard_verdicts(input: &[u8], cuts: &[usize]) -> (Vec<Option<&'static str>>, bool) {
    let check = HeadCheck::new();
    let mut scanner = Scanner::new(check.clone());
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut start = 0;
    for cut in cuts.into_iter().chain([input.len()]) {
        scanner.feed(&input[start..cut]);
        start = cut;
    }
    let verdicts = (0..16).map(|_| check.next_request_problem()).collect();
    (verdicts, scanner.is_done())
}

/// The guard sees the bytes in whatever pieces TCP delivers them; its verdicts must not
/// depend on where the pieces were cut, or a client chooses them by how it writes.
fn guard_is_cut_invariant(input: &[u8], cuts: &[usize]) -> Result<(), TestCaseError> {
    let whole = guard_verdicts(input, &[]);
    let pieces = guard_verdicts(input, cuts);
    prop_assert_eq!(
        &whole,
        &pieces,
        "verdicts differ when the input is cut at {:?}",
        cuts
    );
    let bytewise: Vec<usize> = (1..input.len()).collect();
    prop_assert_eq!(&whole, &guard_verdicts(input, &bytewise), "byte by byte");
    Ok(())
}

#[test]
fn fuzz_head_guard_mutated() {
    sinew_fuzz::run(
        "fuzz_head_guard_mutated",
        1,
        (
            sinew_fuzz::mutated(request_samples(), HTTP1_DICTIONARY),
            prop::collection::vec(any::<usize>(), 0..6),
        ),
        |(input, cuts)| guard_is_cut_invariant(&input, &cuts),
    );
}

#[test]
fn fuzz_head_guard_random() {
    sinew_fuzz::run(
        "fuzz_head_guard_random",
        1,
        (
            sinew_fuzz::token_soup(HTTP1_DICTIONARY, 32),
            prop::collection::vec(any::<usize>(), 0..6),
        ),
        |(input, cuts)| guard_is_cut_invariant(&input, &cuts),
    );
}

/// Found by fuzz_head_guard_*: a request whose first TCP segment was the single byte
/// `P` (or `PR`) looked like the start of HTTP/2's preface, and the guard stood down
/// for the whole connection, so `POST` sent as `P` + `OST ...` escaped every check.
#[test]
fn head_guard_regression_first_segment_is_a_prefix_of_the_http2_preface() {
    let input = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
    for first in [1, 2] {
        let (verdicts, _) = guard_verdicts(input, &[first]);
        assert_eq!(
            verdicts[0],
            Some("ambiguous request framing (Content-Length)"),
            "first segment of {first} byte(s)"
        );
    }
    // The real preface still makes it stand down, however it is cut.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\n\n";
    for first in [1, 2, 3, 5] {
        assert_eq!(guard_verdicts(preface, &[first]), (vec![None; 16], true));
    }
}

/// Values each trace header takes, valid and almost valid.
const TRACE_SAMPLES: &[&str] = &[
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-future",
    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
    "e457b5a2e4d86bd1-e457b5a2e4d86bd1-d",
    "a3ce929d0e0e4736",
    "00f067aa0ba902b7",
    "1",
    "d",
    "true",
];

const TRACE_NAMES: &[&str] = &[
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

const TRACE_DICTIONARY: &[&[u8]] = &[b"-", b"0", b"f", b"F", b"00", b"ff", b"d", b"1"];

/// Up to six trace headers, each a mutated sample value (kept to bytes a header may hold).
fn trace_headers() -> impl Strategy<Value = Vec<(usize, Vec<u8>)>> {
    let samples: Vec<Vec<u8>> = TRACE_SAMPLES
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    prop::collection::vec(
        (
            0..TRACE_NAMES.len(),
            sinew_fuzz::mutated(samples, TRACE_DICTIONARY),
        ),
        0..6,
    )
}

fn header_map(pairs: &[(usize, Vec<u8>)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            map.append(HeaderName::from_static(TRACE_NAMES[*name]), value);
        }
    }
    map
}

#[test]
fn fuzz_trace_context() {
    sinew_fuzz::run(
        "fuzz_trace_context",
        1,
        (trace_headers(), 1..=u128::MAX, 1..=u64::MAX, any::<bool>()),
        |(pairs, random_trace_id, span_id, coin)| {
            let mut headers = header_map(&pairs);
            let incoming = extract(&headers);
            if let Some(parent) = incoming.parent {
                prop_assert!(parent.trace_id != 0 && parent.span_id != 0);
            }
            // As the proxy does: continue the caller's trace, or start one.
            let trace_id = incoming.parent.map_or(random_trace_id, |p| p.trace_id);
            let sampled = incoming.sampled.unwrap_or(coin);
            let out = Outgoing {
                trace_id,
                span_id,
                sampled,
            };
            inject(&mut headers, &incoming, out);
            // What the proxy writes, the next hop (another Sinew) reads back as its
            // parent, from W3C and from each B3 form it wrote.
            let want = Some(Parent { trace_id, span_id });
            let next = extract(&headers);
            prop_assert_eq!(next.parent, want);
            prop_assert_eq!(next.sampled, Some(sampled));
            if incoming.has_b3_single || incoming.has_b3_multi {
                headers.remove("traceparent");
                let b3 = extract(&headers);
                prop_assert_eq!(b3.parent, want);
                prop_assert_eq!(b3.sampled, Some(sampled));
            }
            Ok(())
        },
    );
}

fn example_configs() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let mut samples: Vec<String> = std::fs::read_dir(dir)
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| std::fs::read_to_string(p).expect("an example"))
        .collect();
    samples.sort();
    samples
}

const YAML_DICTIONARY: &[&[u8]] = &[
    b": ",
    b"\n  ",
    b"\n- ",
    b"{}",
    b"[]",
    b"~",
    b"-1",
    b"0",
    b"0s",
    b"4294967296",
    b"\"",
    b"(",
    b"[",
    b"\\",
    b"%",
    b"\x7f",
    b"\r",
    b"*",
    b"127.0.0.1:0",
    b"[::1]:0",
];

/// Mutated example configs taken through parsing, checking and compiling (regexes,
/// header values, certificates, access-log formats, tracing): errors, never a panic.
#[test]
fn fuzz_config_compile_mutated() {
    // Compiling a config with `tracing` builds its exporter, which needs a runtime;
    // `sinew proxy` has one (that `sinew validate` has none is issue 17's own item).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    // Relative certificate paths in the examples are relative to the repository root.
    std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .expect("repository root");
    sinew_fuzz::run(
        "fuzz_config_compile_mutated",
        4,
        sinew_fuzz::mutated_text(example_configs(), YAML_DICTIONARY),
        |text| {
            if let Ok(loaded) = sinew_config::load_str("fuzz.yaml", &text) {
                let _ = sinew_proxy::check(&loaded);
            }
            Ok(())
        },
    );
}
