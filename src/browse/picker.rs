//! `s`: the picker of old roots. The snapshots of old roots, newest first, the last
//! reset's marked; Enter asks before mounting the chosen one (a mount is a visible
//! action, as a write is), `y` says to mount it, Esc or `q` goes back. Pure: the caller
//! lists the snapshots, mounts, and draws.

use super::model::Key;

/// One old root as the picker lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// As `snapshots ls` prints it (and `snapshots mount` reads it back).
    pub name: String,
    /// When it was taken, as its name says (UTC), or empty when its name says none.
    pub time: String,
    /// The last reset's snapshot.
    pub last: bool,
}

/// What the caller must do after a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pick {
    None,
    /// Esc or `q`: back to the view the picker was opened from.
    Back,
    /// Confirmed: mount the entry at this index, and browse it.
    Mount(usize),
}

pub struct Picker {
    /// Newest first.
    pub entries: Vec<Entry>,
    pub selected: usize,
    pub offset: usize,
    /// Rows on screen (set by the view).
    pub height: usize,
    /// Where old roots are mounted (`NAME` is joined), for the question.
    pub place: String,
    /// The question waiting for y/n.
    pub question: Option<String>,
    /// What the last line says when no question is asked.
    pub message: String,
}

impl Picker {
    pub fn new(entries: Vec<Entry>, place: String) -> Picker {
        Picker {
            entries,
            selected: 0,
            offset: 0,
            height: 20,
            place,
            question: None,
            message: String::new(),
        }
    }

    fn select(&mut self, row: usize) {
        self.selected = row.min(self.entries.len().saturating_sub(1));
        self.scroll();
    }

    /// Keeps the selection on screen.
    pub fn scroll(&mut self) {
        let h = self.height.max(1);
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + h {
            self.offset = self.selected + 1 - h;
        }
        self.offset = self.offset.min(self.entries.len().saturating_sub(h));
    }

    pub fn key(&mut self, key: Key) -> Pick {
        if self.question.take().is_some() {
            if matches!(key, Key::Char('y' | 'Y')) {
                return Pick::Mount(self.selected);
            }
            self.message = "cancelled: nothing mounted".into();
            return Pick::None;
        }
        self.message.clear();
        let page = self.height.max(1);
        match key {
            Key::Up | Key::Char('k') => self.select(self.selected.saturating_sub(1)),
            Key::Down | Key::Char('j') => self.select(self.selected + 1),
            Key::PageUp => self.select(self.selected.saturating_sub(page)),
            Key::PageDown => self.select(self.selected + page),
            Key::Home | Key::Char('g') => self.select(0),
            Key::End | Key::Char('G') => self.select(usize::MAX),
            Key::Esc | Key::Char('q') | Key::Left | Key::Char('h') => return Pick::Back,
            Key::Enter | Key::Right | Key::Char('l') => match self.entries.get(self.selected) {
                Some(e) => {
                    self.question = Some(format!(
                        "s: mount {} read-only at {}/{}? y/n",
                        e.name, self.place, e.name
                    ))
                }
                None => self.message = "no old root to mount".into(),
            },
            _ => {}
        }
        Pick::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<Entry> {
        ["20261126T063000Z", "20261125T063000Z", "20261124T063000Z"]
            .iter()
            .enumerate()
            .map(|(i, n)| Entry {
                name: n.to_string(),
                time: String::new(),
                last: i == 0,
            })
            .collect()
    }

    #[test]
    fn enter_asks_and_only_y_mounts_the_selected_one() {
        let mut p = Picker::new(entries(), "/run/imperm/old-roots".into());
        assert_eq!(p.key(Key::Down), Pick::None);
        assert_eq!(p.key(Key::Enter), Pick::None);
        assert_eq!(
            p.question.as_deref(),
            Some(
                "s: mount 20261125T063000Z read-only at /run/imperm/old-roots/20261125T063000Z? y/n"
            )
        );
        // Anything but y cancels: nothing mounted.
        assert_eq!(p.key(Key::Enter), Pick::None);
        assert_eq!(p.message, "cancelled: nothing mounted");
        assert_eq!(p.key(Key::Enter), Pick::None);
        assert_eq!(p.key(Key::Char('y')), Pick::Mount(1));
        assert_eq!(p.key(Key::Char('G')), Pick::None);
        assert_eq!(p.selected, 2);
        assert_eq!(p.key(Key::Esc), Pick::Back);
    }

    #[test]
    fn an_empty_list_mounts_nothing() {
        let mut p = Picker::new(Vec::new(), "/x".into());
        p.key(Key::Enter);
        assert_eq!(p.question, None);
        assert_eq!(p.message, "no old root to mount");
        assert_eq!(p.key(Key::Char('y')), Pick::None);
    }
}
