//! Charts drawn on the server as SVG: bars of checks per bucket, valid
//! stacked under refused, each bar with a `<title>` that states its
//! values (screen readers and a mouse hover read it), and the same values
//! in a table beside the big charts. No script is needed to see them, and
//! the Content-Security-Policy stays strict: the SVG is markup of the page,
//! coloured by the stylesheet's classes. The templates
//! (`_chart.html`, `_spark.html`) draw what this computes.

use std::collections::BTreeMap;

use latchkey_store::UsageRow;

use crate::views::rfc3339;

/// Checks counted in one bucket.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BucketCounts {
    pub valid: i64,
    /// Refusals by code.
    pub refused: BTreeMap<String, i64>,
}

impl BucketCounts {
    pub fn add(&mut self, outcome: &str, n: i64) {
        if outcome == crate::usage::VALID {
            self.valid += n;
        } else {
            *self.refused.entry(outcome.to_string()).or_default() += n;
        }
    }

    pub fn refused_total(&self) -> i64 {
        self.refused.values().sum()
    }

    pub fn total(&self) -> i64 {
        self.valid + self.refused_total()
    }
}

/// Counts per bucket start, for `buckets` buckets of `size` seconds
/// ending with the one that holds `now`.
#[derive(Debug, Clone)]
pub struct Series {
    /// The first bucket's start.
    pub since: i64,
    pub size: i64,
    pub buckets: Vec<BucketCounts>,
}

impl Series {
    pub fn new(now: i64, size: i64, buckets: usize) -> Self {
        let current = now - now.rem_euclid(size);
        let since = current - size * (buckets as i64 - 1);
        Series {
            since,
            size,
            buckets: vec![BucketCounts::default(); buckets],
        }
    }

    /// The end of the last bucket.
    #[cfg(test)]
    pub fn until(&self) -> i64 {
        self.since + self.size * self.buckets.len() as i64
    }

    /// Adds a count that started at `start` (ignored outside the series).
    pub fn add(&mut self, start: i64, outcome: &str, n: i64) {
        if start < self.since {
            return;
        }
        let i = usize::try_from((start - self.since) / self.size).unwrap_or(usize::MAX);
        if let Some(b) = self.buckets.get_mut(i) {
            b.add(outcome, n);
        }
    }

    /// Adds rows the store returned (any app).
    pub fn add_rows(&mut self, rows: &[UsageRow]) {
        for r in rows {
            self.add(r.start, &r.outcome, r.count);
        }
    }

    pub fn totals(&self) -> BucketCounts {
        let mut t = BucketCounts::default();
        for b in &self.buckets {
            t.valid += b.valid;
            for (code, n) in &b.refused {
                *t.refused.entry(code.clone()).or_default() += n;
            }
        }
        t
    }
}

/// One bar: its place and the heights of its two parts, in the chart's
/// own units (the SVG's `viewBox`).
#[derive(Debug, Clone)]
pub struct Bar {
    pub x: String,
    pub width: String,
    pub valid_y: String,
    pub valid_h: String,
    pub refused_y: String,
    pub refused_h: String,
    /// What the bar says: `2026-12-06 10:00 UTC: 40 valid, 2 refused
    /// (unauthorized 2)`.
    pub title: String,
}

/// A label under the x axis.
#[derive(Debug, Clone)]
pub struct Tick {
    pub x: String,
    pub text: String,
}

/// A row of the table that goes with a chart.
#[derive(Debug, Clone)]
pub struct TableRow {
    /// RFC 3339, as the API says it.
    pub start: String,
    pub label: String,
    pub valid: i64,
    pub refused: i64,
    pub codes: String,
}

/// A chart ready to draw.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Unique within the page (for `aria-labelledby`).
    pub id: String,
    /// What the chart shows, with its totals.
    pub label: String,
    pub width: u32,
    pub height: u32,
    pub bars: Vec<Bar>,
    pub ticks: Vec<Tick>,
    /// The tallest bar's value (the axis' top).
    pub max: i64,
    pub rows: Vec<TableRow>,
    pub total_valid: i64,
    pub total_refused: i64,
}

/// How a bucket's start is written in titles and ticks.
fn label_of(start: i64, size: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(start).ok();
    let f = if size >= latchkey_store::DAY {
        time::macros::format_description!("[year]-[month]-[day]")
    } else {
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC")
    };
    t.and_then(|t| t.format(&f).ok()).unwrap_or_default()
}

fn short_label_of(start: i64, size: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(start).ok();
    let f = if size >= latchkey_store::DAY {
        time::macros::format_description!("[month]-[day]")
    } else {
        time::macros::format_description!("[hour]:[minute]")
    };
    t.and_then(|t| t.format(&f).ok()).unwrap_or_default()
}

fn codes_of(b: &BucketCounts) -> String {
    b.refused
        .iter()
        .map(|(code, n)| format!("{code} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn title_of(label: &str, b: &BucketCounts) -> String {
    let refused = b.refused_total();
    if refused == 0 {
        format!("{label}: {} valid, 0 refused", b.valid)
    } else {
        format!(
            "{label}: {} valid, {refused} refused ({})",
            b.valid,
            codes_of(b)
        )
    }
}

fn num(v: f64) -> String {
    format!("{v:.2}")
}

impl Chart {
    /// A chart of `series` in a box of `width` by `height`, with a tick
    /// every `tick_every` buckets (none when 0).
    pub fn draw(
        id: &str,
        what: &str,
        series: &Series,
        width: u32,
        height: u32,
        tick_every: usize,
    ) -> Self {
        let n = series.buckets.len().max(1);
        let max = series
            .buckets
            .iter()
            .map(BucketCounts::total)
            .max()
            .unwrap_or(0);
        // Room under the bars for the ticks.
        let axis = if tick_every > 0 { 14.0 } else { 0.0 };
        let plot = f64::from(height) - axis;
        let slot = f64::from(width) / n as f64;
        let gap = if slot > 4.0 { 1.0 } else { 0.0 };
        let scale = if max > 0 { plot / max as f64 } else { 0.0 };
        let mut bars = Vec::with_capacity(n);
        let mut ticks = Vec::new();
        let mut rows = Vec::with_capacity(n);
        for (i, b) in series.buckets.iter().enumerate() {
            let start = series.since + series.size * i as i64;
            let label = label_of(start, series.size);
            let x = slot * i as f64;
            let valid_h = b.valid as f64 * scale;
            let refused_h = b.refused_total() as f64 * scale;
            bars.push(Bar {
                x: num(x + gap / 2.0),
                width: num((slot - gap).max(0.5)),
                valid_y: num(plot - valid_h),
                valid_h: num(valid_h),
                refused_y: num(plot - valid_h - refused_h),
                refused_h: num(refused_h),
                title: title_of(&label, b),
            });
            if tick_every > 0 && i % tick_every == 0 {
                ticks.push(Tick {
                    x: num(x),
                    text: short_label_of(start, series.size),
                });
            }
            rows.push(TableRow {
                start: rfc3339(start),
                label,
                valid: b.valid,
                refused: b.refused_total(),
                codes: codes_of(b),
            });
        }
        let totals = series.totals();
        Chart {
            id: id.to_string(),
            label: format!(
                "{what}: {} valid, {} refused in all; the tallest bar {max}",
                totals.valid,
                totals.refused_total()
            ),
            width,
            height,
            bars,
            ticks,
            max,
            rows,
            total_valid: totals.valid,
            total_refused: totals.refused_total(),
        }
    }

    /// A sparkline: no ticks, no table.
    pub fn spark(id: &str, what: &str, series: &Series) -> Self {
        let mut chart = Chart::draw(id, what, series, 96, 20, 0);
        chart.rows.clear();
        chart
    }

    /// The y of a tick's text.
    pub fn tick_y(&self) -> u32 {
        self.height.saturating_sub(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_store::HOUR;

    #[test]
    fn a_series_puts_counts_in_their_buckets_and_ignores_the_rest() {
        let now = 1_800_009_020; // 2027-01-15T10:30:20Z
        let mut s = Series::new(now, HOUR, 24);
        assert_eq!(s.until(), now - now % HOUR + HOUR);
        s.add(now - now % HOUR, "valid", 5);
        s.add(now - now % HOUR, "unauthorized", 2);
        s.add(s.since, "valid", 1);
        s.add(s.since - HOUR, "valid", 100);
        s.add(s.until(), "valid", 100);
        assert_eq!(s.buckets[23].valid, 5);
        assert_eq!(s.buckets[23].refused_total(), 2);
        assert_eq!(s.buckets[0].valid, 1);
        assert_eq!(s.totals().total(), 8);
    }

    #[test]
    fn bars_scale_to_the_tallest_and_say_their_values() {
        let now = 1_800_009_020;
        let mut s = Series::new(now, HOUR, 4);
        s.add(s.since + 3 * HOUR, "valid", 30);
        s.add(s.since + 3 * HOUR, "unauthorized", 10);
        s.add(s.since + HOUR, "valid", 20);
        let c = Chart::draw("c", "Checks per hour", &s, 400, 114, 2);
        assert_eq!(c.max, 40);
        assert_eq!(c.bars.len(), 4);
        // The tallest bar fills the plot (100 units above the ticks).
        assert_eq!(c.bars[3].valid_h, "75.00");
        assert_eq!(c.bars[3].refused_h, "25.00");
        assert_eq!(c.bars[3].refused_y, "0.00");
        assert_eq!(c.bars[1].valid_h, "50.00");
        assert_eq!(c.bars[0].valid_h, "0.00");
        assert_eq!(
            c.bars[3].title,
            "2027-01-15 10:00 UTC: 30 valid, 10 refused (unauthorized 10)"
        );
        assert_eq!(c.ticks.len(), 2);
        assert_eq!(c.rows[3].start, "2027-01-15T10:00:00Z");
        assert_eq!((c.total_valid, c.total_refused), (50, 10));
        let empty = Chart::draw("e", "Nothing", &Series::new(now, HOUR, 3), 90, 20, 0);
        assert!(empty.bars.iter().all(|b| b.valid_h == "0.00"));
    }
}
