use sinew_fuzz::proptest::prelude::*;

use super::*;

fn scan_all(bytes: &[u8]) -> Result<Option<usize>, RespError> {
    FrameScanner::new().scan(bytes, &Limits::default())
}

/// Feeds `bytes` one more byte at a time to one scanner, as reads would deliver them.
fn scan_bytewise(bytes: &[u8]) -> Result<Option<usize>, RespError> {
    let mut scanner = FrameScanner::new();
    for end in 1..=bytes.len() {
        if let Some(n) = scanner.scan(&bytes[..end], &Limits::default())? {
            return Ok(Some(n));
        }
    }
    Ok(None)
}

const REPLIES: &[&[u8]] = &[
    b"+OK\r\n",
    b"-ERR wrong\r\n",
    b":-42\r\n",
    b"$5\r\nhello\r\n",
    b"$0\r\n\r\n",
    b"$-1\r\n",
    b"*-1\r\n",
    b"*0\r\n",
    b"*2\r\n$1\r\na\r\n:1\r\n",
    b"*2\r\n*1\r\n+x\r\n*0\r\n",
    b"_\r\n",
    b"#t\r\n",
    b",3.25\r\n",
    b",-inf\r\n",
    b",1e10\r\n",
    b"(3492890328409238509324850943850943825024385\r\n",
    b"!21\r\nSYNTAX invalid syntax\r\n",
    b"=15\r\ntxt:Some string\r\n",
    b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n",
    b"~3\r\n+a\r\n+b\r\n+c\r\n",
    b">3\r\n+message\r\n+chan\r\n$2\r\nhi\r\n",
    b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*2\r\n:2039123\r\n:9543892\r\n",
    b"*2\r\n|1\r\n+ttl\r\n:3\r\n+inner\r\n+after\r\n",
];

#[test]
fn every_reply_type_is_one_frame_whole_and_in_pieces() {
    for reply in REPLIES {
        let mut with_next = reply.to_vec();
        with_next.extend_from_slice(b"+NEXT\r\n");
        assert_eq!(scan_all(&with_next), Ok(Some(reply.len())), "{reply:?}");
        assert_eq!(
            scan_bytewise(&with_next),
            Ok(Some(reply.len())),
            "{reply:?}"
        );
        // One byte short is never a frame.
        assert_eq!(scan_all(&reply[..reply.len() - 1]), Ok(None), "{reply:?}");
    }
}

#[test]
fn scanner_is_ready_for_the_next_frame_after_one() {
    let stream: Vec<u8> = REPLIES.concat();
    let mut scanner = FrameScanner::new();
    let mut at = 0;
    for reply in REPLIES {
        let n = scanner
            .scan(&stream[at..], &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(&stream[at..at + n], *reply);
        at += n;
    }
    assert_eq!(at, stream.len());
}

#[test]
fn malformed_replies_are_errors_not_waits() {
    let cases: &[(&[u8], RespError)] = &[
        (b"?x\r\n", RespError::UnknownType(b'?')),
        (b"+OK\rX", RespError::BadLineEnd),
        (b":12a\r\n", RespError::BadValue(b':')),
        (b"#x\r\n", RespError::BadValue(b'#')),
        (b"_1\r\n", RespError::BadValue(b'_')),
        (b",abc\r\n", RespError::BadValue(b',')),
        (b"$-2\r\n", RespError::BadLength),
        (b"$3\r\nabcde", RespError::BadBulkEnd),
        (b"=3\r\nabc\r\n", RespError::BadValue(b'=')),
        (b"%-3\r\n", RespError::BadLength),
    ];
    for (bytes, error) in cases {
        assert_eq!(scan_all(bytes).as_ref(), Err(error), "{bytes:?}");
    }
}

#[test]
fn limits_bound_depth_bulk_length_elements_and_lines() {
    let limits = Limits {
        max_depth: 3,
        max_elements: 10,
        max_line: 16,
        ..Limits::default()
    };
    let scan = |b: &[u8]| FrameScanner::new().scan(b, &limits);
    assert_eq!(scan(b"*1\r\n*1\r\n*1\r\n:1\r\n"), Ok(Some(16)));
    assert_eq!(
        scan(b"*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"),
        Err(RespError::TooDeep)
    );
    assert_eq!(scan(b"*11\r\n"), Err(RespError::TooManyElements(11)));
    assert_eq!(scan(b"%6\r\n"), Ok(None));
    assert_eq!(scan(b"+0123456789abcdefg\r\n"), Err(RespError::LineTooLong));
    assert_eq!(scan(b"+0123456789abcdefghij"), Err(RespError::LineTooLong));
    // 512 MiB is Redis's own bulk limit: one byte more is refused before any data.
    let at_limit = format!("${}\r\n", 512 * 1024 * 1024);
    assert_eq!(scan_all(at_limit.as_bytes()), Ok(None));
    let over = format!("${}\r\n", 512 * 1024 * 1024 + 1);
    assert_eq!(
        scan_all(over.as_bytes()),
        Err(RespError::BulkTooLong(512 * 1024 * 1024 + 1))
    );
}

#[test]
fn a_large_bulk_in_pieces_is_not_rescanned() {
    let mut scanner = FrameScanner::new();
    let mut frame = b"$100000\r\n".to_vec();
    frame.extend(std::iter::repeat_n(b'x', 100_000));
    frame.extend_from_slice(b"\r\n");
    assert_eq!(scanner.scan(&frame[..20], &Limits::default()), Ok(None));
    assert_eq!(scanner.need, frame.len());
    assert_eq!(scanner.scan(&frame[..50_000], &Limits::default()), Ok(None));
    assert_eq!(
        scanner.scan(&frame, &Limits::default()),
        Ok(Some(frame.len()))
    );
}

fn args_of(bytes: &[u8]) -> (usize, Vec<Vec<u8>>) {
    let mut parser = CommandParser::new();
    match parser.parse(bytes, &Limits::default()).unwrap().unwrap() {
        Parsed::Command { len } => (
            len,
            parser
                .args()
                .iter()
                .map(|r| bytes[r.clone()].to_vec())
                .collect(),
        ),
        Parsed::Inline { len, args } => (len, args),
        Parsed::Empty { len } => (len, Vec::new()),
    }
}

#[test]
fn commands_give_their_arguments_as_ranges_and_their_length() {
    let bytes = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$0\r\n\r\n*1\r\n$4\r\nPING\r\n";
    let (len, args) = args_of(bytes);
    assert_eq!(len, 28);
    assert_eq!(args, vec![b"SET".to_vec(), b"key".to_vec(), Vec::new()]);
    assert_eq!(args_of(&bytes[len..]), (14, vec![b"PING".to_vec()]));
}

#[test]
fn commands_read_in_pieces_match_commands_read_whole() {
    let bytes = b"*2\r\n$3\r\nGET\r\n$10\r\nuser:12345\r\n";
    let mut parser = CommandParser::new();
    for end in 1..bytes.len() {
        assert_eq!(
            parser.parse(&bytes[..end], &Limits::default()),
            Ok(None),
            "{end}"
        );
    }
    assert_eq!(
        parser.parse(bytes, &Limits::default()),
        Ok(Some(Parsed::Command { len: bytes.len() }))
    );
    assert_eq!(parser.args(), &[8..11, 18..28]);
}

#[test]
fn inline_commands_split_as_redis_server_splits_them() {
    assert_eq!(args_of(b"PING\r\n"), (6, vec![b"PING".to_vec()]));
    assert_eq!(args_of(b"ping\n"), (5, vec![b"ping".to_vec()]));
    assert_eq!(
        args_of(b"set  k \"a b\\x41\\n\" 'it\\'s'\r\n").1,
        vec![
            b"set".to_vec(),
            b"k".to_vec(),
            b"a bA\n".to_vec(),
            b"it's".to_vec()
        ]
    );
    assert_eq!(args_of(b"   \r\n"), (5, Vec::new()));
    let mut parser = CommandParser::new();
    assert_eq!(
        parser.parse(b"get \"open\r\n", &Limits::default()),
        Err(RespError::UnbalancedQuotes)
    );
    assert_eq!(
        parser.parse(b"get \"a\"b\r\n", &Limits::default()),
        Err(RespError::UnbalancedQuotes)
    );
    assert_eq!(parser.parse(b"PIN", &Limits::default()), Ok(None));
    let long = vec![b'a'; 64 * 1024 + 1];
    assert_eq!(
        parser.parse(&long, &Limits::default()),
        Err(RespError::LineTooLong)
    );
}

#[test]
fn empty_and_malformed_commands() {
    let mut parser = CommandParser::new();
    let limits = Limits::default();
    assert_eq!(
        parser.parse(b"*0\r\n", &limits),
        Ok(Some(Parsed::Empty { len: 4 }))
    );
    assert_eq!(
        parser.parse(b"*-1\r\n", &limits),
        Ok(Some(Parsed::Empty { len: 5 }))
    );
    assert_eq!(
        CommandParser::new().parse(b"*1\r\n:1\r\n", &limits),
        Err(RespError::ExpectedBulk(b':'))
    );
    assert_eq!(
        CommandParser::new().parse(b"*1\r\n$-1\r\n", &limits),
        Err(RespError::BadLength)
    );
    assert_eq!(
        CommandParser::new().parse(b"*1\r\n$1\r\nab\r\n", &limits),
        Err(RespError::BadBulkEnd)
    );
    assert_eq!(
        CommandParser::new().parse(b"*99999999999\r\n", &limits),
        Err(RespError::TooManyElements(99_999_999_999))
    );
    let big = format!("*1\r\n${}\r\n", 600 * 1024 * 1024);
    assert_eq!(
        CommandParser::new().parse(big.as_bytes(), &limits),
        Err(RespError::BulkTooLong(600 * 1024 * 1024))
    );
}

#[test]
fn encoders_write_what_the_scanner_reads() {
    let mut out = bytes::BytesMut::new();
    encode::error(&mut out, "ERR bad\r\nthing");
    encode::integer(&mut out, -12);
    encode::bulk(&mut out, b"v");
    encode::simple(&mut out, "OK");
    encode::command(&mut out, [&b"GET"[..], b"k"].into_iter());
    assert_eq!(
        &out[..],
        b"-ERR bad  thing\r\n:-12\r\n$1\r\nv\r\n+OK\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    );
    assert_eq!(encode_i64(i64::MIN), format!(":{}\r\n", i64::MIN));
}

fn encode_i64(n: i64) -> String {
    let mut out = bytes::BytesMut::new();
    encode::integer(&mut out, n);
    String::from_utf8(out.to_vec()).unwrap()
}

const DICTIONARY: &[&[u8]] = &[
    b"\r\n",
    b"*",
    b"$",
    b"%",
    b"~",
    b">",
    b"|",
    b"_",
    b"#t",
    b",",
    b"(",
    b"!",
    b"=",
    b"+OK",
    b"-ERR",
    b":",
    b"-1",
    b"0",
    b"1",
    b"2",
    b"3",
    b"10",
    b"99999999999",
    b"GET",
    b"\"",
    b"'",
    b"\\x4",
    b" ",
];

/// Any bytes give an answer without a panic; a frame found in the whole is found, with
/// the same length, when the bytes come one at a time, and bytes after it change nothing.
#[test]
fn fuzz_resp_frame_scanner() {
    let samples: Vec<Vec<u8>> = REPLIES.iter().map(|r| r.to_vec()).collect();
    sinew_fuzz::run(
        "resp_frame",
        1,
        prop_oneof![
            sinew_fuzz::mutated(samples, DICTIONARY),
            sinew_fuzz::token_soup(DICTIONARY, 24),
        ],
        |bytes| {
            let whole = scan_all(&bytes);
            if let Ok(Some(n)) = whole {
                prop_assert!(n <= bytes.len());
                prop_assert_eq!(scan_bytewise(&bytes), Ok(Some(n)));
                let mut longer = bytes.clone();
                longer.extend_from_slice(b"*1\r\n");
                prop_assert_eq!(scan_all(&longer), Ok(Some(n)));
            }
            Ok(())
        },
    );
}

/// Any bytes give a command, a wait or an error without a panic; argument ranges lie
/// inside the frame; pieces agree with the whole.
#[test]
fn fuzz_resp_command_parser() {
    let samples = vec![
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".to_vec(),
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n".to_vec(),
        b"PING\r\n".to_vec(),
        b"set k \"a\\x41\" 'b'\r\n".to_vec(),
    ];
    sinew_fuzz::run(
        "resp_command",
        1,
        prop_oneof![
            sinew_fuzz::mutated(samples, DICTIONARY),
            sinew_fuzz::token_soup(DICTIONARY, 24),
        ],
        |bytes| {
            let limits = Limits::default();
            let mut whole = CommandParser::new();
            let parsed = whole.parse(&bytes, &limits);
            if let Ok(Some(Parsed::Command { len })) = &parsed {
                prop_assert!(*len <= bytes.len());
                prop_assert!(whole.args().iter().all(|r| r.end <= *len));
                let mut pieces = CommandParser::new();
                let mut found = None;
                for end in 1..=bytes.len() {
                    if let Some(p) = pieces.parse(&bytes[..end], &limits).unwrap() {
                        found = Some(p);
                        break;
                    }
                }
                prop_assert_eq!(found, Some(Parsed::Command { len: *len }));
                prop_assert_eq!(pieces.args(), whole.args());
            }
            Ok(())
        },
    );
}
