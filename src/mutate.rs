//! Test support: arbitrary mutations of a valid input, for the parsers' property tests.
//! Random bytes alone almost never get past a parser's first check; a valid input with a
//! few bytes deleted, replaced, duplicated or inserted reaches every later one.

use proptest::prelude::*;

/// Bytes that mean something to TOML, JSON, mountinfo or a path, and some that must not
/// appear (NUL, invalid UTF-8).
const INTERESTING: &[u8] = b"[]{}\"'\\=,.:/\n\r\t #0-a\x00\xff\xc3\xa9\x1b";

fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![prop::sample::select(INTERESTING), any::<u8>()]
}

/// One edit: what to do, where (a fraction of the length), how much, with which bytes.
type Edit = (u8, prop::sample::Index, usize, Vec<u8>);

pub fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(
        (
            0u8..5,
            any::<prop::sample::Index>(),
            0usize..24,
            prop::collection::vec(byte(), 0..12),
        ),
        1..8,
    )
}

/// Applies the edits in order.
pub fn apply(input: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = input.to_vec();
    for (op, at, len, bytes) in edits {
        let at = if out.is_empty() {
            0
        } else {
            at.index(out.len() + 1)
        };
        let end = (at + len).min(out.len());
        match op {
            0 => {
                out.drain(at..end);
            }
            1 => {
                out.splice(at..end, bytes.iter().copied());
            }
            2 => {
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
            3 => {
                // Nest: many openers at one place (deep structures).
                let opener = bytes.first().copied().unwrap_or(b'[');
                out.splice(at..at, std::iter::repeat_n(opener, len * 400));
            }
            _ => {
                out.splice(at..at, bytes.iter().copied());
            }
        }
    }
    out
}
