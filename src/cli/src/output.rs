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

/// `inspect` of objects at `base/NAME` (networks, volumes): a JSON array, or a template
/// per object; the first missing one ends it with the daemon's message (exit 1).
pub(crate) async fn inspect_each(
    c: &crate::client::Conn,
    base: &str,
    names: &[String],
    format: Option<String>,
) -> Result<u8, crate::client::Fail> {
    use crate::client::Fail;
    use crate::format::Format;
    let mut out = Vec::new();
    let mut missing = None;
    for n in names {
        match c
            .call::<serde_json::Value>("GET", &format!("{base}/{}", crate::client::enc(n)), None)
            .await
        {
            Ok(v) => out.push(v),
            Err(Fail(m, _)) => {
                missing = Some(m);
                break;
            }
        }
    }
    let f = Format::parse(format.as_deref())?;
    match f {
        Format::Default => println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default()),
        Format::Json => println!("{}", serde_json::to_string(&out).unwrap_or_default()),
        _ => f.print(&out, &[], false)?,
    }
    match missing {
        Some(m) => Err(Fail(m, 1)),
        None => Ok(0),
    }
}

/// `rm` of objects at `base/NAME` (with `query`): each name printed once removed, each
/// failure printed; 1 if any failed.
pub(crate) async fn remove_each(
    c: &crate::client::Conn,
    base: &str,
    names: &[String],
    query: &str,
) -> u8 {
    let mut status = 0;
    for n in names {
        let path = format!("{base}/{}{query}", crate::client::enc(n));
        match c
            .call::<crate::client::Ignored>("DELETE", &path, None)
            .await
        {
            Ok(_) => println!("{n}"),
            Err(crate::client::Fail(m, _)) => {
                eprintln!("{m}");
                status = 1;
            }
        }
    }
    status
}
