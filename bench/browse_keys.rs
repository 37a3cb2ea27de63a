//! Part 9 of bench/run: `imperm browse` over a result of 100,000 units, per key. Builds the
//! model from 100,000 suggestions (what opening costs after discovery), then times each
//! key of a session (moves, pages, to the end and back, expanding, the filter, a search
//! typed letter by letter) as the model's key handling plus a full render to ratatui's
//! TestBackend at 80×24, which is what a key costs the program before the terminal writes
//! the changed cells. Prints `open_ms`, then `keys`, `p50_ms`, `p99_ms`, `max_ms`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use imperm::browse::model::{Child, Key, Lister, Model, Targets};
use imperm::browse::view;
use imperm::classify::Source;
use imperm::discover::suggest::Suggestion;
use imperm::knowledge::Verdict;
use imperm::persisted::Kind;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

/// Ten entries in every directory: expanding reads them, as the disk would.
struct Ten;

impl Lister for Ten {
    fn list(&self, _: &Path) -> Vec<Child> {
        (0..10)
            .map(|i| Child {
                name: format!("f{i}").into(),
                dir: false,
                bytes: 100,
            })
            .collect()
    }
}

fn main() {
    let units: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let verdicts = [
        Verdict::Persist,
        Verdict::Review,
        Verdict::Ephemeral,
        Verdict::Generated,
    ];
    let suggestions: Vec<Suggestion> = (0..units)
        .map(|i| Suggestion {
            path: PathBuf::from(format!("/var/lib/svc{:03}/state{i:06}", i % 1000)),
            kind: Kind::Directory,
            verdict: verdicts[i % 4],
            reason: "service state under /var/lib/<service>".into(),
            source: Source::Knowledge,
            service: None,
            files: 3,
            bytes: 4096,
            user: None,
            relative: None,
            in_initrd: false,
            mode: None,
            owner: None,
            group: None,
            parent: None,
        })
        .collect();
    let mut term = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let preview: Vec<String> = vec!["file · 4.0 KiB · mode 0644 · owner 0:0".into()];

    let start = Instant::now();
    let mut model = Model::new("audit", suggestions, Targets::default());
    term.draw(|f| view::draw(f, &mut model, &preview, true))
        .unwrap();
    let open_ms = start.elapsed().as_secs_f64() * 1000.0;

    let mut keys = Vec::new();
    keys.extend([Key::Down; 200]);
    keys.extend([Key::PageDown; 100]);
    keys.push(Key::End);
    keys.extend([Key::Up; 50]);
    keys.push(Key::Home);
    keys.extend([Key::Enter, Key::Down, Key::Down, Key::Left, Key::Left]);
    keys.extend([Key::Char('f'); 6]);
    keys.push(Key::Char('/'));
    keys.extend("state04".chars().map(Key::Char));
    keys.extend([Key::Backspace; 3]);
    keys.push(Key::Enter);
    keys.extend([Key::PageDown; 20]);
    keys.push(Key::Esc);
    keys.extend([Key::PageUp; 20]);

    let mut times = Vec::with_capacity(keys.len());
    for key in keys {
        let t = Instant::now();
        model.key(key, &Ten);
        term.draw(|f| view::draw(f, &mut model, &preview, true))
            .unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!("units {units}");
    println!("open_ms {open_ms:.1}");
    println!("keys {}", times.len());
    println!("p50_ms {:.2}", at(0.5));
    println!("p99_ms {:.2}", at(0.99));
    println!("max_ms {:.2}", at(1.0));
}
