//! `i`: a glob added to `[check] ignore` in the configuration file. No other command
//! edits that file, so this is where it is done: with `toml_edit`, which keeps the rest
//! of the file as it was (comments, order, spacing), and the result is parsed as the
//! configuration before it is written, so that the file stays one imperm loads.

use std::path::Path;

use toml_edit::{Array, DocumentMut, Item, Table, Value};

/// `text` with `glob` appended to `[check] ignore` (the table and the array made when
/// missing); `None` when the glob is there already. `Err` (one line) when the file is not
/// TOML, or `check` or `check.ignore` is something else than a table and an array.
pub fn with_ignore(file: &Path, text: &str, glob: &str) -> Result<Option<String>, String> {
    let shown = crate::paths::escape(file);
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| format!("{shown}: not TOML: {}", one_line(&e)))?;
    let check = doc
        .entry("check")
        .or_insert_with(|| Item::Table(Table::new()));
    let check = check
        .as_table_like_mut()
        .ok_or_else(|| format!("{shown}: check is not a table"))?;
    let ignore = check
        .entry("ignore")
        .or_insert(Item::Value(Value::Array(Array::new())));
    let ignore = ignore
        .as_array_mut()
        .ok_or_else(|| format!("{shown}: check.ignore is not an array"))?;
    if ignore.iter().any(|v| v.as_str() == Some(glob)) {
        return Ok(None);
    }
    ignore.push(glob);
    let out = doc.to_string();
    // What imperm loads: a glob it refuses would break every later command.
    crate::config::file::parse(file, &out).map_err(|e| e.to_string())?;
    Ok(Some(out))
}

fn one_line(e: &toml_edit::TomlError) -> String {
    e.message().replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_glob_joins_the_list_and_the_rest_stays_as_it_was() {
        let file = Path::new("/etc/imperm/config.toml");
        let text =
            "# mine\n[retention]\nkeep_last = 3 # three\n\n[check]\nignore = [\"/var/a/**\"]\n";
        let out = with_ignore(file, text, "/var/b{,/**}").unwrap().unwrap();
        assert_eq!(
            out,
            "# mine\n[retention]\nkeep_last = 3 # three\n\n[check]\nignore = [\"/var/a/**\", \"/var/b{,/**}\"]\n"
        );
        assert_eq!(with_ignore(file, &out, "/var/b{,/**}").unwrap(), None);
        let fresh = with_ignore(file, "", "/x").unwrap().unwrap();
        assert_eq!(fresh, "[check]\nignore = [\"/x\"]\n");
        assert!(crate::config::file::parse(file, &fresh).is_ok());
    }

    #[test]
    fn what_cannot_take_a_glob_is_refused_naming_the_file() {
        let file = Path::new("/c.toml");
        for (text, want) in [
            ("check = 3\n", "/c.toml: check is not a table"),
            (
                "[check]\nignore = \"x\"\n",
                "/c.toml: check.ignore is not an array",
            ),
        ] {
            assert_eq!(with_ignore(file, text, "/x").unwrap_err(), want);
        }
        assert!(
            with_ignore(file, "[check\n", "/x")
                .unwrap_err()
                .starts_with("/c.toml: not TOML")
        );
        // A glob imperm would not load is never written.
        let bad = with_ignore(file, "", "relative/**").unwrap_err();
        assert!(bad.contains("check.ignore[0]"), "{bad}");
    }
}
