//! Structured values from fuzz input (`arbitrary::Unstructured`): mostly
//! words a front end knows, sometimes anything, so that mutations of the
//! input reach both the deep paths and the refusals.

use arbitrary::Unstructured;

/// A word of `vocabulary` (three times in four), or an arbitrary string of
/// at most `max_len` bytes.
pub fn text(u: &mut Unstructured<'_>, vocabulary: &[&str], max_len: usize) -> String {
    if !vocabulary.is_empty() && u.ratio(3, 4).unwrap_or(true) {
        return u
            .choose(vocabulary)
            .copied()
            .unwrap_or_default()
            .to_string();
    }
    let mut s: String = u.arbitrary().unwrap_or_default();
    if s.len() > max_len {
        let mut end = max_len;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Up to `max` values made by `item`.
pub fn list<T>(
    u: &mut Unstructured<'_>,
    max: usize,
    mut item: impl FnMut(&mut Unstructured<'_>) -> T,
) -> Vec<T> {
    let n = u.int_in_range(0..=max).unwrap_or(0);
    (0..n).map(|_| item(u)).collect()
}

/// Up to `max` words of `vocabulary` (or arbitrary strings).
pub fn words(u: &mut Unstructured<'_>, vocabulary: &[&str], max: usize) -> Vec<String> {
    list(u, max, |u| text(u, vocabulary, 64))
}
