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
    /// `table TEMPLATE`: the template's columns (tab-separated) aligned, under a header
    /// (the same template, rendered with Docker's header functions).
    Table(Template, Template),
    /// `TEMPLATE`: the template, once an item.
    Raw(Template),
}

// A template error exits 1, as the docker CLI's do (125 is for its flag errors).
fn bad(e: impl std::fmt::Display) -> Fail {
    Fail(format!("template parsing error: {e}"), 1)
}

/// Docker's template functions.
const FUNCS: [(&str, gtmpl::Func); 7] = [
    ("json", json),
    ("join", join),
    ("split", split),
    ("lower", lower),
    ("upper", upper),
    ("title", title),
    ("truncate", truncate),
];

/// The same names for a table's header, as the docker CLI's `HeaderFunctions`: each
/// gives back its first argument, the header text, untouched.
const HEADER_FUNCS: [(&str, gtmpl::Func); 7] = [
    ("json", first),
    ("join", first),
    ("split", first),
    ("lower", first),
    ("upper", first),
    ("title", first),
    ("truncate", first),
];

fn first(args: &[Value]) -> Result<Value, FuncError> {
    args.first()
        .cloned()
        .ok_or_else(|| FuncError::AtLeastXArgs("a header function".into(), 1))
}

fn template(text: &str, funcs: &[(&str, gtmpl::Func)]) -> Result<Template, Fail> {
    let mut t = Template::default();
    t.add_funcs(funcs);
    t.parse(text).map_err(bad)?;
    Ok(t)
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
        // Docker's test is a prefix: `table{{.ID}}` is a table too.
        let (is_table, text) = match f.strip_prefix("table") {
            Some(t) => (true, t.trim_start()),
            None => (false, f),
        };
        // Docker reads `\t` and `\n` typed on the command line as tab and newline.
        let text = text.replace("\\t", "\t").replace("\\n", "\n");
        let t = template(&text, &FUNCS)?;
        Ok(if is_table {
            Format::Table(t, template(&text, &HEADER_FUNCS)?)
        } else {
            Format::Raw(t)
        })
    }

    /// Whether the command prints its own table.
    pub(crate) fn is_default(&self) -> bool {
        matches!(self, Format::Default)
    }

    /// Prints the items (JSON objects) as asked; `headers` names the column of each field
    /// for a `table` header. With `strict`, the items are the fields of Docker's
    /// formatters, and a field they lack is an error naming it (as Go's templates say of a
    /// struct); otherwise (inspect documents, maps in Go) it prints `<no value>`.
    pub(crate) fn print(
        &self,
        items: &[Json],
        headers: &[(&str, &str)],
        strict: bool,
    ) -> Result<(), Fail> {
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
                    println!("{}", render(t, i, strict)?);
                }
                Ok(())
            }
            Format::Table(t, header) => {
                let head: serde_json::Map<String, Json> = headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Json::String((*v).to_owned())))
                    .collect();
                let mut rows = vec![split_row(&render_lenient(header, &Json::Object(head)))];
                for i in items {
                    rows.push(split_row(&render(t, i, strict)?));
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

/// Renders one item (see [`Format::print`] for `strict`).
pub(crate) fn render(t: &Template, item: &Json, strict: bool) -> Result<String, Fail> {
    let mut v = to_value(item);
    if let (true, Value::Map(m)) = (strict, &v) {
        v = Value::Object(m.clone());
    }
    t.render(&Context::from(v)).map_err(|e| {
        // gtmpl's "no field X for <the whole item>": the field is what matters.
        let e = e.to_string();
        let e = e.split(" for ").next().unwrap_or(&e);
        Fail(format!("template: executing: {e}"), 1)
    })
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
            Ok(Format::Raw(t)) => render(&t, &item, false).unwrap_or_else(|e| e.0),
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
            Ok(Format::Table(..))
        ));
        assert!(matches!(
            Format::parse(Some("table{{.ID}}")),
            Ok(Format::Table(..))
        ));
        let e = Format::parse(Some("{{.ID")).err().map(|e| e.1);
        assert_eq!(e, Some(1));
        // A formatter's item has its fields and no others; an inspect document is a map.
        let Ok(Format::Raw(t)) = Format::parse(Some("{{.Nope}}")) else {
            panic!("not a plain template")
        };
        let item = json!({"ID": "x"});
        assert!(render(&t, &item, true)
            .err()
            .is_some_and(|e| e.0.contains("Nope")));
        assert_eq!(render(&t, &item, false).unwrap(), "<no value>");
        // A table's header passes the functions' arguments through.
        let Ok(Format::Table(_, h)) =
            Format::parse(Some("table {{json .Labels}}\\t{{upper .Names}}"))
        else {
            panic!("not a table")
        };
        let head = json!({"Labels": "LABELS", "Names": "NAMES"});
        assert_eq!(render_lenient(&h, &head), "LABELS\tNAMES");
    }
}
