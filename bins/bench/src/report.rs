//! What a scenario prints: a two-column table for people, then one JSON line for scripts.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value, json};

#[derive(Debug)]
pub struct Report {
    title: String,
    fields: Map<String, Value>,
    rows: Vec<(String, String)>,
}

impl Report {
    pub fn new(scenario: &str, backend: &str, title: impl Into<String>) -> Self {
        let mut fields = Map::new();
        fields.insert("scenario".into(), json!(scenario));
        fields.insert("backend".into(), json!(backend));
        Self {
            title: title.into(),
            fields,
            rows: Vec::new(),
        }
    }

    /// A figure, shown as `shown` in the table and as `value` in the JSON line.
    pub fn add(&mut self, key: &str, value: Value, shown: String) -> &mut Self {
        self.fields.insert(key.into(), value);
        self.rows.push((key.into(), shown));
        self
    }

    /// A setting: in the JSON line and the title, not a row.
    pub fn param(&mut self, key: &str, value: Value) -> &mut Self {
        self.fields.insert(key.into(), value);
        self
    }

    pub fn rate(&mut self, key: &str, count: usize, took: Duration) -> &mut Self {
        let per_s = count as f64 / took.as_secs_f64();
        self.add(
            key,
            json!(per_s.round()),
            format!("{per_s:.0}/s ({count} in {:.2} s)", took.as_secs_f64()),
        )
    }

    pub fn ms(&mut self, key: &str, d: Duration) -> &mut Self {
        let ms = d.as_secs_f64() * 1000.0;
        self.add(
            key,
            json!((ms * 1000.0).round() / 1000.0),
            format!("{ms:.2} ms"),
        )
    }

    /// A duration of seconds, kept to the millisecond in the JSON line.
    pub fn secs(&mut self, key: &str, d: Duration) -> &mut Self {
        let s = d.as_secs_f64();
        self.add(
            key,
            json!((s * 1000.0).round() / 1000.0),
            format!("{s:.3} s"),
        )
    }

    /// p50, p99 and max of `samples` as `<prefix>_p50_ms` and so on.
    pub fn latencies(&mut self, prefix: &str, samples: &mut [Duration]) -> &mut Self {
        samples.sort_unstable();
        self.ms(&format!("{prefix}_p50_ms"), percentile(samples, 0.50))
            .ms(&format!("{prefix}_p99_ms"), percentile(samples, 0.99))
            .ms(&format!("{prefix}_max_ms"), percentile(samples, 1.0))
    }

    pub fn print(&self) {
        let params: Vec<String> = self
            .fields
            .iter()
            .filter(|(k, _)| !self.rows.iter().any(|(r, _)| r == *k))
            .filter(|(k, _)| *k != "scenario")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("\n{} ({})", self.title, params.join(", "));
        let width = self.rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (key, shown) in &self.rows {
            println!("  {key:<width$}  {shown}");
        }
        println!("{}", Value::Object(self.fields.clone()));
    }
}

/// The nearest-rank percentile of sorted samples (`p` in 0..=1).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() as f64 * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// A spinner with the elapsed time, for waits whose progress is not counted.
pub fn spinner(what: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} {spinner} {elapsed}").expect("valid template"),
    );
    bar.set_message(what.to_owned());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 0.50), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&samples, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&samples[..1], 0.99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
