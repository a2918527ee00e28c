//! Progress bars for long work, one constructor for every caller.
//!
//! On a terminal this is an ordinary indicatif bar on stderr. When stderr is *not* a terminal
//! (`nohup just ablate-keysteps > log 2>&1 &`, CI logs), indicatif alone would print nothing for
//! the whole run; here the same bar is written as a plain line at most every
//! [`LOG_INTERVAL`], so a log file shows where a long run stands.

use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, TermLike};

/// How often a progress line is written when stderr is not a terminal.
pub const LOG_INTERVAL: Duration = Duration::from_secs(30);

/// A progress bar of `len` steps: drawn on a terminal, logged as lines every [`LOG_INTERVAL`]
/// otherwise, hidden when `enabled` is false.
pub fn bar(len: u64, enabled: bool) -> ProgressBar {
    let target = if !enabled {
        ProgressDrawTarget::hidden()
    } else if io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::term_like_with_hz(Box::new(LineLog::new(LOG_INTERVAL, io::stderr)), 1)
    };
    ProgressBar::with_draw_target(Some(len), target)
}

/// A [`TermLike`] that turns redraws into plain lines: cursor movement is ignored, the text of
/// one redraw is collected and written as one line on `flush`, at most once per `interval`.
pub struct LineLog<W: Write> {
    interval: Duration,
    sink: fn() -> W,
    state: Mutex<LineState>,
}

#[derive(Default)]
struct LineState {
    text: String,
    last: Option<Instant>,
}

impl<W: Write> LineLog<W> {
    pub fn new(interval: Duration, sink: fn() -> W) -> Self {
        LineLog { interval, sink, state: Mutex::new(LineState::default()) }
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut LineState) -> T) -> T {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s)
    }
}

impl<W: Write> std::fmt::Debug for LineLog<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineLog").field("interval", &self.interval).finish()
    }
}

impl<W: Write + 'static> TermLike for LineLog<W> {
    fn width(&self) -> u16 {
        120
    }
    fn move_cursor_up(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> io::Result<()> {
        self.write_str(s)
    }
    fn write_str(&self, s: &str) -> io::Result<()> {
        self.with_state(|st| {
            let s = s.trim_matches(|c: char| c == '\r' || c == '\n');
            if !s.trim().is_empty() {
                if !st.text.is_empty() {
                    st.text.push_str(" | ");
                }
                st.text.push_str(s.trim_end());
            }
        });
        Ok(())
    }
    fn clear_line(&self) -> io::Result<()> {
        self.with_state(|st| st.text.clear());
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        let line = self.with_state(|st| {
            let due = st.last.is_none_or(|t| t.elapsed() >= self.interval);
            let text = std::mem::take(&mut st.text);
            if due && !text.is_empty() {
                st.last = Some(Instant::now());
                Some(text)
            } else {
                None
            }
        });
        match line {
            Some(l) => {
                let mut w = (self.sink)();
                writeln!(w, "{l}")?;
                w.flush()
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, OnceLock};

    static OUT: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

    struct Shared;
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            OUT.get_or_init(Default::default).lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn redraws_become_throttled_lines() {
        let log = LineLog::new(Duration::from_secs(3600), || Shared);
        for pos in [1, 2, 3] {
            log.clear_line().unwrap();
            log.write_str(&format!("\rsampling {pos}/10")).unwrap();
            log.flush().unwrap();
        }
        // Only the first redraw is due within the interval; cursor moves write nothing.
        log.move_cursor_up(3).unwrap();
        let out = String::from_utf8(OUT.get_or_init(Default::default).lock().unwrap().clone()).unwrap();
        assert_eq!(out, "sampling 1/10\n");
        let log = LineLog::new(Duration::ZERO, || Shared);
        log.write_str("a").unwrap();
        log.write_line("b").unwrap();
        log.flush().unwrap();
        log.flush().unwrap(); // nothing new: no empty line
        let out = String::from_utf8(OUT.get().unwrap().lock().unwrap().clone()).unwrap();
        assert_eq!(out, "sampling 1/10\na | b\n");
    }
}
