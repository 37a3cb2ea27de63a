//! Drawing the model: a header line, the tree on the left, the preview on the right, and
//! the last line for the keys, a question or a message. Everything the colours say is also
//! said in text (the verdict's letter, `>` at the cursor), so that it reads without colour
//! and in `tmux capture-pane`.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

use super::model::{Mode, Model, letter, word};
use super::picker::Picker;
use crate::knowledge::Verdict;
use crate::paths::escape;
use crate::words::{bytes, count};

/// The keys, for `?` and the README.
pub const HELP: &[(&str, &str)] = &[
    ("↑ ↓ j k", "move (PgUp PgDn g G: page, first, last)"),
    ("enter space → l", "expand / collapse a directory"),
    ("← h", "collapse, or go to the parent"),
    ("/", "search units (enter: keep, esc: clear)"),
    ("f", "filter: findings, each verdict, all"),
    ("p", "persist into --nix-file (or the snippet)"),
    ("i", "ignore: a glob into [check] ignore"),
    ("u", "undo the last p or i, and what it wrote"),
    ("r", "restore from the last reset's old root"),
    ("s", "old roots: pick one, mount it, browse it"),
    ("?", "this help (any key closes it)"),
    ("q", "quit, printing what was written"),
];

fn verdict_style(v: Verdict, color: bool) -> Style {
    if !color {
        return Style::default();
    }
    match v {
        Verdict::Persist => Style::default()
            .fg(Color::Yellow)
            .add_modifier(Modifier::BOLD),
        Verdict::Review => Style::default().fg(Color::Cyan),
        Verdict::Ephemeral => Style::default().fg(Color::Green),
        Verdict::Generated => Style::default().fg(Color::DarkGray),
    }
}

/// Draws the whole screen. `preview` is what the disk says about the selected node.
pub fn draw(frame: &mut Frame, model: &mut Model, preview: &[String], color: bool) {
    // A question naming two long paths must be read whole before its y: the last line
    // grows to three when it needs them.
    let foot_text = footer(model);
    let width = frame.area().width.max(1) as usize;
    let foot_lines = foot_text.chars().count().div_ceil(width).clamp(1, 3) as u16;
    // An old root's header names it and its mount point whole, on two lines if need be.
    let head_text = header(model);
    let head_lines = head_text.chars().count().div_ceil(width).clamp(1, 2) as u16;
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(head_lines),
        Constraint::Min(1),
        Constraint::Length(foot_lines),
    ])
    .areas(frame.area());
    let tree_width = (body.width * 3 / 5).max(20).min(body.width);
    let [left, right] =
        Layout::horizontal([Constraint::Length(tree_width), Constraint::Min(0)]).areas(body);
    model.height = left.height as usize;
    model.scroll();

    frame.render_widget(Paragraph::new(head_text).wrap(Wrap { trim: false }), head);
    draw_tree(frame, model, left, color);
    draw_preview(frame, model, preview, right, color);
    frame.render_widget(Paragraph::new(foot_text).wrap(Wrap { trim: false }), foot);
    if model.mode == Mode::Help {
        draw_help(frame, body);
    }
}

fn header(model: &Model) -> String {
    if let Some(text) = &model.old_root_view {
        return text.clone();
    }
    let n = |v: Verdict| model.counts[super::model::verdict_index(v)];
    let mut text = format!(
        "imperm browse {} · {}P {}R {}E {}G · {}/{} · filter {}",
        model.command,
        n(Verdict::Persist),
        n(Verdict::Review),
        n(Verdict::Ephemeral),
        n(Verdict::Generated),
        if model.rows.is_empty() {
            0
        } else {
            model.selected + 1
        },
        model.rows.len(),
        model.filter.label()
    );
    if !model.search.is_empty() {
        text.push_str(&format!(" · /{}", model.search));
    }
    text
}

fn footer(model: &Model) -> String {
    match &model.mode {
        Mode::Confirm { question, .. } => question.clone(),
        Mode::Search(text) => format!("/{text}▏ (enter: keep, esc: clear)"),
        _ if !model.message.is_empty() => model.message.clone(),
        _ if model.old_root_view.is_some() => {
            "enter expand / search f filter ? help q/esc back (it stays mounted)".into()
        }
        _ => {
            "p persist i ignore u undo r restore s old roots / search f filter ? help q quit".into()
        }
    }
}

fn draw_tree(frame: &mut Frame, model: &Model, area: Rect, color: bool) {
    let block = Block::default().borders(Borders::RIGHT);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = inner.width as usize;
    let mut lines = Vec::with_capacity(inner.height as usize);
    if model.rows.is_empty() {
        lines.push(Line::from(if model.units.is_empty() {
            "nothing found"
        } else {
            "no unit matches (f: filter, esc: clear the search)"
        }));
    }
    for (i, &id) in model
        .rows
        .iter()
        .enumerate()
        .skip(model.offset)
        .take(inner.height as usize)
    {
        let node = &model.nodes[id];
        let unit = &model.units[node.unit];
        let cursor = if i == model.selected { ">" } else { " " };
        let arrow = match (node.dir, node.expanded) {
            (false, _) => ' ',
            (true, false) => '▸',
            (true, true) => '▾',
        };
        let indent = "  ".repeat(node.depth as usize);
        let mark = if node.parent.is_none() && model.old_root_view.is_none() {
            letter(unit.verdict)
        } else {
            '·'
        };
        let right = if node.parent.is_none() && model.old_root_view.is_none() {
            format!(" {:>5} {:>9}", unit.files, bytes(unit.bytes))
        } else if node.dir {
            String::new()
        } else {
            format!(" {:>9}", bytes(node.bytes))
        };
        let lead = format!("{cursor}{indent}{arrow}{mark} ");
        let room = width.saturating_sub(lead.chars().count() + right.chars().count());
        let label = fit(&node.label, room);
        let pad = room.saturating_sub(label.chars().count());
        let mut style = verdict_style(unit.verdict, color);
        if node.parent.is_some() {
            style = Style::default();
        }
        let mut spans = vec![
            Span::raw(lead),
            Span::styled(label, style),
            Span::raw(" ".repeat(pad)),
            Span::raw(right),
        ];
        if i == model.selected {
            for s in &mut spans {
                s.style = s.style.add_modifier(Modifier::REVERSED);
            }
        }
        lines.push(Line::from(spans));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

/// `text` in at most `room` characters, cut in the middle (the ends of a path say most).
fn fit(text: &str, room: usize) -> String {
    let n = text.chars().count();
    if n <= room {
        return text.to_string();
    }
    if room < 2 {
        return text.chars().take(room).collect();
    }
    let tail = (room - 1) / 2;
    let head = room - 1 - tail;
    let start: String = text.chars().take(head).collect();
    let end: String = text.chars().skip(n - tail).collect();
    format!("{start}…{end}")
}

fn draw_preview(frame: &mut Frame, model: &Model, preview: &[String], area: Rect, color: bool) {
    let Some(id) = model.current() else {
        return;
    };
    let node = &model.nodes[id];
    let unit = &model.units[node.unit];
    let mut lines: Vec<Line> = vec![Line::from(escape(&node.path))];
    if model.old_root_view.is_some() {
        // An old root's tree: no verdict, no reason; what the disk says.
        lines.extend(preview.iter().map(|l| Line::from(l.clone())));
        frame.render_widget(
            Paragraph::new(lines).wrap(Wrap { trim: false }),
            Rect {
                x: area.x + 1,
                width: area.width.saturating_sub(1),
                ..area
            },
        );
        return;
    }
    if node.parent.is_some() {
        lines.push(Line::from(format!("in {}", super::model::shown(unit))));
    }
    let verdict = if node.parent.is_none() {
        format!(
            "{} {} · {}",
            letter(unit.verdict),
            word(unit.verdict),
            unit.kind.as_str()
        )
    } else {
        format!(
            "{} {}, as its unit",
            letter(unit.verdict),
            word(unit.verdict)
        )
    };
    lines.push(Line::from(Span::styled(
        verdict,
        verdict_style(unit.verdict, color),
    )));
    lines.push(Line::from(unit.reason.clone()));
    lines.push(Line::from(format!("source: {}", unit.source)));
    if let Some(service) = &unit.service {
        lines.push(Line::from(format!("service: {service}")));
    }
    if node.parent.is_none() {
        lines.push(Line::from(format!(
            "{} · {}",
            count(unit.files as usize, "file", "files"),
            bytes(unit.bytes)
        )));
    }
    if let Some(user) = &unit.user {
        lines.push(Line::from(format!("user: {user}")));
    }
    lines.push(Line::from(""));
    lines.extend(preview.iter().map(|l| Line::from(l.clone())));
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }),
        Rect {
            x: area.x + 1,
            width: area.width.saturating_sub(1),
            ..area
        },
    );
}

/// Draws the picker of old roots: a header, one line per old root (newest first, the
/// last reset's marked), and the last line for the keys, the question or a message.
pub fn draw_picker(frame: &mut Frame, picker: &mut Picker) {
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(2),
    ])
    .areas(frame.area());
    picker.height = body.height as usize;
    picker.scroll();
    frame.render_widget(
        Paragraph::new(format!(
            "imperm browse · old roots · {} · newest first",
            count(picker.entries.len(), "snapshot", "snapshots")
        )),
        head,
    );
    let width = body.width as usize;
    let mut lines = Vec::with_capacity(body.height as usize);
    if picker.entries.is_empty() {
        lines.push(Line::from("no old root: no reset has kept one yet"));
    }
    for (i, e) in picker
        .entries
        .iter()
        .enumerate()
        .skip(picker.offset)
        .take(body.height as usize)
    {
        let cursor = if i == picker.selected { ">" } else { " " };
        let last = if e.last { "  (last reset's)" } else { "" };
        let time = if e.time.is_empty() { "-" } else { &e.time };
        let text = fit(&format!("{cursor} {time:<20}  {}{last}", e.name), width);
        let pad = width.saturating_sub(text.chars().count());
        let mut style = Style::default();
        if i == picker.selected {
            style = style.add_modifier(Modifier::REVERSED);
        }
        lines.push(Line::from(Span::styled(
            format!("{text}{}", " ".repeat(pad)),
            style,
        )));
    }
    frame.render_widget(Paragraph::new(lines), body);
    let text = match &picker.question {
        Some(q) => q.clone(),
        None if !picker.message.is_empty() => picker.message.clone(),
        None => "enter mount read-only and browse · esc back".into(),
    };
    frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: false }), foot);
}

fn draw_help(frame: &mut Frame, body: Rect) {
    let width = body.width.min(60);
    let height = (HELP.len() as u16 + 2).min(body.height);
    let area = Rect {
        x: body.x + (body.width - width) / 2,
        y: body.y + (body.height - height) / 2,
        width,
        height,
    };
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| Line::from(format!("{k:<16} {what}")))
        .collect();
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" keys ")),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::browse::model::{Child, Key, Lister, Targets};
    use crate::classify::Source;
    use crate::discover::suggest::Suggestion;
    use crate::persisted::Kind;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use std::path::{Path, PathBuf};

    struct Empty;
    impl Lister for Empty {
        fn list(&self, _: &Path) -> Vec<Child> {
            Vec::new()
        }
    }

    fn unit(path: &str, verdict: Verdict) -> Suggestion {
        Suggestion {
            path: PathBuf::from(path),
            kind: Kind::Directory,
            verdict,
            reason: "state of a service".into(),
            source: Source::Unit {
                unit: "forgejo.service".into(),
                setting: "StateDirectory".into(),
            },
            service: None,
            files: 12,
            bytes: 4096,
            user: None,
            relative: None,
            in_initrd: false,
            mode: None,
            owner: None,
            group: None,
            parent: None,
        }
    }

    fn screen(model: &mut Model) -> Vec<String> {
        let mut term = Terminal::new(TestBackend::new(80, 24)).unwrap();
        term.draw(|f| draw(f, model, &[], false)).unwrap();
        let buf = term.backend().buffer().clone();
        (0..24)
            .map(|y| {
                (0..80)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect()
    }

    #[test]
    fn rows_carry_letter_counts_and_cursor_without_colour() {
        let mut m = Model::new(
            "check",
            vec![
                unit("/var/lib/forgejo", Verdict::Persist),
                unit("/var/cache/x", Verdict::Ephemeral),
            ],
            Targets::default(),
        );
        let s = screen(&mut m);
        assert!(s[0].starts_with("imperm browse check · 1P 0R 1E 0G · 1/2 · filter findings"));
        assert!(s[1].starts_with(">▸P /var/lib/forgejo"), "{:?}", s[1]);
        assert!(s[1].contains("   12   4.0 KiB│"), "{:?}", s[1]);
        assert!(s[2].starts_with(" ▸E /var/cache/x"), "{:?}", s[2]);
        assert!(s[1].contains("│ /var/lib/forgejo"), "{:?}", s[1]);
        assert!(
            s.iter()
                .any(|l| l.contains("source: unit forgejo.service:"))
        );
        assert!(s[23].starts_with("p persist i ignore"));
        m.key(Key::Char('?'), &Empty);
        let s = screen(&mut m);
        assert!(
            s.iter().any(|l| l.contains("q                quit")),
            "{s:#?}"
        );
    }

    #[test]
    fn long_paths_are_cut_in_the_middle() {
        assert_eq!(fit("/var/lib/something-long", 11), "/var/…-long");
        assert_eq!(fit("/a", 5), "/a");
    }
}
