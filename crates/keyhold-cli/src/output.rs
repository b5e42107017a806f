//! Output for people (aligned tables) and for scripts (`--json`).

use crate::cmdio::outln;

/// Prints rows as an aligned table with a header line.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        outln!("{}", s.trim_end());
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// Prints a JSON value, pretty.
pub(crate) fn json(v: &serde_json::Value) {
    outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Formats Unix seconds as an RFC 3339 UTC time.
pub(crate) fn time(t: i64) -> String {
    keyhold_core::time::format_rfc3339(t)
}

/// Formats seconds as a short duration: `42s`, `3m 12s`, `5h 07m`, `2d 04h`.
pub(crate) fn duration(s: i64) -> String {
    let s = s.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        let d = super::duration;
        assert_eq!(
            [d(-1), d(42), d(192), d(18_420), d(187_200)],
            ["0s", "42s", "3m 12s", "5h 07m", "2d 04h"]
        );
    }
}
