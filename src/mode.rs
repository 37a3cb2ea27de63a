//! Permission modes as impermanence accepts them: octal (`"0700"`) or chmod's symbolic form
//! (`"u=rwx,g=rx,o="`), both applied to a newly created directory (mode 0).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// Permission bits, including setuid/setgid/sticky.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mode(u32);

impl Mode {
    pub const fn from_bits(bits: u32) -> Mode {
        Mode(bits & 0o7777)
    }

    pub const fn bits(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Serialize for Mode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Why a mode string was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeError(String);

impl fmt::Display for ModeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a mode (expected octal like \"0700\" or symbolic like \"u=rwx,g=,o=\")",
            self.0
        )
    }
}

impl FromStr for Mode {
    type Err = ModeError;

    fn from_str(raw: &str) -> Result<Mode, ModeError> {
        let bad = || ModeError(raw.to_string());
        if raw.is_empty() {
            return Err(bad());
        }
        if raw.bytes().all(|b| b.is_ascii_digit()) {
            // chmod takes any number of leading zeros ("01777" is the sticky bit).
            let digits = raw.trim_start_matches('0');
            if digits.len() > 4 {
                return Err(bad());
            }
            return u32::from_str_radix(if digits.is_empty() { "0" } else { digits }, 8)
                .map(Mode)
                .map_err(|_| bad());
        }
        let mut bits = 0u32;
        for clause in raw.split(',') {
            bits = apply_clause(bits, clause).ok_or_else(bad)?;
        }
        Ok(Mode(bits))
    }
}

/// Applies one chmod clause (`[ugoa]*([-+=][rwxXst]*)+`) to `bits`.
fn apply_clause(mut bits: u32, clause: &str) -> Option<u32> {
    let who_end = clause
        .find(|c: char| !matches!(c, 'u' | 'g' | 'o' | 'a'))
        .unwrap_or(clause.len());
    let (who, mut rest) = clause.split_at(who_end);
    if rest.is_empty() {
        return None;
    }
    // Who-mask selects the rwx triplets plus the special bit belonging to each class.
    let mut mask = 0u32;
    for c in who.chars() {
        mask |= match c {
            'u' => 0o4700,
            'g' => 0o2070,
            'o' => 0o1007,
            _ => 0o7777,
        };
    }
    if who.is_empty() {
        mask = 0o7777;
    }
    while let Some(op) = rest.chars().next() {
        if !matches!(op, '+' | '-' | '=') {
            return None;
        }
        rest = &rest[1..];
        let perm_end = rest.find(['+', '-', '=']).unwrap_or(rest.len());
        let (perms, tail) = rest.split_at(perm_end);
        rest = tail;
        let mut value = 0u32;
        for c in perms.chars() {
            value |= match c {
                'r' => 0o444,
                'w' => 0o222,
                'x' | 'X' => 0o111,
                's' => 0o6000,
                't' => 0o1000,
                _ => return None,
            };
        }
        let value = value & mask;
        bits = match op {
            '+' => bits | value,
            '-' => bits & !value,
            _ => (bits & !mask) | value,
        };
    }
    Some(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_like_chmod_on_a_new_directory() {
        let cases: &[(&str, Option<u32>)] = &[
            ("0700", Some(0o700)),
            ("700", Some(0o700)),
            ("0755", Some(0o755)),
            ("1777", Some(0o1777)),
            ("u=rwx,g=,o=", Some(0o700)),
            ("u=rwx,g=rx,o=", Some(0o750)),
            ("u=rwx,go=rx", Some(0o755)),
            ("a=rx,u+w", Some(0o755)),
            ("=rwx", Some(0o777)),
            ("u=rwx,g=rwx,o=rwx,o-w", Some(0o775)),
            ("u=rwxs", Some(0o4700)),
            ("", None),
            ("0800", None),
            ("07777", Some(0o7777)),
            ("01777", Some(0o1777)),
            ("000700", Some(0o700)),
            ("0", Some(0)),
            ("17777", None),
            ("0800", None),
            ("rwx", None),
            ("u=rwq", None),
            ("u", None),
        ];
        for (raw, want) in cases {
            let got = raw.parse::<Mode>().ok().map(Mode::bits);
            assert_eq!(got, *want, "mode {raw:?}");
        }
    }

    #[test]
    fn modes_render_as_four_octal_digits() {
        assert_eq!(Mode::from_bits(0o700).to_string(), "0700");
        assert_eq!(Mode::from_bits(0o1777).to_string(), "1777");
    }
}
