//! Aligned text tables for the commands that print them: text columns to
//! the left, figures to the right.

/// Formats `rows` (the first is the header) with the first `text_columns`
/// columns left-aligned and the rest right-aligned, two spaces apart.
pub fn text_table(rows: &[Vec<String>], text_columns: usize) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i < text_columns {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_text_left_and_figures_right() {
        let rows = vec![
            vec!["device".into(), "bytes".into()],
            vec!["cpu".into(), "1.00 GiB".into()],
        ];
        assert_eq!(text_table(&rows, 1), "device     bytes\ncpu     1.00 GiB\n");
    }
}
