//! Fuzzing what sinew-config reads from users: the YAML loader (random and mutated
//! examples/*.yaml) and the access-log format language. The property for the loader is
//! `sinew validate`'s promise: a config or errors that each name a line and column in
//! the file, never a panic. Case counts: `SINEW_FUZZ_CASES` (docs/fuzzing.md).

use sinew_fuzz::proptest::prelude::*;

/// YAML shapes and values that sit at a parser's or a checker's edges.
const YAML_DICTIONARY: &[&[u8]] = &[
    b": ",
    b"\n  ",
    b"\n- ",
    b"\n      ",
    b"{}",
    b"[]",
    b"~",
    b"null",
    b"-1",
    b"0",
    b"0s",
    b"-5s",
    b"1e309",
    b"18446744073709551616",
    b"4294967296",
    b"65536",
    b"\"",
    b"'",
    b"&a ",
    b"*a",
    b"<<: *a",
    b"!!binary ",
    b"!tag ",
    b"\t",
    b"---\n",
    b"...\n",
    b"? ",
    b"|\n  ",
    b"%{",
    b"%",
    b"%START_TIME(%Q)%",
    b"%REQ(:AUTHORITY):0%",
    b"[::1]:0",
    b"127.0.0.1:99999",
    b"(?P<",
    b"\\u0000",
    b"\xef\xbb\xbf",
];

fn example_configs() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let mut samples: Vec<String> = std::fs::read_dir(dir)
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| std::fs::read_to_string(p).expect("an example"))
        .collect();
    samples.sort();
    assert!(samples.len() >= 20, "examples/*.yaml are the samples");
    samples
}

/// Loads `text` as `sinew validate` would and checks that every error has a position: its
/// own (the parser's, for syntax and type errors) or its field's in the file. Only an
/// error about the whole document may have neither (it is printed at 1:1, its start).
fn load_and_check_positions(text: &str) -> Result<(), TestCaseError> {
    // What `sinew validate` reads first, to tell a file's kind: it must end.
    sinew_config::yaml_documents(text);
    let map = sinew_config::SourceMap::index(text);
    let errors = match sinew_config::parse_str("fuzz.yaml", text) {
        Ok(loaded) => sinew_config::validate(&loaded.config),
        Err(d) => d.errors,
    };
    for e in errors {
        let position = e.position.or_else(|| map.lookup(&e.path));
        prop_assert!(
            position.is_some() || e.path.is_empty(),
            "an error the file does not locate: {}: {}",
            e.path,
            e.message
        );
        if let Some(p) = position {
            // YAML breaks lines at CR, LF and CRLF; the end-of-stream mark may sit one
            // line past the last break.
            let breaks = text.replace("\r\n", "\n").matches(['\r', '\n']).count();
            prop_assert!(
                p.line >= 1 && p.line <= breaks + 2,
                "line {} of a text with {} line breaks",
                p.line,
                breaks
            );
        }
    }
    Ok(())
}

#[test]
fn fuzz_config_yaml_mutated() {
    sinew_fuzz::run(
        "fuzz_config_yaml_mutated",
        2,
        sinew_fuzz::mutated_text(example_configs(), YAML_DICTIONARY),
        |text| load_and_check_positions(&text),
    );
}

#[test]
fn fuzz_config_yaml_random() {
    sinew_fuzz::run(
        "fuzz_config_yaml_random",
        2,
        sinew_fuzz::token_soup(YAML_DICTIONARY, 40)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        |text| load_and_check_positions(&text),
    );
}

/// A list item whose later keys sit deeper than its first key once made `sinew validate`
/// hang: the YAML document iterator repeats a syntax error forever, and the loop that
/// tells a file's kind looked for the next document.
#[test]
fn config_regression_yaml_documents_ends_at_a_syntax_error() {
    let text = "static_resources:\n  listeners:\n  - name: default\n      sds_config:\n        path: /x\n---\nkind: Service\n";
    assert!(sinew_config::yaml_documents(text).is_empty());
    let two = "a: 1\n---\nkind: Service\n---\nb: [\n";
    assert_eq!(sinew_config::yaml_documents(two).len(), 2);
    let error = sinew_config::parse_str("bad.yaml", text).unwrap_err();
    assert_eq!(error.errors.len(), 1, "{error}");
}

/// Found by fuzz_config_yaml_mutated: serde's YAML parser takes a quoted scalar whose
/// continuation line is less indented than its key, the parser that maps fields to
/// positions does not, so every error after that point was printed at 1:1. Such text is
/// now refused at the place it stops being YAML.
#[test]
fn config_regression_errors_past_yaml_only_one_parser_takes_keep_their_line() {
    let text = "listeners:\n  - name: a\n    address: \"x\ny\"\nclusters:\n  - name: c\n    endpoints: [{address: 1}]\n";
    let d = sinew_config::parse_str("p.yaml", text)
        .map(|_| ())
        .expect_err("not YAML to both parsers");
    let shown = d.to_string();
    assert_eq!(
        shown,
        "p.yaml:3:14: <root>: not valid YAML: invalid indentation in quoted scalar"
    );
    load_and_check_positions(text).expect("located");
}

#[test]
fn example_configs_load_unmutated() {
    for text in example_configs() {
        if let Err(d) = sinew_config::load_str("example.yaml", &text) {
            panic!("an example does not load:\n{d}\n---\n{text}");
        }
    }
}

/// Operators as the docs write them, and pieces of the format language.
const FORMAT_DICTIONARY: &[&[u8]] = &[
    b"%",
    b"%%",
    b"(",
    b")",
    b":",
    b":0",
    b":18446744073709551616",
    b"%START_TIME%",
    b"%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%",
    b"%START_TIME(%s.%9f %j %e %z)%",
    b"%REQ(:AUTHORITY)%",
    b"%REQ(X-REQUEST-ID?X-B3-TRACEID):10%",
    b"%RESP(CONTENT-TYPE)%",
    b"%RESPONSE_CODE%",
    b"%RESPONSE_FLAGS%",
    b"%BYTES_SENT%",
    b"%DURATION%",
    b"%UPSTREAM_HOST%",
    b"%DOWNSTREAM_REMOTE_ADDRESS%",
    b"%PROTOCOL%",
    b"%HOSTNAME%",
    b"\xc3\xa9",
    b"\xf0\x9f\x98\x80",
];

#[test]
fn fuzz_access_log_format() {
    sinew_fuzz::run(
        "fuzz_access_log_format",
        1,
        sinew_fuzz::token_soup(FORMAT_DICTIONARY, 24)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        |format| {
            if let Ok(parts) = sinew_config::access_log::parse(&format) {
                // Every operator is written between two `%` signs of its own.
                let ops = parts
                    .iter()
                    .filter(|p| matches!(p, sinew_config::access_log::Part::Op(_)))
                    .count();
                prop_assert!(ops <= format.matches('%').count() / 2);
            }
            Ok(())
        },
    );
}
