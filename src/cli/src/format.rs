//! `--format`, as the docker CLI takes it: a Go template (rendered with the `gtmpl` crate,
//! Go's template language for Rust), `table TEMPLATE` for aligned columns under a header,
//! `json` for one JSON document a line, `table` alone for the command's default table.
//! Docker's template functions `json`, `join`, `split`, `lower`, `upper`, `title` and
//! `truncate` are there too.

use crate::client::Fail;
use crate::output::table;
use gtmpl::{Context, FuncError, Template, Value};
use serde_json::Value as Json;
use std::collections::HashMap;

/// What `--format` asked for.
pub(crate) enum Format {
    /// The command's own table (no `--format`, or `table` alone).
    Default,
    /// `json`: each item as one line of JSON.
    Json,
    /// `table TEMPLATE`: the template's columns (tab-separated) aligned, under a header.
    Table(Template),
    /// `TEMPLATE`: the template, once an item.
    Raw(Template),
}

fn bad(e: impl std::fmt::Display) -> Fail {
    Fail(format!("template parsing error: {e}"), 125)
}

impl Format {
    /// Parses a `--format` value (`None`: the default table).
    pub(crate) fn parse(f: Option<&str>) -> Result<Format, Fail> {
        let Some(f) = f else {
            return Ok(Format::Default);
        };
        if f == "json" {
            return Ok(Format::Json);
        }
        if f == "table" {
            return Ok(Format::Default);
        }
        let (is_table, text) = match f.strip_prefix("table ") {
            Some(t) => (true, t),
            None => (false, f),
        };
        // Docker reads `\t` and `\n` typed on the command line as tab and newline.
        let text = text.replace("\\t", "\t").replace("\\n", "\n");
        let mut t = Template::default();
        t.add_funcs(&[
            ("json", json as gtmpl::Func),
            ("join", join as gtmpl::Func),
            ("split", split as gtmpl::Func),
            ("lower", lower as gtmpl::Func),
            ("upper", upper as gtmpl::Func),
            ("title", title as gtmpl::Func),
            ("truncate", truncate as gtmpl::Func),
        ]);
        t.parse(text).map_err(bad)?;
        Ok(if is_table {
            Format::Table(t)
        } else {
            Format::Raw(t)
        })
    }

    /// Whether the command prints its own table.
    pub(crate) fn is_default(&self) -> bool {
        matches!(self, Format::Default)
    }

    /// Prints the items (JSON objects) as asked; `headers` names the column of each field
    /// for a `table` header (a field it does not name gets an empty header, as Docker's).
    pub(crate) fn print(&self, items: &[Json], headers: &[(&str, &str)]) -> Result<(), Fail> {
        match self {
            Format::Default => Ok(()),
            Format::Json => {
                for i in items {
                    println!("{}", serde_json::to_string(i).unwrap_or_default());
                }
                Ok(())
            }
            Format::Raw(t) => {
                for i in items {
                    println!("{}", render(t, i)?);
                }
                Ok(())
            }
            Format::Table(t) => {
                let head: serde_json::Map<String, Json> = headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Json::String((*v).to_owned())))
                    .collect();
                let mut rows = vec![split_row(&render_lenient(t, &Json::Object(head)))];
                for i in items {
                    rows.push(split_row(&render(t, i)?));
                }
                table(rows);
                Ok(())
            }
        }
    }
}

fn split_row(s: &str) -> Vec<String> {
    s.split('\t').map(str::to_owned).collect()
}

/// Renders one item; a field the item lacks is an error naming it, as Go's templates say.
pub(crate) fn render(t: &Template, item: &Json) -> Result<String, Fail> {
    t.render(&Context::from(to_value(item)))
        .map_err(|e| Fail(format!("template: {e}"), 125))
}

/// The header row: rendered against the header names; a template the names can't satisfy
/// (a function of a field, say) gets an empty header.
fn render_lenient(t: &Template, head: &Json) -> String {
    t.render(&Context::from(to_value(head))).unwrap_or_default()
}

/// JSON as a template value.
pub(crate) fn to_value(j: &Json) -> Value {
    match j {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or_default())
            }
        }
        Json::String(s) => Value::String(s.clone()),
        Json::Array(a) => Value::Array(a.iter().map(to_value).collect()),
        Json::Object(o) => Value::Map(
            o.iter()
                .map(|(k, v)| (k.clone(), to_value(v)))
                .collect::<HashMap<_, _>>(),
        ),
    }
}

/// A template value as JSON (for the `json` function).
fn to_json(v: &Value) -> Json {
    match v {
        Value::NoValue | Value::Nil | Value::Function(_) => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::String(s) => Json::String(s.clone()),
        Value::Number(n) => n
            .as_i64()
            .map(Json::from)
            .or_else(|| n.as_u64().map(Json::from))
            .or_else(|| n.as_f64().map(Json::from))
            .unwrap_or(Json::Null),
        Value::Array(a) => Json::Array(a.iter().map(to_json).collect()),
        Value::Object(m) | Value::Map(m) => {
            // Sorted keys, as Go's encoding/json writes a map.
            let sorted: std::collections::BTreeMap<_, _> = m.iter().collect();
            Json::Object(
                sorted
                    .into_iter()
                    .map(|(k, v)| (k.clone(), to_json(v)))
                    .collect(),
            )
        }
    }
}

fn one<'a>(name: &str, args: &'a [Value]) -> Result<&'a Value, FuncError> {
    match args {
        [a] => Ok(a),
        _ => Err(FuncError::ExactlyXArgs(name.into(), 1)),
    }
}

fn string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Nil | Value::NoValue => String::new(),
        other => other.to_string(),
    }
}

fn json(args: &[Value]) -> Result<Value, FuncError> {
    let v = one("json", args)?;
    Ok(Value::String(
        serde_json::to_string(&to_json(v)).unwrap_or_default(),
    ))
}

fn join(args: &[Value]) -> Result<Value, FuncError> {
    match args {
        [Value::Array(a), sep] => Ok(Value::String(
            a.iter().map(string).collect::<Vec<_>>().join(&string(sep)),
        )),
        [Value::Nil | Value::NoValue, _] => Ok(Value::String(String::new())),
        [_, _] => Err(FuncError::Generic(
            "join: the first argument is not a list".into(),
        )),
        _ => Err(FuncError::ExactlyXArgs("join".into(), 2)),
    }
}

fn split(args: &[Value]) -> Result<Value, FuncError> {
    match args {
        [s, sep] => Ok(Value::Array(
            string(s)
                .split(string(sep).as_str())
                .map(|p| Value::String(p.to_owned()))
                .collect(),
        )),
        _ => Err(FuncError::ExactlyXArgs("split".into(), 2)),
    }
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(string(one("lower", args)?).to_lowercase()))
}

fn upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(string(one("upper", args)?).to_uppercase()))
}

fn title(args: &[Value]) -> Result<Value, FuncError> {
    let s = string(one("title", args)?);
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = c.is_whitespace();
    }
    Ok(Value::String(out))
}

fn truncate(args: &[Value]) -> Result<Value, FuncError> {
    match args {
        [s, Value::Number(n)] => {
            let n = n.as_u64().unwrap_or_default() as usize;
            Ok(Value::String(string(s).chars().take(n).collect()))
        }
        _ => Err(FuncError::Generic(
            "truncate takes a string and a length".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(f: &str, item: Json) -> String {
        match Format::parse(Some(f)) {
            Ok(Format::Raw(t)) => render(&t, &item).unwrap_or_else(|e| e.0),
            _ => panic!("{f} is not a plain template"),
        }
    }

    #[test]
    fn fields_nested_fields_and_functions() {
        let item = json!({"Name": "/web", "State": {"Status": "running", "Pid": 42},
                          "Args": ["a", "b"], "Labels": {"k": "v"}});
        assert_eq!(raw("{{.Name}}", item.clone()), "/web");
        assert_eq!(
            raw("{{.State.Status}} {{.State.Pid}}", item.clone()),
            "running 42"
        );
        assert_eq!(raw("{{json .Labels}}", item.clone()), r#"{"k":"v"}"#);
        assert_eq!(raw("{{join .Args \",\"}}", item.clone()), "a,b");
        assert_eq!(raw("{{upper .State.Status}}", item.clone()), "RUNNING");
        assert_eq!(raw("{{index .Labels \"k\"}}", item.clone()), "v");
        assert_eq!(
            raw("{{if eq .State.Status \"running\"}}up{{end}}", item),
            "up"
        );
    }

    #[test]
    fn table_json_and_bad_templates() {
        assert!(Format::parse(None).unwrap().is_default());
        assert!(Format::parse(Some("table")).unwrap().is_default());
        assert!(matches!(Format::parse(Some("json")), Ok(Format::Json)));
        assert!(matches!(
            Format::parse(Some("table {{.ID}}\\t{{.Names}}")),
            Ok(Format::Table(_))
        ));
        let e = Format::parse(Some("{{.ID")).err().map(|e| e.1);
        assert_eq!(e, Some(125));
    }
}
