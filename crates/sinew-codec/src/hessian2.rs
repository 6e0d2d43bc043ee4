//! Just enough of Hessian 2.0 (the serialization of SOFA RPC and Dubbo bodies) to read
//! the strings routing needs at the front of a body, and to stop cleanly at anything
//! else: strings, integers, null, and class definitions with the objects that use them,
//! in the final 2.0 form (`C` definitions, `O` instances) and in the 2.0 draft that
//! hessian.js (sofa-rpc-node) writes (`O` definitions, `o` instances). Arguments are
//! never decoded.

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
                0x00..=0x1f => Value::String(self.chars(tag as usize)?),
                0x30..=0x33 => {
                    let len = ((tag as usize - 0x30) << 8) | self.byte()? as usize;
                    Value::String(self.chars(len)?)
                }
                b'S' => {
                    let len = u16::from_be_bytes(self.take(2)?.try_into().ok()?) as usize;
                    Value::String(self.chars(len)?)
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
                        let name = self.chars(n)?;
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
    fn chars(&mut self, len: usize) -> Option<String> {
        if len > MAX_STRING_CHARS {
            return None;
        }
        let start = self.pos;
        let mut units = 0;
        while units < len {
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
        std::str::from_utf8(&self.bytes[start..self.pos])
            .ok()
            .map(str::to_owned)
    }
}

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
