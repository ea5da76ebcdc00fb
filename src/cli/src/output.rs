//! Plain-text output: the column-aligned tables of ps, images, top and stats.

/// Prints rows as left-aligned columns, three spaces apart.
pub(crate) fn table(rows: Vec<Vec<String>>) {
    let n = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map(|s| s.len()).unwrap_or(0))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i] + 3))
            .collect();
        println!("{}", line.concat().trim_end());
    }
}
