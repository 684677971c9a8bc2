//! Error reports for operator-written files, and the reader that fills them.
//!
//! Topology files and node configs are checked the same way: every problem in a file is collected and
//! reported at once, each naming the field it is about (`nodes[2].mesh`, `tls.cert`), so that an operator
//! fixes a file in one pass rather than one error per run. serde stops at the first error, so files are
//! first parsed into a `toml::Table`; a topology is then read field by field with [`TableReader`], which
//! deserializes each field on its own and reports every key it was not asked for (configs are read by
//! their serde types through `config`'s own reader, which reports unknown keys the same way). This module
//! knows nothing about what the fields mean; `topology` and `config` do.

use std::fmt;

use serde::de::DeserializeOwned;

/// One problem found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    /// Where in the file: a field path such as `nodes[2].mesh`, `links[0].b` or `tls.cert`, a position such as
    /// `line 3, column 7` for a syntax error, or empty when the problem is about the whole file.
    pub field: String,
    /// What is wrong, for a person to read.
    pub message: String,
}

/// Every problem found in a file, each naming the field.
///
/// Displays as one line per problem: `FILE: FIELD: MESSAGE` (`FILE: MESSAGE` when the field is empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CheckErrors {
    /// The file that was checked, as the caller named it.
    pub file: String,
    /// The problems, in the order they were found (roughly file order).
    pub errors: Vec<CheckError>,
}

impl CheckErrors {
    /// An empty report for `file`.
    pub fn new(file: impl Into<String>) -> Self {
        Self { file: file.into(), errors: Vec::new() }
    }

    /// Records a problem with `field`.
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(CheckError { field: field.into(), message: message.into() });
    }

    /// True when no problem has been recorded.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// Whether some problem names exactly `field`.
    pub fn mentions(&self, field: &str) -> bool {
        self.errors.iter().any(|e| e.field == field)
    }

    /// `Ok(value)` when no problem was recorded, else the report.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Self> {
        if self.is_empty() {
            Ok(value())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for CheckErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            if e.field.is_empty() {
                write!(f, "{}: {}", self.file, e.message)?;
            } else {
                write!(f, "{}: {}: {}", self.file, e.field, e.message)?;
            }
        }
        Ok(())
    }
}

/// Parses TOML text into a table, recording a syntax error with its line and column.
pub(crate) fn parse_table(text: &str, errors: &mut CheckErrors) -> Option<toml::Table> {
    match text.parse::<toml::Table>() {
        Ok(table) => Some(table),
        Err(e) => {
            let field = match e.span() {
                Some(span) => {
                    let (line, column) = line_column(text, span.start);
                    format!("line {line}, column {column}")
                }
                None => String::new(),
            };
            errors.push(field, format!("TOML syntax error: {}", one_line(e.message())));
            None
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Folds a multi-line message onto one line, so that a report stays one line per problem.
pub(crate) fn one_line(message: &str) -> String {
    message.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// A field path for `key` under `parent`, quoting keys that are not bare TOML keys.
pub(crate) fn join_path(parent: &str, key: &str) -> String {
    let bare = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare { key.to_owned() } else { format!("{key:?}") };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// Reads one TOML table field by field, recording problems instead of stopping at the first.
///
/// Every key the caller asks about is remembered; [`TableReader::finish`] reports the others as unknown,
/// which is what `#[serde(deny_unknown_fields)]` does, but for every unknown key rather than the first.
pub(crate) struct TableReader<'t> {
    table: &'t toml::Table,
    path: String,
    known: Vec<&'static str>,
}

impl<'t> TableReader<'t> {
    /// A reader for `table`, found at `path` (empty for the file's top level).
    pub(crate) fn new(table: &'t toml::Table, path: impl Into<String>) -> Self {
        Self { table, path: path.into(), known: Vec::new() }
    }

    /// The path of `key` in this table.
    pub(crate) fn path_of(&self, key: &str) -> String {
        join_path(&self.path, key)
    }

    /// The raw value of `key`, if present.
    pub(crate) fn raw(&mut self, key: &'static str) -> Option<&'t toml::Value> {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
        self.table.get(key)
    }

    /// `key` deserialized as `T`; `None` when absent, or when malformed (which is recorded).
    pub(crate) fn optional<T: DeserializeOwned>(&mut self, key: &'static str, errors: &mut CheckErrors) -> Option<T> {
        let value = self.raw(key)?;
        match value.clone().try_into::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                errors.push(self.path_of(key), one_line(e.message()));
                None
            }
        }
    }

    /// Like [`TableReader::optional`], but a missing key is a problem; `what` tells the reader what belongs there.
    pub(crate) fn required<T: DeserializeOwned>(
        &mut self,
        key: &'static str,
        what: &str,
        errors: &mut CheckErrors,
    ) -> Option<T> {
        if self.raw(key).is_none() {
            errors.push(self.path_of(key), format!("missing ({what})"));
            return None;
        }
        self.optional(key, errors)
    }

    /// An array of tables such as `[[nodes]]`, each with its index in the file; entries that are not tables
    /// are recorded and skipped. Absent means empty.
    pub(crate) fn tables(&mut self, key: &'static str, errors: &mut CheckErrors) -> Vec<(usize, TableReader<'t>)> {
        let path = self.path_of(key);
        let Some(value) = self.raw(key) else {
            return Vec::new();
        };
        let Some(items) = value.as_array() else {
            errors.push(path, format!("expected an array of tables, found {}", value.type_str()));
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                toml::Value::Table(t) => out.push((i, TableReader::new(t, format!("{path}[{i}]")))),
                other => errors.push(format!("{path}[{i}]"), format!("expected a table, found {}", other.type_str())),
            }
        }
        out
    }

    /// Reports every key of the table that no call above asked about.
    pub(crate) fn finish(self, errors: &mut CheckErrors) {
        for key in self.table.keys() {
            if self.known.contains(&key.as_str()) {
                continue;
            }
            errors.push(self.path_of(key), unknown_key(key, &self.known));
        }
    }
}

/// What is wrong with a key that is not one of `known`: the keys expected, and the nearest one when it looks
/// like a typo of it.
pub(crate) fn unknown_key(key: &str, known: &[&str]) -> String {
    let nearest = known.iter().map(|k| (edit_distance(k, key), k)).min();
    match nearest.filter(|(d, near)| *d <= 2 && *d < near.len()) {
        Some((_, near)) => format!("unknown key; did you mean `{near}`? (expected one of: {})", known.join(", ")),
        None => format!("unknown key (expected one of: {})", known.join(", ")),
    }
}

/// Levenshtein distance, for "did you mean" hints on short keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb { prev } else { 1 + prev.min(cur).min(row[j]) };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_per_problem() {
        let mut e = CheckErrors::new("t.toml");
        e.push("nodes[0].id", "bad");
        e.push("", "whole file");
        assert_eq!(e.to_string(), "t.toml: nodes[0].id: bad\nt.toml: whole file");
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let mut e = CheckErrors::new("t.toml");
        assert!(parse_table("a = 1\nb = = 2\n", &mut e).is_none());
        assert_eq!(e.errors.len(), 1);
        assert!(e.errors[0].field.starts_with("line 2, column "), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
    }

    #[test]
    fn every_unknown_key_is_reported_with_a_hint() {
        let table: toml::Table = "id = 'x'\nmseh = 1\nfoo = 2\n".parse().unwrap();
        let mut e = CheckErrors::new("t");
        let mut r = TableReader::new(&table, "nodes[1]");
        let _: Option<String> = r.optional("id", &mut e);
        let _: Option<String> = r.optional("mesh", &mut e);
        r.finish(&mut e);
        assert!(e.mentions("nodes[1].mseh") && e.mentions("nodes[1].foo"), "{e}");
        assert!(e.to_string().contains("did you mean `mesh`"), "{e}");
    }

    #[test]
    fn quotes_keys_that_are_not_bare() {
        assert_eq!(join_path("ingest.stream_keys", "a b"), "ingest.stream_keys.\"a b\"");
        assert_eq!(join_path("", "node"), "node");
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("mesh", "mseh"), 2);
        assert_eq!(edit_distance("http", "htp"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
