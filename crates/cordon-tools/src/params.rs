//! Typed access to a request's `params`, naming the parameter in every error.

use crate::error::ToolError;
use serde_json::{Map, Value};

pub struct Params<'a> {
    map: Option<&'a Map<String, Value>>,
}

impl<'a> Params<'a> {
    /// `params` must be an object or absent.
    pub fn new(v: Option<&'a Value>) -> Result<Params<'a>, ToolError> {
        match v {
            None | Some(Value::Null) => Ok(Params { map: None }),
            Some(Value::Object(m)) => Ok(Params { map: Some(m) }),
            Some(_) => Err(ToolError::invalid("params", "must be an object")),
        }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        match self.map?.get(name) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    pub fn opt_str(&self, name: &str) -> Result<Option<&'a str>, ToolError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => {
                if s.contains('\0') {
                    Err(ToolError::invalid(name, "must not contain a NUL byte"))
                } else {
                    Ok(Some(s))
                }
            }
            Some(_) => Err(ToolError::invalid(name, "must be a string")),
        }
    }

    pub fn str(&self, name: &str) -> Result<&'a str, ToolError> {
        self.opt_str(name)?
            .ok_or_else(|| ToolError::invalid(name, "is required"))
    }

    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, ToolError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ToolError::invalid(name, "must be true or false")),
        }
    }

    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool, ToolError> {
        Ok(self.opt_bool(name)?.unwrap_or(default))
    }

    pub fn opt_u64(&self, name: &str) -> Result<Option<u64>, ToolError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| ToolError::invalid(name, "must be a non-negative integer")),
        }
    }

    pub fn opt_f64(&self, name: &str) -> Result<Option<f64>, ToolError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| ToolError::invalid(name, "must be a number")),
        }
    }

    /// An object of string → string.
    pub fn opt_str_map(&self, name: &str) -> Result<Vec<(&'a str, &'a str)>, ToolError> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.as_str(), s.as_str())),
                    _ => Err(ToolError::invalid(
                        name,
                        format!("value of {k:?} must be a string"),
                    )),
                })
                .collect(),
            Some(_) => Err(ToolError::invalid(name, "must be an object of strings")),
        }
    }

    /// The raw value (for `cancel`'s `id`).
    pub fn raw(&self, name: &str) -> Option<&'a Value> {
        self.get(name)
    }
}
