//! A request's `params` into its typed form ([`crate::protocol`]), naming the
//! parameter in every error.
//!
//! `params` must be an object or absent. A member whose value is null counts as
//! absent, and a string member must not hold a NUL byte (no path, command or
//! pattern can). Unknown members are ignored.

use crate::error::ToolError;
use serde::de::value::StrDeserializer;
use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// `params` as a `T`, or error -32602 naming the parameter at fault.
pub fn parse<T: DeserializeOwned>(params: Option<Value>) -> Result<T, ToolError> {
    let map = match params {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(ToolError::invalid("params", "must be an object")),
    };
    T::deserialize(Params(map)).map_err(|e| ToolError::invalid(&e.param, e.reason))
}

/// A parameter and what is wrong with it.
#[derive(Debug)]
struct ParamError {
    param: String,
    reason: String,
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.param, self.reason)
    }
}

impl std::error::Error for ParamError {}

impl de::Error for ParamError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ParamError {
            param: "params".into(),
            reason: msg.to_string(),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        ParamError {
            param: field.into(),
            reason: "is required".into(),
        }
    }
}

/// The params object as a deserializer of a struct.
struct Params(Map<String, Value>);

impl<'de> Deserializer<'de> for Params {
    type Error = ParamError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_map(Members {
            iter: self.0.into_iter(),
            value: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// The members, each value deserialized with its name on any error.
struct Members {
    iter: serde_json::map::IntoIter,
    value: Option<(String, Value)>,
}

impl<'de> MapAccess<'de> for Members {
    type Error = ParamError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ParamError> {
        for (name, value) in self.iter.by_ref() {
            match &value {
                Value::Null => continue,
                Value::String(s) if s.contains('\0') => {
                    return Err(ParamError {
                        param: name,
                        reason: "must not contain a NUL byte".into(),
                    });
                }
                _ => {}
            }
            let key = seed.deserialize(StrDeserializer::<ParamError>::new(&name))?;
            self.value = Some((name, value));
            return Ok(Some(key));
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ParamError> {
        let (name, value) = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("a value without its name"))?;
        seed.deserialize(value).map_err(|e| ParamError {
            param: name,
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ExecParams, ReadParams, WriteParams};
    use serde_json::json;

    fn param_of<T: DeserializeOwned + fmt::Debug>(v: Value) -> String {
        match parse::<T>(Some(v)) {
            Err(ToolError::InvalidParams { param, .. }) => param,
            other => panic!("not an invalid-params error: {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_parameter() {
        assert_eq!(param_of::<ReadParams>(json!([1])), "params");
        assert_eq!(param_of::<ReadParams>(json!({})), "path");
        assert_eq!(param_of::<ReadParams>(json!({"path": null})), "path");
        assert_eq!(param_of::<ReadParams>(json!({"path": 5})), "path");
        assert_eq!(param_of::<ReadParams>(json!({"path": "a\u{0}b"})), "path");
        assert_eq!(
            param_of::<ReadParams>(json!({"path": "x", "offset": -1})),
            "offset"
        );
        assert_eq!(
            param_of::<ExecParams>(json!({"command": "x", "env": {"A": 1}})),
            "env"
        );
        assert_eq!(
            param_of::<WriteParams>(json!({"path": "x", "data": "@@"})),
            "data"
        );
    }

    #[test]
    fn null_is_absent_and_unknown_members_are_ignored() {
        let p: ReadParams =
            parse(Some(json!({"path": "x", "offset": null, "extra": [1]}))).unwrap();
        assert_eq!(
            p,
            ReadParams {
                path: "x".into(),
                offset: None,
                limit: None
            }
        );
        let p: crate::protocol::Empty = parse(None).unwrap();
        assert_eq!(p, crate::protocol::Empty {});
    }
}
