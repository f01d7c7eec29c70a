//! The protocol's other two definitions, kept to this one:
//!
//! - integrations/pi/protocol.ts, the TypeScript client's types, is rendered from
//!   the protocol's JSON schema (schemars, test builds only) and must be that
//!   rendering byte for byte. `CORDON_BLESS=1 cargo test -p cordon-tools --lib
//!   protocol` rewrites it.
//! - docs/serve.md names exactly the methods, the params, the result fields, the
//!   notifications' fields, the error codes and the error data of the protocol; its
//!   JSON examples of `ready`, `exec.output` and `status` parse as the types.

use super::*;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every method's and notification's schema, and the definitions they refer to:
/// params as the server reads them, results and notifications as it writes them.
struct Schemas {
    methods: Vec<(String, Value, Value)>,
    notifications: Vec<(String, Value)>,
    defs: Map<String, Value>,
}

fn schemas() -> Schemas {
    let mut reads = SchemaSettings::draft2020_12()
        .for_deserialize()
        .into_generator();
    let mut writes = SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator();
    let mut methods = Vec::new();
    each_method(&mut reads, &mut writes, &mut |name, params, result| {
        methods.push((name.to_string(), params.to_value(), result.to_value()));
    });
    let mut notifications = Vec::new();
    each_notification(&mut writes, &mut |name, params| {
        notifications.push((name.to_string(), params.to_value()));
    });
    // The error object, which every method may answer.
    writes.subschema_for::<ErrorObject>();
    let mut defs = reads.take_definitions(true);
    for (name, def) in writes.take_definitions(true) {
        if let Some(read) = defs.get(&name) {
            assert_eq!(
                read, &def,
                "{name} is read and written in different shapes: give each its own type"
            );
        }
        defs.insert(name, def);
    }
    Schemas {
        methods,
        notifications,
        defs,
    }
}

// ---------------------------------------------------------------------------
// TypeScript

fn ts_doc(out: &mut String, indent: &str, schema: &Value) {
    if let Some(d) = schema.get("description").and_then(Value::as_str) {
        // `*/` would end the comment (a glob such as `**/*.rs`).
        let d = d.replace("*/", "*\\/");
        let lines: Vec<&str> = d.lines().collect();
        if lines.len() == 1 {
            let _ = writeln!(out, "{indent}/** {} */", lines[0]);
        } else {
            let _ = writeln!(out, "{indent}/**");
            for l in lines {
                let _ = writeln!(out, "{indent} * {l}");
            }
            let _ = writeln!(out, "{indent} */");
        }
    }
}

/// The TypeScript type of `schema`.
fn ts_type(schema: &Value) -> String {
    if schema == &Value::Bool(true) || schema.as_object().is_some_and(|o| o.is_empty()) {
        return "unknown".into();
    }
    let o = schema
        .as_object()
        .unwrap_or_else(|| panic!("a schema the renderer does not know: {schema}"));
    if let Some(r) = o.get("$ref").and_then(Value::as_str) {
        return r.trim_start_matches("#/$defs/").to_string();
    }
    if let Some(c) = o.get("const") {
        return c.to_string();
    }
    if let Some(e) = o.get("enum").and_then(Value::as_array) {
        return e
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join(" | ");
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(all) = o.get(key).and_then(Value::as_array) {
            return all.iter().map(ts_type).collect::<Vec<_>>().join(" | ");
        }
    }
    let one = |t: &str| -> String {
        match t {
            "string" => "string".into(),
            "integer" | "number" => "number".into(),
            "boolean" => "boolean".into(),
            "null" => "null".into(),
            "array" => {
                let item = ts_type(&o["items"]);
                if item.contains(' ') {
                    format!("({item})[]")
                } else {
                    format!("{item}[]")
                }
            }
            "object" => match (o.get("properties"), o.get("additionalProperties")) {
                (Some(_), _) => ts_object(schema, ""),
                (None, Some(v)) => format!("Record<string, {}>", ts_type(v)),
                (None, None) => "Record<string, never>".into(),
            },
            other => panic!("a JSON type the renderer does not know: {other}"),
        }
    };
    match o.get("type") {
        Some(Value::String(t)) => one(t),
        Some(Value::Array(ts)) => ts
            .iter()
            .map(|t| one(t.as_str().unwrap_or("?")))
            .collect::<Vec<_>>()
            .join(" | "),
        // Any JSON (a description only, as for `layers`).
        None if o.keys().all(|k| k == "description") => "unknown".into(),
        _ => panic!("a schema the renderer does not know: {schema}"),
    }
}

/// An object type's body: `{ ... }`, its members indented by `indent` + a tab.
fn ts_object(schema: &Value, indent: &str) -> String {
    let required: BTreeSet<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = String::from("{\n");
    let inner = format!("{indent}\t");
    for (name, prop) in schema["properties"].as_object().into_iter().flatten() {
        ts_doc(&mut out, &inner, prop);
        let optional = if required.contains(name.as_str()) {
            ""
        } else {
            "?"
        };
        let _ = writeln!(out, "{inner}{name}{optional}: {};", ts_type(prop));
    }
    out.push_str(indent);
    out.push('}');
    out
}

fn render_ts(s: &Schemas) -> String {
    let mut out = String::new();
    out.push_str(
        "// The protocol of `cordon serve` (docs/serve.md), for the TypeScript client.\n\
         // Generated from crates/cordon-tools/src/protocol (the types the server\n\
         // itself uses) by its tests; do not edit: change the Rust types, then run\n\
         // `CORDON_BLESS=1 cargo test -p cordon-tools --lib protocol`.\n\n",
    );
    out.push_str("export const JSONRPC = \"2.0\";\n\n");
    out.push_str("/** The codes of an error object (docs/serve.md, \"Errors\"). */\n");
    out.push_str("export const ErrorCode = {\n");
    for c in ErrorCode::ALL {
        let _ = writeln!(out, "\t{c:?}: {},", c.code());
    }
    out.push_str("} as const;\n");
    for (name, def) in &s.defs {
        out.push('\n');
        ts_doc(&mut out, "", def);
        if def.get("properties").is_some() {
            let _ = writeln!(out, "export interface {name} {}", ts_object(def, ""));
        } else {
            let _ = writeln!(out, "export type {name} = {};", ts_type(def));
        }
    }
    out.push_str("\n/** Every method: its params and its result. */\nexport interface Methods {\n");
    for (name, params, result) in &s.methods {
        let _ = writeln!(
            out,
            "\t{name}: {{ params: {}; result: {} }};",
            ts_type(params),
            ts_type(result)
        );
    }
    out.push_str("}\n\nexport type Method = keyof Methods;\n");
    out.push_str("\n/** Every notification the server sends, and its params. */\nexport interface Notifications {\n");
    for (name, params) in &s.notifications {
        let key = if name.contains('.') {
            format!("{name:?}")
        } else {
            name.clone()
        };
        let _ = writeln!(out, "\t{key}: {};", ts_type(params));
    }
    out.push_str("}\n");
    out
}

#[test]
fn the_typescript_client_types_are_generated_from_the_protocol() {
    let path = repo().join("integrations/pi/protocol.ts");
    let want = render_ts(&schemas());
    if std::env::var_os("CORDON_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} is not the rendering of the protocol's types; run `CORDON_BLESS=1 cargo test -p cordon-tools --lib protocol` and commit it. It should be:\n{want}",
        path.display()
    );
}

// ---------------------------------------------------------------------------
// docs/serve.md

/// A definition's schema, through a `$ref`.
fn resolve<'a>(s: &'a Schemas, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => &s.defs[r.trim_start_matches("#/$defs/")],
        None => schema,
    }
}

/// The names of the properties of `schema` and of every object inside it (not
/// inside `layers`, which the backend fills); with `required`, only required ones.
fn field_names(s: &Schemas, schema: &Value, required: bool, out: &mut BTreeSet<String>) {
    let schema = resolve(s, schema);
    let needed: BTreeSet<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, prop) in schema["properties"].as_object().into_iter().flatten() {
        if required && !needed.contains(name.as_str()) {
            continue;
        }
        out.insert(name.clone());
        if name != "layers" {
            field_names(s, prop, required, out);
        }
    }
    if let Some(items) = schema.get("items") {
        field_names(s, items, required, out);
    }
    for key in ["anyOf", "oneOf"] {
        for sub in schema[key].as_array().into_iter().flatten() {
            field_names(s, sub, required, out);
        }
    }
}

fn names(s: &Schemas, schema: &Value, required: bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    field_names(s, schema, required, &mut out);
    out
}

/// The keys of every object in `v` (not inside `layers`).
fn json_keys(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                out.insert(k.clone());
                if k != "layers" {
                    json_keys(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| json_keys(v, out)),
        _ => {}
    }
}

/// The text of code spans (`...`) in `text`.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// The JSON code blocks of `text`.
fn json_blocks(text: &str) -> Vec<Value> {
    text.split("```json\n")
        .skip(1)
        .map(|b| {
            let body = &b[..b.find("```").expect("a closed code block")];
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
        })
        .collect()
}

/// `"key":` names in `text`.
fn quoted_keys(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("\":") {
        let start = text[..i].rfind('"').map_or(i, |s| s + 1);
        let key = &text[start..i];
        if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric()) {
            out.insert(key.to_string());
        }
    }
    out
}

fn serve_md() -> String {
    std::fs::read_to_string(repo().join("docs/serve.md")).unwrap()
}

/// The text of the level-2 section `title`.
fn section<'a>(doc: &'a str, title: &str) -> &'a str {
    let start = doc
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("docs/serve.md has no section {title}"));
    let rest = &doc[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    &rest[..end]
}

#[test]
fn docs_serve_md_lists_the_methods_and_their_fields() {
    let s = schemas();
    let doc = serve_md();
    let methods_md = section(&doc, "Methods");
    let mut documented = Vec::new();
    for part in methods_md.split("\n### `").skip(1) {
        let name = &part[..part.find('`').unwrap()];
        documented.push(name.to_string());
        let Some((_, params, result)) = s.methods.iter().find(|m| m.0 == name) else {
            continue;
        };
        // params: the identifiers in code spans from "params:" to "result" or the
        // paragraph's end.
        let after = &part[part.find("params:").expect("a params: line") + 7..];
        let end = [after.find("result"), after.find("\n\n")]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(after.len());
        let params_text = &after[..end];
        let named: BTreeSet<String> = code_spans(params_text)
            .into_iter()
            .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphabetic()))
            .map(String::from)
            .collect();
        let fields = names(&s, params, false);
        assert_eq!(named, fields, "docs/serve.md, {name}: the params");
        // result: the keys of its example (the JSON block, or the first code span).
        let after = &after[after.find("result").expect("a result") + 6..];
        let keys = match json_blocks(after).into_iter().next() {
            Some(example) if after.trim_start().starts_with(", for example") => {
                let mut keys = BTreeSet::new();
                json_keys(&example, &mut keys);
                check_result(name, &example)
                    .unwrap_or_else(|e| panic!("docs/serve.md, {name}'s example: {e}"));
                keys
            }
            _ => quoted_keys(code_spans(after).first().copied().unwrap_or("")),
        };
        let all = names(&s, result, false);
        let required = names(&s, result, true);
        assert!(
            keys.is_subset(&all),
            "docs/serve.md, {name}: the result names fields the protocol does not have: {:?}",
            keys.difference(&all).collect::<Vec<_>>()
        );
        assert!(
            required.is_subset(&keys),
            "docs/serve.md, {name}: the result leaves out fields the server always sends: {:?}",
            required.difference(&keys).collect::<Vec<_>>()
        );
    }
    assert_eq!(documented, METHODS, "docs/serve.md's methods, in order");
}

#[test]
fn docs_serve_md_notification_examples_are_the_protocol() {
    let s = schemas();
    let doc = serve_md();
    let mut seen = BTreeSet::new();
    for example in json_blocks(&doc) {
        let Some(method) = example.get("method").and_then(Value::as_str) else {
            continue;
        };
        let note: Notification = serde_json::from_value(example.clone())
            .unwrap_or_else(|e| panic!("docs/serve.md: {example}: {e}"));
        check_notification(method, &note.params)
            .unwrap_or_else(|e| panic!("docs/serve.md: {example}: {e}"));
        let schema = &s.notifications.iter().find(|n| n.0 == method).unwrap().1;
        let mut keys = BTreeSet::new();
        json_keys(&note.params, &mut keys);
        assert_eq!(keys, names(&s, schema, false), "docs/serve.md: {example}");
        seen.insert(method.to_string());
    }
    let all: BTreeSet<String> = NOTIFICATIONS.iter().map(|n| n.to_string()).collect();
    assert_eq!(seen, all, "docs/serve.md shows each notification");
}

#[test]
fn docs_serve_md_error_table_is_the_codes_and_their_data() {
    let s = schemas();
    let doc = serve_md();
    let errors = section(&doc, "Errors");
    let mut codes = Vec::new();
    let mut data = BTreeSet::new();
    for row in errors.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let Ok(code) = cells[1].parse::<i64>() else {
            continue;
        };
        codes.push(code);
        if let Some(first) = code_spans(cells[3]).first() {
            for key in first.split('"').skip(1).step_by(2) {
                data.insert(key.to_string());
            }
        }
    }
    let want: Vec<i64> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
    assert_eq!(codes, want, "docs/serve.md's error codes, in order");
    let fields = names(&s, &s.defs["ErrorData"].clone(), false);
    assert_eq!(data, fields, "docs/serve.md's error data");
    assert_eq!(
        json!(ErrorCode::ALL.len()),
        json!(want.len()),
        "ErrorCode::ALL lists every code"
    );
}

#[test]
fn every_error_code_round_trips() {
    for c in ErrorCode::ALL {
        assert_eq!(ErrorCode::from_code(c.code()), Some(c));
    }
    assert_eq!(ErrorCode::from_code(42), None);
}

#[test]
fn messages_round_trip_through_their_types() {
    let line = r#"{"jsonrpc":"2.0","method":"exec.output","params":{"id":7,"stream":"stdout","data":"aGVsbG8K"}}"#;
    let Message::Notification(n) = Message::parse(line).unwrap() else {
        panic!("not a notification");
    };
    let o: ExecOutput = serde_json::from_value(n.params).unwrap();
    assert_eq!(o.id, Some(Id::from(7)));
    assert_eq!(&*o.data.0, b"hello\n");
    let r = Response::ok(Some(Id::from("x")), ExistsResult { exists: true });
    let text = serde_json::to_string(&r).unwrap();
    assert_eq!(
        text,
        r#"{"jsonrpc":"2.0","id":"x","result":{"exists":true}}"#
    );
    let Message::Response(back) = Message::parse(&text).unwrap() else {
        panic!("not a response");
    };
    assert_eq!(back.into_result().unwrap(), json!({"exists": true}));
    assert!(Message::parse(r#"{"jsonrpc":"1.0","id":1,"result":{}}"#).is_err());
}

#[test]
fn a_denials_time_is_utc_rfc3339() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(19_723), (2024, 1, 1));
    assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    let at = |secs: u64, millis: u64| {
        let time = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis);
        Denial::at(time, "read".into(), "/p".into(), "r".into()).time
    };
    assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
    assert_eq!(at(1_709_164_800 + 3_723, 45), "2024-02-29T01:02:03.045Z");
    let before = UNIX_EPOCH - Duration::from_secs(10);
    let early = Denial::at(before, "read".into(), "/p".into(), "r".into());
    assert_eq!(early.time, "1970-01-01T00:00:00.000Z");
}
