//! A generation's text as tokens arrive: UTF-8 assembled across tokens, stop
//! strings cut, and the streaming window, which releases only text that no
//! stop string can still cut.

/// The text of one generation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextStream {
    stop: Vec<String>,
    /// The longest stop string, in bytes.
    max_stop: usize,
    text: String,
    /// Bytes of a UTF-8 character split across tokens, not yet in `text`.
    pending: Vec<u8>,
    /// Bytes of `text` already released.
    streamed: usize,
    stopped: bool,
}

impl TextStream {
    /// A stream that ends at the first of `stop` (empty strings never match).
    pub fn new(stop: Vec<String>) -> TextStream {
        let max_stop = stop.iter().map(String::len).max().unwrap_or(0);
        TextStream {
            stop,
            max_stop,
            ..TextStream::default()
        }
    }

    /// Append a token's bytes. Returns true when a stop string appeared: the
    /// text is then cut where it starts, and nothing may be pushed after.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        debug_assert!(!self.stopped, "push after a stop string");
        self.pending.extend_from_slice(bytes);
        append_utf8(&mut self.text, &mut self.pending);
        // a stop string may start in text already streamed only if it was
        // held back, i.e. within max_stop bytes of the streamed end
        let mut from = self.streamed.saturating_sub(self.max_stop);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let cut = self
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i))
            .min();
        if let Some(cut) = cut {
            self.text.truncate(cut);
            self.stopped = true;
        }
        self.stopped
    }

    /// Text that became final since the last call: all of it once the
    /// generation is `finished`, else everything but the last
    /// `max_stop − 1` bytes (a stop string could still start there), on a
    /// character boundary. Never moves back.
    pub fn release(&mut self, finished: bool) -> &str {
        let safe = if finished {
            self.text.len()
        } else {
            let mut end = self
                .text
                .len()
                .saturating_sub(self.max_stop.saturating_sub(1));
            while end > 0 && !self.text.is_char_boundary(end) {
                end -= 1;
            }
            end
        };
        let from = self.streamed;
        self.streamed = safe.max(from);
        &self.text[from..self.streamed]
    }

    /// The text so far (stop string cut; a split character not yet in it).
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn into_text(self) -> String {
        self.text
    }
}

/// Move the complete UTF-8 prefix of `pending` into `text`, keeping an
/// incomplete trailing character for the next token; invalid bytes become
/// U+FFFD.
fn append_utf8(text: &mut String, pending: &mut Vec<u8>) {
    loop {
        match std::str::from_utf8(pending) {
            Ok(s) => {
                text.push_str(s);
                pending.clear();
                return;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                text.push_str(&String::from_utf8_lossy(&pending[..valid]));
                match e.error_len() {
                    // an incomplete character at the end: wait for more bytes
                    None => {
                        pending.drain(..valid);
                        return;
                    }
                    Some(bad) => {
                        text.push(char::REPLACEMENT_CHARACTER);
                        pending.drain(..valid + bad);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Push `tokens` one by one, collecting what is released after each.
    fn run(stop: &[&str], tokens: &[&[u8]]) -> (Vec<String>, String, bool) {
        let mut s = TextStream::new(stop.iter().map(|s| s.to_string()).collect());
        let mut out = Vec::new();
        let mut stopped = false;
        for (i, t) in tokens.iter().enumerate() {
            stopped = s.push(t);
            let last = stopped || i + 1 == tokens.len();
            out.push(s.release(last).to_string());
            if stopped {
                break;
            }
        }
        (out, s.into_text(), stopped)
    }

    #[test]
    fn characters_split_across_tokens_are_joined() {
        let (mut text, mut pending) = (String::new(), Vec::new());
        for b in "a日é".as_bytes() {
            pending.push(*b);
            append_utf8(&mut text, &mut pending);
        }
        assert_eq!(text, "a日é");
        assert!(pending.is_empty());
        pending.extend([0xff, b'x', 0xe6]);
        append_utf8(&mut text, &mut pending);
        assert_eq!(text, "a日é\u{fffd}x");
        assert_eq!(pending, vec![0xe6]);
    }

    #[test]
    fn without_stop_strings_everything_streams_at_once() {
        let (out, text, stopped) = run(&[], &[b"Hel", b"lo", b" w"]);
        assert_eq!(out, vec!["Hel", "lo", " w"]);
        assert_eq!(text, "Hello w");
        assert!(!stopped);
    }

    #[test]
    fn text_a_stop_string_could_cut_is_held_back() {
        // "END" is 3 bytes: the last 2 bytes wait until they cannot start it
        let (out, text, stopped) = run(&["END"], &[b"abcd", b"eE", b"N", b"x", b"y"]);
        assert_eq!(out, vec!["ab", "cd", "e", "E", "Nxy"]);
        assert_eq!(text, "abcdeENxy");
        assert!(!stopped);
        // the concatenation of releases is the final text
        assert_eq!(out.concat(), text);
    }

    #[test]
    fn a_stop_string_across_tokens_is_cut_and_never_streamed() {
        let (out, text, stopped) = run(&["\n\n", "END"], &[b"one", b" E", b"N", b"D more"]);
        assert!(stopped);
        assert_eq!(text, "one ");
        assert_eq!(out.concat(), "one ");
        assert!(out.iter().all(|o| !o.contains('E')), "{out:?}");
        // the earliest of several stop strings wins
        let (_, text, _) = run(&["b", "a"], &[b"xxab"]);
        assert_eq!(text, "xx");
    }

    #[test]
    fn the_window_respects_character_boundaries() {
        // a 4-byte stop string holds back 3 bytes: "日a" is 4 bytes, so the
        // window would end inside "日" and steps back to the boundary before it
        let (out, text, _) = run(&["STOP"], &["日a".as_bytes(), b"b", b"cdef"]);
        assert_eq!(out.concat(), text);
        for o in &out {
            assert!(std::str::from_utf8(o.as_bytes()).is_ok());
        }
        assert_eq!(out[0], "");
        // a character split across tokens appears only when complete
        let bytes = "é".as_bytes();
        let (out, text, _) = run(&[], &[&bytes[..1], &bytes[1..]]);
        assert_eq!(out, vec!["", "é"]);
        assert_eq!(text, "é");
    }

    #[test]
    fn empty_stop_strings_never_match() {
        let (_, text, stopped) = run(&[""], &[b"abc"]);
        assert_eq!((text.as_str(), stopped), ("abc", false));
    }
}
