//! Where each field of a YAML file is, so an error about `routes[2].match.path_regex`
//! can say `file:line:col`.
//!
//! serde gives us typed values but forgets positions, and semantic checks run after
//! deserialization; so we walk the YAML events once more and remember the position of
//! every field path, in the same spelling serde_path_to_error uses.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A line and column, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Field path → position of the field (its key, or the item for sequence elements).
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    positions: HashMap<String, Position>,
    /// Where this (second) YAML parser stopped, and why, when it did not take the text
    /// as YAML although serde's parser may have.
    /// (Boxed: every `Diagnostics` carries a map, and this is rare.)
    unreadable: Option<Box<(Position, String)>>,
}

impl SourceMap {
    /// Indexes `text`. After a syntax error the map holds what came before it; serde reports
    /// the error itself with its own position.
    pub fn index(text: &str) -> SourceMap {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        // The whole stream is read, not just its first document: where this parser ends
        // a document early (a byte-order mark inside the text starts a new one for it,
        // while serde's parser skips it), what follows must still be checked, or the
        // map would silently lack every field after that point.
        let unreadable = parser.load(&mut builder, true).err().map(|e| {
            let mark = e.marker();
            let position = Position {
                line: mark.line(),
                column: mark.col() + 1,
            };
            Box::new((position, e.info().to_string()))
        });
        SourceMap {
            positions: builder.positions,
            unreadable,
        }
    }

    /// Where the text stops being YAML for the indexing parser, and why. serde's parser is
    /// more lenient in places (a quoted scalar's continuation line less indented than its
    /// key, for one); past that point fields have no positions, so such text is refused
    /// rather than reported at the wrong line.
    pub fn unreadable(&self) -> Option<(Position, &str)> {
        self.unreadable
            .as_deref()
            .map(|(p, why)| (*p, why.as_str()))
    }

    /// The position of exactly `path`.
    pub fn get(&self, path: &str) -> Option<Position> {
        self.positions.get(path).copied()
    }

    /// The position of `path`, or of its nearest ancestor that has one.
    pub fn lookup(&self, path: &str) -> Option<Position> {
        let mut path = path;
        loop {
            if let Some(p) = self.positions.get(path) {
                return Some(*p);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
        first_key: bool,
    },
    Seq {
        path: String,
        next: usize,
    },
    /// A complex key, whose contents we do not index.
    Ignored,
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    positions: HashMap<String, Position>,
    /// Documents started so far; only the first is indexed (a config is one document,
    /// and serde refuses a second).
    documents: usize,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Builder {
    /// Claims the next value slot in the current container and returns its path.
    fn value_path(&mut self, mark: Marker) -> Option<String> {
        let path = match self.stack.last_mut() {
            None => String::new(),
            Some(Frame::Map { path, key, .. }) => join(path, &key.take()?),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                p
            }
            Some(Frame::Ignored) => return None,
        };
        let position = Position {
            line: mark.line(),
            column: mark.col() + 1,
        };
        self.positions.entry(path.clone()).or_insert(position);
        Some(path)
    }

    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if let Event::DocumentStart = ev {
            self.documents += 1;
        }
        if self.documents > 1 {
            return;
        }
        match ev {
            Event::Scalar(value, ..) if self.expecting_key() => {
                if let Some(Frame::Map {
                    path,
                    key,
                    first_key,
                }) = self.stack.last_mut()
                {
                    let position = Position {
                        line: mark.line(),
                        column: mark.col() + 1,
                    };
                    // A block mapping's start mark lands after its first key; a sequence
                    // item reads better pointing at that key.
                    if *first_key && path.ends_with(']') {
                        self.positions.insert(path.clone(), position);
                    }
                    *first_key = false;
                    self.positions.insert(join(path, &value), position);
                    *key = Some(value);
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) if self.expecting_key() => {
                self.stack.push(Frame::Ignored);
            }
            Event::Scalar(..) | Event::Alias(..) => {
                self.value_path(mark);
            }
            Event::MappingStart(..) => {
                let frame = match self.value_path(mark) {
                    Some(path) => Frame::Map {
                        path,
                        key: None,
                        first_key: true,
                    },
                    None => Frame::Ignored,
                };
                self.stack.push(frame);
            }
            Event::SequenceStart(..) => {
                let frame = match self.value_path(mark) {
                    Some(path) => Frame::Seq { path, next: 0 },
                    None => Frame::Ignored,
                };
                self.stack.push(frame);
            }
            Event::MappingEnd | Event::SequenceEnd => {
                if let Some(Frame::Ignored) = self.stack.pop() {
                    // The ignored complex key is done; its value comes next and is skipped too.
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some("?".into());
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_fields_and_sequence_items() {
        let text =
            "listeners:\n  - name: a\n    http:\n      routes:\n        - match: {prefix: /}\n";
        let map = SourceMap::index(text);
        assert_eq!(
            map.lookup("listeners"),
            Some(Position { line: 1, column: 1 })
        );
        assert_eq!(
            map.lookup("listeners[0].name"),
            Some(Position { line: 2, column: 5 })
        );
        assert_eq!(
            map.lookup("listeners[0].http.routes[0].match.prefix"),
            Some(Position {
                line: 5,
                column: 19
            })
        );
    }

    #[test]
    fn falls_back_to_the_nearest_ancestor() {
        let map = SourceMap::index("clusters:\n  - name: x\n");
        assert_eq!(
            map.lookup("clusters[0].endpoints"),
            Some(Position { line: 2, column: 5 })
        );
    }

    /// Found by fuzz_config_yaml_mutated: a byte-order mark at the start of a comment line
    /// ends the document for this parser (serde's skips it), and the fields after it had
    /// no positions. The text past that point is now checked, and found unreadable.
    #[test]
    fn a_byte_order_mark_inside_the_text_makes_it_unreadable_where_the_parsers_part() {
        let text = "# a\n\u{feff}# b\nlisteners:\n  - name: a\n";
        let map = SourceMap::index(text);
        assert_eq!(map.unreadable().map(|(p, _)| p.line), Some(3));
    }

    #[test]
    fn only_the_first_document_is_indexed() {
        let map = SourceMap::index("a: 1\n---\nb: 2\n");
        assert!(map.get("a").is_some());
        assert!(map.get("b").is_none());
        assert!(map.unreadable().is_none());
    }
}
