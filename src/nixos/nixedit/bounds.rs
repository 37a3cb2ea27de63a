//! What a .nix file must stay within before it is parsed. rnix's parser recurses without a
//! bound through nested lists, `-`/`!` chains, right-associative operators (`++`, `//`,
//! `->`, `<|`) and `or` defaults, builds a tree as deep as any operator or application
//! chain (and dropping that tree recurses too), takes time quadratic in such depths, and
//! its tokenizer rescans a run of path characters (`a.a.a…`) at every token in it.
//! Measured on rnix 0.14 (see the README): 100,000 nested `[` or `!`, and 100,000-long
//! `++`, `+` or application chains overflow an 8 MiB stack, and 8,000 of them take a
//! second or more. So, before parsing: a size bound, a bound on the tokenizer's work, and a
//! bound on nesting, measured on rnix's own tokens so that the measure sees the file as the
//! parser will.

use rnix::SyntaxKind::{self, *};

/// A host's configuration is a few hundred lines; a megabyte is far beyond any.
pub const MAX_BYTES: usize = 1 << 20;

/// The nesting measure a file may reach (see `Nesting`): at most 69 in 14,805 public .nix
/// files (NixOS configurations and nixpkgs' lib); at this bound rnix needs at most 2 MiB
/// of stack in a debug build (measured, see the README).
pub const MAX_NESTING: usize = 256;

/// What the tokenizer may spend on path-character scans, per byte of input: public .nix
/// files need at most 6.
const SCAN_PER_BYTE: usize = 16;

/// Checks `text` against the bounds; the error names the line where one was crossed.
pub fn check(text: &str) -> Result<(), String> {
    if text.len() > MAX_BYTES {
        return Err(format!(
            "the file is {} bytes, more than the {MAX_BYTES} a host configuration can sensibly have",
            text.len()
        ));
    }
    let runs = path_runs(text);
    let budget = SCAN_PER_BYTE * text.len() + (1 << 16);
    let mut spent = 0usize;
    let mut offset = 0usize;
    let mut nesting = Nesting::default();
    let mut tokens = rnix::tokenize(text);
    loop {
        // The tokenizer scans the path characters ahead of where it stands before it
        // decides what the next token is: account for that before letting it.
        spent += runs.get(offset).copied().unwrap_or(0) as usize;
        if spent > budget {
            return Err(format!(
                "line {}: a run of names and dots too long to read",
                line_at(text, offset)
            ));
        }
        let Some((kind, s)) = tokens.next() else {
            break;
        };
        if nesting.push(kind) > MAX_NESTING {
            return Err(format!(
                "line {}: nested deeper than the {MAX_NESTING} levels imperm reads",
                line_at(text, offset)
            ));
        }
        offset += s.len();
    }
    Ok(())
}

/// For each byte offset, how many path characters (`[a-zA-Z0-9/_.+-]`) start there.
fn path_runs(text: &str) -> Vec<u32> {
    let bytes = text.as_bytes();
    let mut runs = vec![0u32; bytes.len() + 1];
    for i in (0..bytes.len()).rev() {
        if matches!(bytes[i], b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/' | b'_' | b'.' | b'+' | b'-')
        {
            runs[i] = runs[i + 1] + 1;
        }
    }
    runs
}

fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Code,
    List,
    Str,
}

/// An open bracket, string or interpolation, and what has been counted in it.
struct Frame {
    kind: Kind,
    /// Operators since the last separator (in a list: `or`s in the element).
    count: usize,
    /// Operands since the last operator: an application `f a b` nests as deep.
    run: usize,
    /// In a list: the last token ended an element (a new atom begins another).
    atom: bool,
    /// In `inherit …;`: a flat list of names, nothing nests.
    inherit: bool,
    /// After a `.`: the name is part of a flat attribute path.
    dot: bool,
}

/// An upper bound of how deep the parser recurses and the tree grows at a token: the open
/// brackets, strings and interpolations, plus, in each, the operators since the last
/// separator and the operands since the last operator (each operator nests once, and an
/// application `f a b` as deep as its arguments; the names of an attribute path after a
/// `.` not at all). The separators
/// (`;` `,` `=` `:` and the keywords) end every chain but the keyword constructs (`let`,
/// `with`, `assert`, `if`, lambdas), whose nesting rnix bounds itself at 512. In a list
/// only `or` chains nest: its elements are counted from the last one that began. The
/// names of an `inherit` do not nest.
struct Nesting {
    frames: Vec<Frame>,
    sum: usize,
}

impl Default for Nesting {
    fn default() -> Nesting {
        Nesting {
            frames: vec![Frame::new(Kind::Code)],
            sum: 0,
        }
    }
}

impl Frame {
    fn new(kind: Kind) -> Frame {
        Frame {
            kind,
            count: 0,
            run: 0,
            atom: false,
            inherit: false,
            dot: false,
        }
    }
}

impl Nesting {
    /// Takes one token; returns the measure after it.
    fn push(&mut self, kind: SyntaxKind) -> usize {
        if kind.is_trivia() {
            return self.measure();
        }
        match kind {
            TOKEN_L_BRACE | TOKEN_L_PAREN | TOKEN_L_BRACK | TOKEN_INTERPOL_START
            | TOKEN_STRING_START => {
                self.count(kind);
                self.frames.push(Frame::new(match kind {
                    TOKEN_L_BRACK => Kind::List,
                    TOKEN_STRING_START => Kind::Str,
                    _ => Kind::Code,
                }));
            }
            TOKEN_R_BRACE | TOKEN_R_PAREN | TOKEN_R_BRACK | TOKEN_INTERPOL_END
            | TOKEN_STRING_END => {
                // The outermost frame is the file's: never closed.
                if self.frames.len() > 1 {
                    let frame = self.frames.pop().expect("more than one");
                    self.sum -= frame.count + frame.run;
                }
                // What closed is one element, as far as an enclosing list goes.
                let top = self.top();
                if top.kind == Kind::List {
                    top.atom = true;
                }
            }
            // What stands before these is complete, or is a keyword construct (`let`,
            // `with`, `assert`, `if`, a lambda), whose nesting rnix bounds at 512.
            TOKEN_SEMICOLON | TOKEN_COMMA | TOKEN_ASSIGN | TOKEN_COLON | TOKEN_IF | TOKEN_THEN
            | TOKEN_ELSE | TOKEN_LET | TOKEN_IN | TOKEN_WITH | TOKEN_ASSERT => self.reset(),
            TOKEN_INHERIT => {
                self.reset();
                self.top().inherit = true;
            }
            _ => self.count(kind),
        }
        self.measure()
    }

    fn top(&mut self) -> &mut Frame {
        self.frames
            .last_mut()
            .expect("the file's frame is never closed")
    }

    fn measure(&self) -> usize {
        self.frames.len() + self.sum
    }

    fn reset(&mut self) {
        let top = self
            .frames
            .last_mut()
            .expect("the file's frame is never closed");
        if top.kind == Kind::Code {
            self.sum -= top.count + top.run;
            top.count = 0;
            top.run = 0;
            top.inherit = false;
        }
    }

    fn count(&mut self, kind: SyntaxKind) {
        let top = self
            .frames
            .last_mut()
            .expect("the file's frame is never closed");
        match top.kind {
            Kind::Code if top.inherit => {}
            // `a.b.c` is one select with a flat path, however long.
            Kind::Code if kind == TOKEN_DOT => top.dot = true,
            Kind::Code if top.dot => top.dot = false,
            // An operator nests once more; the operands before it are done.
            Kind::Code if is_operator(kind) => {
                top.count += 1;
                self.sum = self.sum + 1 - top.run;
                top.run = 0;
            }
            Kind::Code => {
                top.run += 1;
                self.sum += 1;
            }
            Kind::Str => {}
            Kind::List => match kind {
                TOKEN_OR => {
                    top.count += 1;
                    self.sum += 1;
                    top.atom = false;
                }
                TOKEN_DOT => top.atom = false,
                _ => {
                    // Two atoms in a row: a new element began.
                    if top.atom {
                        self.sum -= top.count;
                        top.count = 0;
                    }
                    top.atom = true;
                }
            },
        }
    }
}

/// Tokens that nest what follows them (binary and unary operators, `?`, an `or`
/// default), as opposed to operands.
fn is_operator(kind: SyntaxKind) -> bool {
    matches!(
        kind,
        TOKEN_ADD
            | TOKEN_SUB
            | TOKEN_MUL
            | TOKEN_DIV
            | TOKEN_CONCAT
            | TOKEN_UPDATE
            | TOKEN_AND_AND
            | TOKEN_OR_OR
            | TOKEN_EQUAL
            | TOKEN_NOT_EQUAL
            | TOKEN_LESS
            | TOKEN_LESS_OR_EQ
            | TOKEN_MORE
            | TOKEN_MORE_OR_EQ
            | TOKEN_IMPLICATION
            | TOKEN_PIPE_LEFT
            | TOKEN_PIPE_RIGHT
            | TOKEN_INVERT
            | TOKEN_QUESTION
            | TOKEN_OR
    )
}
