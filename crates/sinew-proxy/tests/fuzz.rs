//! Fuzzing the data plane's own parsers, in process: the trace-context headers (W3C
//! `traceparent`, B3 single and multi), and config compilation (mutated examples/*.yaml
//! taken as far as `sinew validate` takes them). The HTTP/1 codec's targets are in
//! sinew-codec (tests/fuzz.rs). The bytes-over-a-socket targets are in
//! sinew-integration's fuzz_http1.rs and fuzz_http2.rs. Case counts: `SINEW_FUZZ_CASES`
//! (docs/fuzzing.md).

use http::{HeaderMap, HeaderName, HeaderValue};
use sinew_fuzz::proptest::prelude::*;
use sinew_proxy::filters::trace::context::{extract, inject, Outgoing, Parent};

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
