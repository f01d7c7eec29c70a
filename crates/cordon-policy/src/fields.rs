//! The names of a config file's fields, taken from the struct that declares
//! them, and the known one nearest a typo. A leaf: it depends on nothing else in
//! the crate.

/// The names serde's derive gives the fields of struct `T`, in declaration order
/// (renames applied): what `T`'s `Deserialize` asks a deserializer for, caught
/// by one that answers nothing else. So a config key is declared once, as a field
/// of the struct, and the list of known keys (for the error and its suggestion)
/// cannot drift from it.
pub(crate) fn struct_fields<'de, T: serde::Deserialize<'de>>() -> &'static [&'static str] {
    match T::deserialize(FieldNames) {
        Err(Caught(fields)) => fields,
        Ok(_) => &[],
    }
}

/// The "error" [`FieldNames`] answers with: the field names asked for.
#[derive(Debug)]
struct Caught(&'static [&'static str]);

impl std::fmt::Display for Caught {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field names")
    }
}

impl std::error::Error for Caught {}

impl serde::de::Error for Caught {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Caught(&[])
    }
}

/// A deserializer that holds no data: it answers a struct's request with the
/// struct's field names, and anything else with none.
struct FieldNames;

impl<'de> serde::Deserializer<'de> for FieldNames {
    type Error = Caught;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Caught> {
        Err(Caught(&[]))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Caught> {
        Err(Caught(fields))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
        enum identifier ignored_any
    }
}

/// The known field nearest to `field` by edit distance, if it is close (a typo).
pub(crate) fn closest_field(field: &str, known: &[&'static str]) -> Option<&'static str> {
    if field.len() > 64 {
        return None;
    }
    let lower = field.to_ascii_lowercase().replace('-', "_");
    known
        .iter()
        .map(|k| (edit_distance(&lower, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest() {
        let known = &["timeout", "deny_read", "allow_read"];
        assert_eq!(closest_field("timout", known), Some("timeout"));
        assert_eq!(closest_field("deny-read", known), Some("deny_read"));
        assert_eq!(closest_field("network", known), None);
        assert_eq!(closest_field(&"x".repeat(1000), known), None);
    }

    #[test]
    fn the_names_are_the_structs_own() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct S {
            #[serde(rename = "$schema")]
            schema: Option<String>,
            first: u8,
            second_one: Vec<String>,
        }
        assert_eq!(struct_fields::<S>(), ["$schema", "first", "second_one"]);
        assert!(struct_fields::<u8>().is_empty());
    }
}
