//! The results table: one row per figure, the baselines beside the service, the ratio
//! taken in the same run, the target and whether it was met.

use serde::Serialize;

/// Whether a smaller or a larger figure is better, to judge a target.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub enum Goal {
    /// The figure must be at least the target (a throughput ratio).
    AtLeast(f64),
    /// The figure must be at most the target (a latency, a count).
    AtMost(f64),
}

impl Goal {
    fn met(self, value: f64) -> bool {
        match self {
            Goal::AtLeast(t) => value >= t,
            Goal::AtMost(t) => value <= t,
        }
    }

    fn text(self, unit: &str) -> String {
        match self {
            Goal::AtLeast(t) => format!("≥ {}{unit}", trim(t)),
            Goal::AtMost(t) => format!("≤ {}{unit}", trim(t)),
        }
    }
}

/// One row.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Row {
    pub what: String,
    pub bare_axum: Option<String>,
    pub bare_graphql: Option<String>,
    pub service: String,
    /// The figure judged against the target: a ratio, or the service's own figure.
    pub judged: Option<f64>,
    /// How `judged` is shown, e.g. `0.91×` or `1.4 ms`.
    pub judged_text: Option<String>,
    /// The target and the unit it is in (`×`, ` ms`).
    pub target: Option<(Goal, String)>,
}

impl Row {
    /// A row with only the service's figure (no baseline, no target).
    pub fn info(what: impl Into<String>, service: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            service: service.into(),
            ..Self::default()
        }
    }

    /// Whether the target was met; `None` without a target or figure.
    pub fn met(&self) -> Option<bool> {
        match (self.judged, &self.target) {
            (Some(v), Some((goal, _))) if v.is_finite() => Some(goal.met(v)),
            (Some(_), Some(_)) => Some(false),
            _ => None,
        }
    }
}

/// The Markdown table of `rows`.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| what | bare axum | bare async-graphql | service | ratio / figure | target | met? |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let cell = |s: Option<&str>| s.map_or_else(|| "".to_owned(), escape);
    for row in rows {
        let target = row.target.as_ref().map(|(g, unit)| g.text(unit));
        let met = match row.met() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            escape(&row.what),
            cell(row.bare_axum.as_deref()),
            cell(row.bare_graphql.as_deref()),
            escape(&row.service),
            cell(row.judged_text.as_deref()),
            cell(target.as_deref()),
            met
        ));
    }
    out
}

/// A ratio as shown: two decimals and `×`.
pub fn ratio_text(ratio: f64) -> String {
    if ratio.is_finite() {
        format!("{ratio:.2}×")
    } else {
        "n/a".to_owned()
    }
}

/// Requests per second as shown: `83.1k req/s`, `950 req/s`.
pub fn rps_text(rps: f64) -> String {
    if rps >= 10_000.0 {
        format!("{:.1}k req/s", rps / 1000.0)
    } else {
        format!("{rps:.0} req/s")
    }
}

fn escape(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_figures_ratios_and_targets() {
        let rows = vec![
            Row {
                what: "`{ __typename }`".into(),
                bare_axum: Some(rps_text(145_000.0)),
                bare_graphql: Some(rps_text(83_000.0)),
                service: rps_text(70_000.0),
                judged: Some(70.0 / 83.0),
                judged_text: Some(ratio_text(70.0 / 83.0)),
                target: Some((Goal::AtLeast(0.9), "×".into())),
            },
            Row {
                what: "added p99 | SessionM".into(),
                service: "1.4 ms".into(),
                judged: Some(1.4),
                judged_text: Some("1.4 ms".into()),
                target: Some((Goal::AtMost(2.0), " ms".into())),
                ..Row::default()
            },
            Row::info("RSS at rest", "31.2 MiB"),
        ];
        let table = markdown(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert_eq!(
            lines[2],
            "| `{ __typename }` | 145.0k req/s | 83.0k req/s | 70.0k req/s | 0.84× | ≥ 0.9× | **no** |"
        );
        assert_eq!(
            lines[3],
            "| added p99 \\| SessionM |  |  | 1.4 ms | 1.4 ms | ≤ 2 ms | yes |"
        );
        assert_eq!(lines[4], "| RSS at rest |  |  | 31.2 MiB |  |  |  |");
        // Every line has the same number of cells.
        for line in &lines {
            assert_eq!(line.matches(" | ").count(), 6, "{line}");
        }
    }

    #[test]
    fn a_missing_figure_does_not_meet_its_target() {
        let row = Row {
            judged: Some(f64::NAN),
            target: Some((Goal::AtLeast(0.8), "×".into())),
            ..Row::default()
        };
        assert_eq!(row.met(), Some(false));
        assert_eq!(ratio_text(f64::NAN), "n/a");
        assert_eq!(rps_text(950.4), "950 req/s");
    }
}
