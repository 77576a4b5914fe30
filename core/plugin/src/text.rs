//! Text a plugin hands the node (errors, winner ids, URLs, progress and log
//! messages) made safe to show a person: one line, no control or
//! bidirectional-formatting characters that could forge or reorder what an
//! operator reads in a terminal or log, and bounded in size.

/// Longest error text a plugin may have shown, in bytes.
pub const MAX_ERROR_TEXT: usize = 4096;
/// Longest identifier or URL a plugin may have shown, in bytes.
pub const MAX_SHORT_TEXT: usize = 256;

/// `text` escaped and cut to at most about `max` bytes, saying how much was
/// cut.
pub fn plugin_text(text: &str, max: usize) -> String {
    let mut line = String::with_capacity(text.len().min(max) + 32);
    for (at, c) in text.char_indices() {
        if line.len() >= max {
            line.push_str(&format!(" [{} more bytes cut]", text.len() - at));
            break;
        }
        if c.is_control() || is_invisible_format(c) {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    line
}

/// Characters that change how surrounding text is displayed without
/// showing themselves: bidirectional controls (which can make a line read
/// backwards), zero-width characters and the byte-order mark.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_bidi_and_cuts() {
        let shown = plugin_text("ok\nFAKE\u{1b}[32m\rline\u{202e}txt\u{200b}", 100);
        assert_eq!(shown, "ok\\nFAKE\\u{1b}[32m\\rline\\u{202e}txt\\u{200b}");
        assert!(
            !shown
                .chars()
                .any(|c| c.is_control() || is_invisible_format(c))
        );
        let long = "é".repeat(10_000);
        let cut = plugin_text(&long, 100);
        assert!(cut.len() < 140, "{}", cut.len());
        assert!(cut.ends_with("more bytes cut]"), "{cut}");
        assert_eq!(plugin_text("plain", 100), "plain");
    }
}
