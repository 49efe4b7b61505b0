//! What a database can store, checked before a value reaches SQL: PostgreSQL refuses a NUL
//! character in `text` and in JSON strings, and instants outside years 1..=9999 (UTC) do
//! not fit the fixed-width text that SQLite stores. Free text has documented caps and is
//! truncated with a marker; JSON that cannot be stored is refused, never altered.

use serde_json::Value;
use time::{OffsetDateTime, macros::datetime};

use crate::FieldError;

/// The earliest instant accepted anywhere (UTC).
pub const TIME_MIN: OffsetDateTime = datetime!(0001-01-01 00:00:00 UTC);
/// The latest instant accepted anywhere (UTC).
pub const TIME_MAX: OffsetDateTime = datetime!(9999-12-31 23:59:59.999 UTC);

/// Caps on free text, in bytes; longer text is cut at a character boundary and ends with
/// `TRUNCATED_MARKER`.
pub mod caps {
    pub const ERROR_KIND: usize = 128;
    pub const ERROR_MESSAGE: usize = 8 * 1024;
    pub const STAGE: usize = 1024;
}

pub const TRUNCATED_MARKER: &str = "…[truncated]";

/// Whether `value` contains a NUL character in any string or object key.
pub fn json_has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(json_has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v)),
        _ => false,
    }
}

/// Refuses JSON that holds a NUL character.
pub fn check_json(errors: &mut Vec<FieldError>, field: &str, value: &Value) {
    if json_has_nul(value) {
        errors.push(FieldError::new(
            field,
            "must not contain NUL characters (\\u0000)",
        ));
    }
}

/// Refuses text that holds a NUL character.
pub fn check_text(errors: &mut Vec<FieldError>, field: &str, value: &str) {
    if value.contains('\0') {
        errors.push(FieldError::new(
            field,
            "must not contain NUL characters (\\u0000)",
        ));
    }
}

/// Refuses an instant outside `TIME_MIN..=TIME_MAX` once converted to UTC.
pub fn check_time(errors: &mut Vec<FieldError>, field: &str, value: Option<OffsetDateTime>) {
    if let Some(at) = value {
        if !time_in_range(at) {
            errors.push(FieldError::new(
                field,
                "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z",
            ));
        }
    }
}

pub fn time_in_range(at: OffsetDateTime) -> bool {
    // Compared as instants: converting to UTC first could overflow the year range itself.
    (TIME_MIN..=TIME_MAX).contains(&at)
}

/// Free text made storable: NUL characters become U+FFFD and text over `cap` bytes is cut
/// at a character boundary, ending with `TRUNCATED_MARKER`.
pub fn storable_text(text: &str, cap: usize) -> String {
    let clean = if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text.to_owned()
    };
    if clean.len() <= cap {
        return clean;
    }
    let mut end = cap.saturating_sub(TRUNCATED_MARKER.len());
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{TRUNCATED_MARKER}", &clean[..end])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nul_is_found_anywhere_in_json() {
        assert!(!json_has_nul(&json!({"a": ["b", 1, null]})));
        assert!(json_has_nul(&json!({"a": ["b\u{0}"]})));
        assert!(json_has_nul(&json!({"k\u{0}": 1})));
    }

    #[test]
    fn text_is_cut_at_a_char_boundary_with_a_marker() {
        assert_eq!(storable_text("short", 10), "short");
        assert_eq!(storable_text("a\0b", 10), "a\u{FFFD}b");
        let long = "é".repeat(100);
        let cut = storable_text(&long, 50);
        assert!(cut.len() <= 50 && cut.ends_with(TRUNCATED_MARKER), "{cut}");
    }

    #[test]
    fn times_are_checked_in_utc() {
        let far = time::OffsetDateTime::parse(
            "9999-12-31T23:59:59-23:59",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let mut errors = Vec::new();
        check_time(&mut errors, "run_at", Some(far));
        check_time(&mut errors, "ok", Some(TIME_MAX));
        check_time(&mut errors, "ok", Some(TIME_MIN));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "run_at");
    }
}
