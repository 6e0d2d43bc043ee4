//! Just enough of Hessian 2.0 (the serialization of SOFA RPC and Dubbo bodies) to read
//! the strings routing needs, and to step over everything else without decoding it.
//!
//! [`Reader::value`] reads strings, integers, null, and class definitions with the
//! objects that use them, in the final 2.0 form (`C` definitions, `O` instances) and in
//! the 2.0 draft that sofa-rpc-node's Bolt serializer writes (`O` definitions, `o`
//! instances). [`Reader::skip`] steps over any one value of the final 2.0 grammar
//! (what Dubbo's clients write) so that a Dubbo call's attachments, which follow its
//! arguments, can be reached; arguments are never decoded.

/// A cursor over Hessian 2.0 bytes. Every read returns None on anything it does not
/// handle or on a truncated value, leaving the caller to give up on the body.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Field names of the class definitions seen so far, by definition number.
    classes: Vec<(String, Vec<String>)>,
}

/// A value at the front of the stream, as far as this reader tells them apart.
#[derive(Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    String(String),
    Int(i64),
    /// An object of a class defined earlier: its type name and field names; its field
    /// values follow in the stream.
    Object {
        class: usize,
    },
}

/// Longest string read (routing fields are short; anything longer is not one).
const MAX_STRING_CHARS: usize = 64 * 1024;

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader {
            bytes,
            pos: 0,
            classes: Vec::new(),
        }
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    /// The type name and field names of class definition `class`.
    pub fn class(&self, class: usize) -> Option<(&str, &[String])> {
        self.classes
            .get(class)
            .map(|(name, fields)| (name.as_str(), fields.as_slice()))
    }

    /// The next value; class definitions before it are read and kept.
    pub fn value(&mut self) -> Option<Value> {
        loop {
            let tag = self.byte()?;
            return Some(match tag {
                b'N' => Value::Null,
                0x00..=0x1f => Value::String(self.chars(tag as usize)?.to_owned()),
                0x30..=0x33 => {
                    let len = ((tag as usize - 0x30) << 8) | self.byte()? as usize;
                    Value::String(self.chars(len)?.to_owned())
                }
                b'S' => {
                    let len = self.u16()? as usize;
                    Value::String(self.chars(len)?.to_owned())
                }
                0x80..=0xbf => Value::Int(tag as i64 - 0x90),
                0xc0..=0xcf => Value::Int(((tag as i64 - 0xc8) << 8) | self.byte()? as i64),
                0xd0..=0xd7 => {
                    let b = self.take(2)?;
                    Value::Int(((tag as i64 - 0xd4) << 16) | (b[0] as i64) << 8 | b[1] as i64)
                }
                b'I' => Value::Int(i32::from_be_bytes(self.take(4)?.try_into().ok()?) as i64),
                b'C' => {
                    let Value::String(name) = self.value()? else {
                        return None;
                    };
                    self.fields(name)?;
                    continue;
                }
                b'O' => {
                    let Value::Int(n) = self.value()? else {
                        return None;
                    };
                    let n = usize::try_from(n).ok()?;
                    if n < self.classes.len() {
                        Value::Object { class: n }
                    } else {
                        // The 2.0 draft (what hessian.js writes): `O`, the type name's
                        // length and bytes, the field count and names; instances are `o`.
                        let name = self.chars(n)?.to_owned();
                        self.fields(name)?;
                        continue;
                    }
                }
                b'o' => {
                    let Value::Int(class) = self.value()? else {
                        return None;
                    };
                    let class = usize::try_from(class).ok()?;
                    self.classes.get(class)?;
                    Value::Object { class }
                }
                0x60..=0x6f => {
                    let class = (tag - 0x60) as usize;
                    self.classes.get(class)?;
                    Value::Object { class }
                }
                _ => return None,
            });
        }
    }

    /// A class definition's field count and names, after its type name.
    fn fields(&mut self, name: String) -> Option<()> {
        let Value::Int(count) = self.value()? else {
            return None;
        };
        let count = usize::try_from(count).ok().filter(|&c| c <= 256)?;
        let mut fields = Vec::with_capacity(count);
        for _ in 0..count {
            let Value::String(field) = self.value()? else {
                return None;
            };
            fields.push(field);
        }
        self.classes.push((name, fields));
        Some(())
    }

    /// The next value if it is a string (null reads as empty).
    pub fn string(&mut self) -> Option<String> {
        match self.value()? {
            Value::String(s) => Some(s),
            Value::Null => Some(String::new()),
            _ => None,
        }
    }

    /// `len` UTF-16 code units of UTF-8 text (Hessian counts characters, not bytes).
    fn chars(&mut self, len: usize) -> Option<&'a str> {
        if len > MAX_STRING_CHARS {
            return None;
        }
        let start = self.pos;
        let mut units = 0;
        while units < len {
            // Runs of ASCII, the common case, a byte a unit: skipped at once (a profile
            // of Dubbo calls with 1 KB string arguments spent a quarter of its time
            // here, a character at a time).
            let ascii = self.bytes[self.pos..]
                .iter()
                .take(len - units)
                .take_while(|b| b.is_ascii())
                .count();
            self.pos += ascii;
            units += ascii;
            if units == len {
                break;
            }
            let b = self.byte()?;
            let (extra, count) = match b {
                0x00..=0x7f => (0, 1),
                0xc0..=0xdf => (1, 1),
                0xe0..=0xef => (2, 1),
                // A four-byte character is a surrogate pair: two units.
                0xf0..=0xf7 => (3, 2),
                _ => return None,
            };
            self.take(extra)?;
            units += count;
        }
        std::str::from_utf8(&self.bytes[start..self.pos]).ok()
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    /// Whether the next byte is `tag`; it is consumed if so.
    fn eat(&mut self, tag: u8) -> bool {
        let here = self.bytes.get(self.pos) == Some(&tag);
        self.pos += here as usize;
        here
    }

    /// An integer where the grammar wants a count or a reference.
    fn count(&mut self) -> Option<usize> {
        match self.value()? {
            Value::Int(n) => usize::try_from(n).ok(),
            _ => None,
        }
    }

    /// Steps over one value of any type (the final 2.0 grammar, and the draft's `o`
    /// instances), reading nothing but the class definitions on the way, which later
    /// objects need. Containers nest at most [`MAX_DEPTH`] deep.
    pub fn skip(&mut self) -> Option<()> {
        self.skip_at(0)
    }

    fn skip_at(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        let tag = *self.bytes.get(self.pos)?;
        let fixed = match tag {
            b'N' | b'T' | b'F' | 0x80..=0xbf | 0xd8..=0xef | 0x5b | 0x5c => 0,
            0xc0..=0xcf | 0xf0..=0xff | 0x5d => 1,
            0xd0..=0xd7 | 0x38..=0x3f | 0x5e => 2,
            b'I' | 0x59 | 0x5f | 0x4b => 4,
            b'L' | b'D' | 0x4a => 8,
            _ => usize::MAX,
        };
        if fixed != usize::MAX {
            self.take(1 + fixed)?;
            return Some(());
        }
        match tag {
            // Strings, whole or in chunks.
            0x00..=0x1f | 0x30..=0x33 | b'S' | b'R' => loop {
                let tag = self.byte()?;
                let len = match tag {
                    0x00..=0x1f => tag as usize,
                    0x30..=0x33 => ((tag as usize - 0x30) << 8) | self.byte()? as usize,
                    b'S' | b'R' => self.u16()? as usize,
                    _ => return None,
                };
                self.chars(len)?;
                if tag != b'R' {
                    return Some(());
                }
            },
            // Binary data, whole or in chunks.
            0x20..=0x2f | 0x34..=0x37 | b'B' | b'A' => loop {
                let tag = self.byte()?;
                let len = match tag {
                    0x20..=0x2f => tag as usize - 0x20,
                    0x34..=0x37 => ((tag as usize - 0x34) << 8) | self.byte()? as usize,
                    b'B' | b'A' => self.u16()? as usize,
                    _ => return None,
                };
                self.take(len)?;
                if tag != b'A' {
                    return Some(());
                }
            },
            // A reference to an earlier value.
            b'Q' => {
                self.pos += 1;
                self.count().map(drop)
            }
            // Lists: typed or not, with a length or up to `Z`.
            b'U' | b'V' | b'W' | b'X' | 0x70..=0x7f => {
                self.pos += 1;
                if matches!(tag, b'U' | b'V' | 0x70..=0x77) {
                    self.skip_type()?;
                }
                let len = match tag {
                    b'V' | b'X' => Some(self.count()?),
                    0x70..=0x77 => Some((tag - 0x70) as usize),
                    0x78..=0x7f => Some((tag - 0x78) as usize),
                    _ => None,
                };
                match len {
                    Some(len) => (0..len).try_for_each(|_| self.skip_at(depth + 1)),
                    None => {
                        while !self.eat(b'Z') {
                            self.skip_at(depth + 1)?;
                        }
                        Some(())
                    }
                }
            }
            // Maps, typed (`M`) or not (`H`), up to `Z`.
            b'M' | b'H' => {
                self.pos += 1;
                if tag == b'M' {
                    self.skip_type()?;
                }
                while !self.eat(b'Z') {
                    self.skip_at(depth + 1)?;
                    self.skip_at(depth + 1)?;
                }
                Some(())
            }
            // Class definitions and objects: `value` reads the definition, then the
            // object's fields are stepped over.
            b'C' | b'O' | b'o' | 0x60..=0x6f => {
                let Value::Object { class } = self.value()? else {
                    return None;
                };
                let fields = self.classes.get(class)?.1.len();
                (0..fields).try_for_each(|_| self.skip_at(depth + 1))
            }
            _ => None,
        }
    }

    /// A list's or map's type: a type name, or a reference to one seen before.
    fn skip_type(&mut self) -> Option<()> {
        match self.value()? {
            Value::String(_) | Value::Int(_) => Some(()),
            _ => None,
        }
    }

    /// A map (`H` or `M`) read as string pairs: entries whose key or value is not a
    /// string (or null) are stepped over. Null as the whole value reads as no entries.
    pub fn string_map(&mut self) -> Option<Vec<(String, String)>> {
        let tag = self.byte()?;
        match tag {
            b'N' => return Some(Vec::new()),
            b'H' => {}
            b'M' => self.skip_type()?,
            _ => return None,
        }
        let mut entries = Vec::new();
        while !self.eat(b'Z') {
            let key = self.string_or_skip()?;
            let value = self.string_or_skip()?;
            if let (Some(key), Some(value)) = (key, value) {
                entries.push((key, value));
            }
        }
        Some(entries)
    }

    /// The next value if it is a string (or null, read as empty); any other value is
    /// stepped over.
    fn string_or_skip(&mut self) -> Option<Option<String>> {
        match self.bytes.get(self.pos)? {
            0x00..=0x1f | 0x30..=0x33 | b'S' | b'N' => self.string().map(Some),
            _ => self.skip().map(|()| None),
        }
    }
}

/// How deep lists, maps and objects may nest inside a value being stepped over.
const MAX_DEPTH: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    /// Hessian 2.0 bytes of a short string.
    pub(crate) fn string(s: &str) -> Vec<u8> {
        let units = s.encode_utf16().count();
        let mut out = if units < 32 {
            vec![units as u8]
        } else {
            vec![b'S', (units >> 8) as u8, units as u8]
        };
        out.extend_from_slice(s.as_bytes());
        out
    }

    #[test]
    fn strings_of_every_length_form_and_multibyte_characters_are_read_whole() {
        for s in ["", "echo", "名字", "a😀b", &"x".repeat(40)] {
            assert_eq!(Reader::new(&string(s)).string().as_deref(), Some(s));
        }
        // Medium form (0x30..0x33).
        let mut medium = vec![0x30, 40];
        medium.extend_from_slice("y".repeat(40).as_bytes());
        assert_eq!(Reader::new(&medium).string(), Some("y".repeat(40)));
        assert_eq!(Reader::new(b"N").string().as_deref(), Some(""));
    }

    #[test]
    fn an_object_after_its_class_definition_names_its_fields() {
        let mut b = vec![b'C'];
        b.extend(string("com.example.Req"));
        b.push(0x92); // two fields
        b.extend(string("methodName"));
        b.extend(string("args"));
        b.push(0x60);
        b.extend(string("echo"));
        let mut r = Reader::new(&b);
        let Some(Value::Object { class }) = r.value() else {
            panic!("an object")
        };
        let (name, fields) = r.class(class).unwrap();
        assert_eq!(name, "com.example.Req");
        assert_eq!(fields, ["methodName", "args"]);
        assert_eq!(r.string().as_deref(), Some("echo"));
    }

    /// The front of a SofaRequest as sofa-rpc-node 2.10 writes it (captured).
    #[test]
    fn the_draft_forms_class_definition_and_instance_are_read() {
        let mut b = vec![b'O', 0x90 + 7];
        b.extend_from_slice(b"com.Req");
        b.push(0x92);
        b.extend(string("methodName"));
        b.extend(string("methodArgSigs"));
        b.extend_from_slice(&[b'o', 0x90]);
        b.extend(string("slow"));
        let mut r = Reader::new(&b);
        let Some(Value::Object { class }) = r.value() else {
            panic!("an object")
        };
        assert_eq!(r.class(class).unwrap().0, "com.Req");
        assert_eq!(r.string().as_deref(), Some("slow"));
    }

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Values as hessian.js 2.11 (dubbo-remoting's serializer) writes them, captured:
    /// each is stepped over whole, so the string after it reads.
    #[test]
    fn every_kind_of_value_a_dubbo_client_writes_is_stepped_over_whole() {
        let nested = format!(
            "430b636f6d2e782e4f757465729605696e6e657205616761696e04626c6f6203626967016401\
             74604307636f6d2e782e5093046e616d650474616773016d61016e7a0161016248016b4c0000\
             00e8d4a510005a61017a784e352c{}53044c{}5f00000cb254",
            "01".repeat(300),
            "78".repeat(1100)
        );
        let samples = [
            "48016191016201785a",                                       // untyped map
            "4307636f6d2e782e5092046e616d650361676560016e93",           // class and object
            "7a4307636f6d2e782e5092046e616d650361676560016e9360016d94", // list of two
            "7b91920161",                                               // short untyped list
            "72045b696e749192",                                         // typed short list (int[])
            "72115b6a6176612e6c616e672e537472696e670161026262",         // String[]
            "7a4307636f6d2e782e4e91017660915191", // a repeated object as a ref
            "f92c",                               // long
            "5f000005dc",                         // double as int millis
            "4b00000000",                         // date in minutes
            "23616263",                           // short binary
            &nested,
        ];
        for hex in samples {
            let mut bytes = unhex(hex);
            bytes.extend(string("end"));
            let mut r = Reader::new(&bytes);
            assert_eq!(r.skip(), Some(()), "{hex}");
            assert_eq!(r.string().as_deref(), Some("end"), "{hex}");
            // Cut short anywhere, it is None, never a panic or a wrong position.
            for cut in 0..bytes.len() - 4 {
                assert_eq!(
                    Reader::new(&bytes[..cut]).skip(),
                    None,
                    "{hex} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn a_map_reads_as_its_string_entries_stepping_over_the_rest() {
        let mut b = vec![b'H'];
        b.extend(string("group"));
        b.extend(string("blue"));
        b.extend(string("timeout"));
        b.push(0x90 + 5);
        b.extend(string("n"));
        b.push(b'N');
        b.push(b'Z');
        let entries = Reader::new(&b).string_map().unwrap();
        assert_eq!(
            entries,
            [("group".into(), "blue".into()), ("n".into(), String::new())]
        );
    }

    #[test]
    fn nesting_past_the_limit_is_refused() {
        let deep = [vec![0x57u8; MAX_DEPTH + 2], vec![b'Z'; MAX_DEPTH + 2]].concat();
        assert_eq!(Reader::new(&deep).skip(), None);
        let ok = [vec![0x57u8; 8], vec![b'Z'; 8]].concat();
        assert_eq!(Reader::new(&ok).skip(), Some(()));
    }

    #[test]
    fn truncated_or_unknown_values_read_as_none_not_a_panic() {
        let whole = string("echo-service");
        for cut in 0..whole.len() {
            assert_eq!(Reader::new(&whole[..cut]).string(), None, "cut at {cut}");
        }
        assert_eq!(Reader::new(&[0xff]).value(), None);
        assert_eq!(Reader::new(&[b'C', 0x01, b'x', 0xff]).value(), None);
    }
}
