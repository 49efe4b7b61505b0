//! What goes to stdout: the api's JSON as sent (`--json`), or tables for people. Each
//! command says how a reply looks as a table; the helpers here are shared.

use std::io::Write;

use comfy_table::{Table, presets};
use serde_json::Value;

use crate::api::Reply;

/// Writes one line to stdout. A closed pipe (`jobs list | head`) is not an error.
pub fn emit(line: impl std::fmt::Display) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// The reply as sent with `--json`, else as `human` shows it.
pub fn show(json: bool, reply: &Reply, human: impl FnOnce(&Value)) {
    match json {
        true => emit(reply.text.trim_end()),
        false => human(&reply.value),
    }
}

/// A table with a header row, columns padded, no borders (like `docker ps`).
pub fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_header(header.to_vec());
    for row in rows {
        table.add_row(row);
    }
    render(&table)
}

/// Label and value, one pair a line.
pub fn fields(pairs: Vec<(&str, String)>) -> String {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    for (label, value) in pairs {
        table.add_row(vec![label.to_owned(), value]);
    }
    render(&table)
}

/// The table without the padding at either end of its lines.
fn render(table: &Table) -> String {
    table
        .lines()
        .map(|line| {
            line.strip_prefix(' ')
                .unwrap_or(&line)
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A value as a cell: strings bare, `null` as `-`, anything else as compact JSON.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `progress` (0.0..=1.0) as a whole percentage.
pub fn percent(progress: &Value) -> u64 {
    (progress.as_f64().unwrap_or(0.0).clamp(0.0, 1.0) * 100.0).round() as u64
}

/// Milliseconds for people: `850ms`, `12.3s`, `4m 05s`, `2h 03m`, `3d 04h`.
pub fn duration(ms: &Value) -> String {
    let Some(ms) = ms.as_u64() else {
        return text(ms);
    };
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{:.1}s", ms as f64 / 1000.0),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// The `next_cursor` of a page, as the flag that fetches the next one.
pub fn next_page(page: &Value) {
    if let Some(cursor) = page["next_cursor"].as_str() {
        emit(format!("next page: --cursor {cursor}"));
    }
}

/// Counts by state, those above zero: `completed 2, pending 1`.
pub fn counts(counts: &Value) -> String {
    let nonzero: Vec<String> = counts
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
        .map(|(state, n)| format!("{state} {n}"))
        .collect();
    match nonzero.is_empty() {
        true => "-".to_owned(),
        false => nonzero.join(", "),
    }
}
