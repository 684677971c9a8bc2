//! Reading a config file with its types' own serde `Deserialize`, reporting every problem rather than the
//! first.
//!
//! The config types say everything about the file's shape once: fields, types, defaults,
//! `deny_unknown_fields`. serde stops at the first error, though, and an operator should fix a file in one
//! pass. So [`read`] runs the derived `Deserialize` over the parsed TOML through a deserializer of its own,
//! [`Reader`], which
//!
//! - reports every key a struct does not have (what `deny_unknown_fields` rejects), with a "did you mean"
//!   hint, and skips it;
//! - names the path of a value that does not deserialize (`edge.wait_ms`, `ingest.stream_keys."de mo"`).
//!
//! A value that does not deserialize is then taken out of the document and the document read again, so that
//! the field takes its default and the rest of the file is still read; a required field the file lacks is
//! reported and, for the same reason, a stand-in put in its place. What the file means (limits, files that
//! must exist) is for each section's `validate`, not for this module.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde::Deserializer;

use crate::topology::{join_path, one_line, unknown_key, CheckErrors};

/// A field the file must set: what the "missing" report says belongs there, and a value that stands in for
/// it while the rest of the file is read. A config read with a stand-in is never used: the report says
/// that the field is missing.
pub(crate) struct Required {
    /// The top-level key.
    pub field: &'static str,
    /// What belongs there, for the report.
    pub what: &'static str,
    /// A value that deserializes, for reading on.
    pub stand_in: &'static str,
}

/// Reads `doc` as a `T`, recording in `errors` every unknown key and every value that does not
/// deserialize, each under its path. `None` only when the file cannot be read as a `T` at all; otherwise
/// a `T` in which what could not be read is its default (or its stand-in), so that its own checks can
/// still run. The caller tells a clean read by `errors`.
pub(crate) fn read<T: DeserializeOwned>(
    doc: toml::Table,
    required: &[Required],
    errors: &mut CheckErrors,
) -> Option<T> {
    let mut doc = toml::Value::Table(doc);
    let mut stood_in = Vec::new();
    loop {
        let unknown = RefCell::new(Vec::new());
        let reader = Reader { value: doc.clone(), at: Vec::new(), unknown: &unknown };
        let result = T::deserialize(reader);
        // Unknown keys are skipped while reading; taken out, they are reported once however often the
        // document is read again.
        for (at, message) in unknown.into_inner() {
            errors.push(label(&at), message);
            remove(&mut doc, &at);
        }
        match result.map_err(|e| e.at(&[])) {
            Ok(value) => return Some(value),
            Err(ReadError::Value { at, message }) => {
                let at = at.unwrap_or_default();
                errors.push(label(&at), message);
                if !remove(&mut doc, &at) {
                    return None;
                }
            }
            Err(ReadError::Missing { at, field }) => {
                let mut path = at.unwrap_or_default();
                let top_level = path.is_empty();
                path.push(Segment::Key(field.to_owned()));
                let field_label = label(&path);
                let required = required.iter().find(|r| top_level && r.field == field);
                // A value that did not read was reported where it stood; its absence is no news.
                if !errors.mentions(&field_label) {
                    let what = required.map_or_else(String::new, |r| format!(" ({})", r.what));
                    errors.push(field_label, format!("missing{what}"));
                }
                match required {
                    Some(r) if !stood_in.contains(&r.field) => {
                        stood_in.push(r.field);
                        if let toml::Value::Table(table) = &mut doc {
                            table.insert(r.field.to_owned(), toml::Value::String(r.stand_in.to_owned()));
                        }
                    }
                    _ => return None,
                }
            }
        }
    }
}

/// The names of the fields of struct `T`, as its `Deserialize` declares them.
pub(crate) fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Names;
    #[derive(Debug)]
    struct Found(&'static [&'static str]);
    impl fmt::Display for Found {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "fields {:?}", self.0)
        }
    }
    impl std::error::Error for Found {}
    impl de::Error for Found {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Found(&[])
        }
    }
    impl<'de> Deserializer<'de> for Names {
        type Error = Found;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Found> {
            Err(Found(&[]))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Found> {
            Err(Found(fields))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    T::deserialize(Names).err().map_or(&[], |Found(fields)| fields)
}

/// One step of a path in the document.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// A path as reports show it: `tls.cert`, `ingest.stream_keys."de mo"`, `list[2].name`.
fn label(path: &[Segment]) -> String {
    path.iter().fold(String::new(), |out, segment| match segment {
        Segment::Key(key) => join_path(&out, key),
        Segment::Index(i) => format!("{out}[{i}]"),
    })
}

/// Takes the value at `path` out of the document; false when there is none (or the path is the document).
/// An array item taken out shifts the ones after it, so a later problem in the same array is reported
/// at its index in the shorter array (configs have no arrays today).
fn remove(doc: &mut toml::Value, path: &[Segment]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    match (doc, first) {
        (toml::Value::Table(table), Segment::Key(key)) if rest.is_empty() => table.remove(key).is_some(),
        (toml::Value::Table(table), Segment::Key(key)) => table.get_mut(key).is_some_and(|v| remove(v, rest)),
        (toml::Value::Array(items), Segment::Index(i)) if rest.is_empty() && *i < items.len() => {
            items.remove(*i);
            true
        }
        (toml::Value::Array(items), Segment::Index(i)) => items.get_mut(*i).is_some_and(|v| remove(v, rest)),
        _ => false,
    }
}

/// Why one read of the document stopped.
#[derive(Debug)]
enum ReadError {
    /// The value at `at` does not deserialize (`at` is `None` until the error reaches the value's reader).
    Value { at: Option<Vec<Segment>>, message: String },
    /// The struct at `at` lacks a field that has no default.
    Missing { at: Option<Vec<Segment>>, field: &'static str },
}

impl ReadError {
    /// Places an error raised without knowing where: at `path`, unless it already has a place.
    fn at(self, path: &[Segment]) -> Self {
        match self {
            ReadError::Value { at: None, message } => ReadError::Value { at: Some(path.to_vec()), message },
            ReadError::Missing { at: None, field } => ReadError::Missing { at: Some(path.to_vec()), field },
            placed => placed,
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Value { message, .. } => f.write_str(message),
            ReadError::Missing { field, .. } => write!(f, "missing field `{field}`"),
        }
    }
}

impl std::error::Error for ReadError {}

impl de::Error for ReadError {
    fn custom<M: fmt::Display>(message: M) -> Self {
        ReadError::Value { at: None, message: one_line(&message.to_string()) }
    }

    fn missing_field(field: &'static str) -> Self {
        ReadError::Missing { at: None, field }
    }
}

/// Problems that do not stop a read: unknown keys, with their paths.
type Unknown = RefCell<Vec<(Vec<Segment>, String)>>;

/// A deserializer over one value of the document at a known path. Tables and arrays are walked here, so
/// that every struct inside reports its unknown keys and every value its path; scalars are left to `toml`.
struct Reader<'u> {
    value: toml::Value,
    at: Vec<Segment>,
    unknown: &'u Unknown,
}

impl<'u> Reader<'u> {
    fn child(&self, segment: Segment, value: toml::Value) -> Reader<'u> {
        let mut at = self.at.clone();
        at.push(segment);
        Reader { value, at, unknown: self.unknown }
    }

    fn not_a_table(&self) -> ReadError {
        de::Error::custom(format!("expected a table, found {}", self.value.type_str()))
    }

    /// A table's entries for a struct with `fields` (all of them for a map, `None`); the other keys are
    /// recorded as unknown.
    fn entries(self, table: toml::Table, fields: Option<&'static [&'static str]>) -> Entries<'u> {
        let mut kept = Vec::with_capacity(table.len());
        for (key, value) in table {
            match fields {
                Some(fields) if !fields.contains(&key.as_str()) => {
                    let message = unknown_key(&key, fields);
                    let mut at = self.at.clone();
                    at.push(Segment::Key(key));
                    self.unknown.borrow_mut().push((at, message));
                }
                _ => kept.push((key, value)),
            }
        }
        // A struct's fields in the order it declares them, so that problems come in the order of the docs.
        if let Some(fields) = fields {
            kept.sort_by_key(|(key, _)| fields.iter().position(|f| f == key));
        }
        Entries { reader: self, entries: kept.into_iter(), next_value: None }
    }
}

fn from_toml(e: toml::de::Error) -> ReadError {
    de::Error::custom(e.message())
}

impl<'de> Deserializer<'de> for Reader<'_> {
    type Error = ReadError;

    fn deserialize_any<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, ReadError> {
        match std::mem::replace(&mut self.value, toml::Value::Boolean(false)) {
            toml::Value::Table(table) => visitor.visit_map(self.entries(table, None)),
            toml::Value::Array(items) => {
                visitor.visit_seq(Items { reader: self, items: items.into_iter().enumerate() })
            }
            scalar => scalar.deserialize_any(visitor).map_err(from_toml),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        mut self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ReadError> {
        match std::mem::replace(&mut self.value, toml::Value::Boolean(false)) {
            toml::Value::Table(table) => visitor.visit_map(self.entries(table, Some(fields))),
            other => {
                self.value = other;
                Err(self.not_a_table())
            }
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        match self.value {
            toml::Value::Table(_) => self.deserialize_any(visitor),
            _ => Err(self.not_a_table()),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        // TOML has no null: a key that is there holds a value.
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, ReadError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ReadError> {
        self.value.deserialize_enum(name, variants, visitor).map_err(from_toml)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit unit_struct
        seq tuple tuple_struct identifier ignored_any
    }
}

/// A table's entries, each read at its own path.
struct Entries<'u> {
    reader: Reader<'u>,
    entries: std::vec::IntoIter<(String, toml::Value)>,
    next_value: Option<Reader<'u>>,
}

impl<'de> de::MapAccess<'de> for Entries<'_> {
    type Error = ReadError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, ReadError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let value = self.reader.child(Segment::Key(key.clone()), value);
        let at = value.at.clone();
        self.next_value = Some(value);
        // A key is a value too: a map's keys may be validated names.
        seed.deserialize(key.into_deserializer()).map(Some).map_err(|e: ReadError| e.at(&at))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, ReadError> {
        let value = self.next_value.take().ok_or_else(|| de::Error::custom("a value asked for before its key"))?;
        let at = value.at.clone();
        seed.deserialize(value).map_err(|e| e.at(&at))
    }
}

/// An array's items, each read at its own index.
struct Items<'u> {
    reader: Reader<'u>,
    items: std::iter::Enumerate<std::vec::IntoIter<toml::Value>>,
}

impl<'de> de::SeqAccess<'de> for Items<'_> {
    type Error = ReadError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, ReadError> {
        let Some((i, value)) = self.items.next() else {
            return Ok(None);
        };
        let item = self.reader.child(Segment::Index(i), value);
        let at = item.at.clone();
        seed.deserialize(item).map(Some).map_err(|e| e.at(&at))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;
    use crate::id::{NodeId, StreamName};

    #[derive(Debug, Default, PartialEq, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Section {
        /// A number.
        count: u64,
        /// Named entries.
        keys: BTreeMap<StreamName, String>,
        /// Listed entries.
        list: Vec<Item>,
    }

    #[derive(Debug, Default, PartialEq, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Item {
        /// A name.
        name: String,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        /// Required.
        id: NodeId,
        /// Optional.
        #[serde(default)]
        flag: Option<bool>,
        /// A section.
        #[serde(default)]
        section: Section,
    }

    const ID: Required = Required { field: "id", what: "the id", stand_in: "x" };

    fn read_text(text: &str) -> (Option<File>, CheckErrors) {
        let mut errors = CheckErrors::new("f.toml");
        let file = read::<File>(text.parse().unwrap(), &[ID], &mut errors);
        (file, errors)
    }

    #[test]
    fn a_good_file_reads_as_plain_serde_does() {
        let text = "id = 'n1'\nflag = true\n[section]\ncount = 3\nkeys = { demo = 'k' }\nlist = [{ name = 'a' }]\n";
        let (file, errors) = read_text(text);
        assert!(errors.is_empty(), "{errors}");
        assert_eq!(file.unwrap(), toml::from_str::<File>(text).unwrap());
    }

    #[test]
    fn every_problem_is_reported_with_its_path_and_the_rest_still_read() {
        let text = "id = 'n.1'\nflg = 1\n[section]\ncount = -1\nkeys = { 'de mo' = 'k', ok = 'k', bad = 5 }\n\
                    list = [{ name = 'a' }, { nme = 'b' }, { name = 3 }]\nextra = 1\n";
        let (file, errors) = read_text(text);
        let found: Vec<(&str, &str)> = errors.errors.iter().map(|e| (e.field.as_str(), e.message.as_str())).collect();
        for (field, words) in [
            ("flg", "did you mean `flag`"),
            ("section.extra", "unknown key (expected one of: count, keys, list)"),
            ("section.list[1].nme", "did you mean `name`"),
            ("id", "has a character outside"),
            ("section.count", "integer `-1`"),
            ("section.keys.\"de mo\"", "stream name"),
            ("section.keys.bad", "integer"),
            ("section.list[2].name", "expected a string"),
        ] {
            assert!(found.iter().any(|(f, m)| *f == field && m.contains(words)), "no {field}: {words} in\n{errors}");
        }
        assert_eq!(errors.errors.len(), 8, "{errors}");
        // What did not read took its default or stood aside; the rest was read.
        let file = file.unwrap();
        assert_eq!(file.id.as_str(), "x");
        assert_eq!(file.section.count, 0);
        assert_eq!(file.section.keys.keys().map(StreamName::as_str).collect::<Vec<_>>(), ["ok"]);
        assert_eq!(file.section.list, [Item { name: "a".into() }, Item::default(), Item::default()]);
    }

    #[test]
    fn a_section_that_is_not_a_table_is_one_problem() {
        let (file, errors) = read_text("id = 'n1'\nsection = 'x'\n");
        assert_eq!(errors.to_string(), "f.toml: section: expected a table, found string");
        assert_eq!(file.unwrap().section, Section::default());
    }

    #[test]
    fn a_missing_required_field_says_what_belongs_there() {
        let (file, errors) = read_text("[section]\ncount = 2\ncont = 1\n");
        assert_eq!(
            errors.to_string(),
            "f.toml: section.cont: unknown key; did you mean `count`? (expected one of: count, keys, list)\n\
             f.toml: id: missing (the id)"
        );
        assert_eq!(file.unwrap().section.count, 2);
    }

    #[test]
    fn field_names_come_from_the_derive() {
        assert_eq!(field_names::<File>(), ["id", "flag", "section"]);
        assert_eq!(field_names::<Item>(), ["name"]);
    }
}
