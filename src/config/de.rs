//! A serde deserializer over [`Node`] that knows where it is.
//!
//! Every error carries the key path (and so the line) it arose at. To report *all* errors of a
//! document at once, [`deserialize_all`] runs the typed deserialization repeatedly: each error is
//! recorded and the offending node is "poisoned" (skipped as if absent) before the next pass, so
//! the following pass can get past it and find the next independent error.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeOwned, Error as _, IntoDeserializer, Visitor};

use super::node::{Kind, Node, Seg};

/// A deserialization error at a key path.
#[derive(Debug, Clone, PartialEq)]
pub struct DeError {
    pub path: Option<Vec<Seg>>,
    pub message: String,
    /// Set for "missing field": the field name, appended to the path when the path is attached.
    missing: Option<String>,
    /// Set for "unknown field": the key, appended to the path when the path is attached.
    unknown: Option<String>,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            path: None,
            message: msg.to_string(),
            missing: None,
            unknown: None,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            path: None,
            message: "required key is missing".to_string(),
            missing: Some(field.to_string()),
            unknown: None,
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let mut message = "unknown key".to_string();
        if let Some(best) = closest(field, expected) {
            message.push_str(&format!(" (did you mean `{best}`?)"));
        } else if !expected.is_empty() {
            message.push_str(&format!("; expected one of: {}", expected.join(", ")));
        }
        DeError {
            path: None,
            message,
            missing: None,
            unknown: Some(field.to_string()),
        }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError::custom(format!(
            "invalid value `{variant}`; expected one of: {}",
            expected.join(", ")
        ))
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::custom(format!("expected {exp}, found {}", describe(&unexp)))
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::custom(format!(
            "invalid value {}: expected {exp}",
            describe(&unexp)
        ))
    }
}

fn describe(u: &de::Unexpected<'_>) -> String {
    match u {
        de::Unexpected::Str(s) => format!("string \"{s}\""),
        de::Unexpected::Unsigned(n) => format!("integer {n}"),
        de::Unexpected::Signed(n) => format!("integer {n}"),
        de::Unexpected::Float(n) => format!("number {n}"),
        de::Unexpected::Bool(b) => format!("boolean {b}"),
        de::Unexpected::Seq => "a list".into(),
        de::Unexpected::Map => "a map".into(),
        de::Unexpected::Unit => "null".into(),
        other => other.to_string(),
    }
}

/// The expected key closest to a misspelt one, if any is close.
fn closest<'a>(got: &str, expected: &[&'a str]) -> Option<&'a str> {
    expected
        .iter()
        .map(|e| (edit_distance(got, e), *e))
        .filter(|(d, e)| *d <= 2.max(e.len() / 4) && *d < e.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let v = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
            cur.push(v);
        }
        prev = cur;
    }
    prev[b.len()]
}

impl DeError {
    fn at(mut self, path: &[Seg]) -> Self {
        if self.path.is_none() {
            let mut p = path.to_vec();
            if let Some(m) = self.missing.take() {
                p.push(Seg::Key(m));
                self.missing = Some(String::new());
            }
            if let Some(u) = self.unknown.take() {
                p.push(Seg::Key(u));
            }
            self.path = Some(p);
        }
        self
    }

    fn is_missing(&self) -> bool {
        self.missing.is_some()
    }
}

/// A deserializer for one node at a known path.
struct De<'a> {
    node: &'a Node,
    path: Vec<Seg>,
    poisoned: &'a HashSet<Vec<Seg>>,
}

impl<'a> De<'a> {
    fn child(&self, node: &'a Node, seg: Seg) -> De<'a> {
        let mut path = self.path.clone();
        path.push(seg);
        De {
            node,
            path,
            poisoned: self.poisoned,
        }
    }

    fn wrap<T>(&self, r: Result<T, DeError>) -> Result<T, DeError> {
        r.map_err(|e| e.at(&self.path))
    }

    fn type_error(&self, expected: &str) -> DeError {
        DeError::custom(format!(
            "expected {expected}, found {}",
            self.node.type_name()
        ))
        .at(&self.path)
    }
}

macro_rules! int_method {
    ($method:ident, $visit:ident, $ty:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            match &self.node.kind {
                Kind::Int(i) => match <$ty>::try_from(*i) {
                    Ok(v) => self.wrap(visitor.$visit(v)),
                    Err(_) => Err(DeError::custom(format!(
                        "integer {i} is out of range ({} to {})",
                        <$ty>::MIN,
                        <$ty>::MAX
                    ))
                    .at(&self.path)),
                },
                _ => Err(self.type_error("an integer")),
            }
        }
    };
}

impl<'de, 'a> de::Deserializer<'de> for De<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.kind {
            Kind::Null => visitor.visit_unit(),
            Kind::Bool(b) => visitor.visit_bool(*b),
            Kind::Int(i) => match i64::try_from(*i) {
                Ok(v) => visitor.visit_i64(v),
                Err(_) => match u64::try_from(*i) {
                    Ok(v) => visitor.visit_u64(v),
                    Err(_) => Err(DeError::custom(format!("integer {i} is out of range"))),
                },
            },
            Kind::Float(f) => visitor.visit_f64(*f),
            Kind::Str { value, .. } => visitor.visit_str(value),
            Kind::Seq(_) => return self.deserialize_seq(visitor),
            Kind::Map(_) => return self.deserialize_map(visitor),
        };
        self.wrap(r)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Bool(b) => self.wrap(visitor.visit_bool(*b)),
            _ => Err(self.type_error("a boolean (true or false)")),
        }
    }

    int_method!(deserialize_i8, visit_i8, i8);
    int_method!(deserialize_i16, visit_i16, i16);
    int_method!(deserialize_i32, visit_i32, i32);
    int_method!(deserialize_i64, visit_i64, i64);
    int_method!(deserialize_u8, visit_u8, u8);
    int_method!(deserialize_u16, visit_u16, u16);
    int_method!(deserialize_u32, visit_u32, u32);
    int_method!(deserialize_u64, visit_u64, u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Float(f) => self.wrap(visitor.visit_f64(*f)),
            Kind::Int(i) => self.wrap(visitor.visit_f64(*i as f64)),
            _ => Err(self.type_error("a number")),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Str { value, .. } => self.wrap(visitor.visit_str(value)),
            // A number where text is expected (`name: 2024`) is read as the text it was written as.
            Kind::Int(i) => self.wrap(visitor.visit_str(&i.to_string())),
            Kind::Float(f) => self.wrap(visitor.visit_str(&f.to_string())),
            _ => Err(self.type_error("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Null => self.wrap(visitor.visit_none()),
            _ => {
                let path = self.path.clone();
                visitor.visit_some(self).map_err(|e| e.at(&path))
            }
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Null => self.wrap(visitor.visit_unit()),
            _ => Err(self.type_error("null")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let path = self.path.clone();
        visitor.visit_newtype_struct(self).map_err(|e| e.at(&path))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Seq(items) => {
                let access = SeqAccess {
                    parent: &self,
                    items: items.iter().enumerate(),
                };
                self.wrap(visitor.visit_seq(access))
            }
            _ => Err(self.type_error("a list")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Map(entries) => {
                let access = MapAccess {
                    parent: &self,
                    entries: entries.iter(),
                    value: None,
                };
                self.wrap(visitor.visit_map(access))
            }
            // `section:` followed only by comments is null in YAML: read it as an empty section.
            Kind::Null => {
                let access = MapAccess {
                    parent: &self,
                    entries: [].iter(),
                    value: None,
                };
                self.wrap(visitor.visit_map(access))
            }
            _ => Err(self.type_error("a map")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Str { value, .. } => {
                let r = visitor.visit_enum(UnitVariant { name: value });
                self.wrap(r)
            }
            Kind::Bool(b) => {
                let name = b.to_string();
                let r = visitor.visit_enum(UnitVariant { name: &name });
                self.wrap(r)
            }
            _ => Err(self.type_error("a string")),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

struct SeqAccess<'p, 'a> {
    parent: &'p De<'a>,
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'_, '_> {
    type Error = DeError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        for (i, item) in self.items.by_ref() {
            let child = self.parent.child(item, Seg::Index(i));
            if self.parent.poisoned.contains(&child.path) {
                continue;
            }
            let path = child.path.clone();
            return seed.deserialize(child).map(Some).map_err(|e| e.at(&path));
        }
        Ok(None)
    }
}

struct MapAccess<'p, 'a> {
    parent: &'p De<'a>,
    entries: std::slice::Iter<'a, (String, Option<usize>, Node)>,
    value: Option<&'a (String, Option<usize>, Node)>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'_, '_> {
    type Error = DeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        for entry in self.entries.by_ref() {
            let mut path = self.parent.path.clone();
            path.push(Seg::Key(entry.0.clone()));
            if self.parent.poisoned.contains(&path) {
                continue;
            }
            self.value = Some(entry);
            let key: de::value::StrDeserializer<'_, DeError> = entry.0.as_str().into_deserializer();
            return seed.deserialize(key).map(Some).map_err(|e| {
                if e.unknown.is_some() {
                    e.at(&self.parent.path)
                } else {
                    e.at(&path)
                }
            });
        }
        Ok(None)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DeError> {
        match self.value.take() {
            Some(entry) => {
                let child = self.parent.child(&entry.2, Seg::Key(entry.0.clone()));
                let path = child.path.clone();
                seed.deserialize(child).map_err(|e| e.at(&path))
            }
            None => Err(DeError::custom("value requested before key").at(&self.parent.path)),
        }
    }
}

struct UnitVariant<'s> {
    name: &'s str,
}

impl<'de> de::EnumAccess<'de> for UnitVariant<'_> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<V: de::DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self), DeError> {
        let d: de::value::StrDeserializer<'_, DeError> = self.name.into_deserializer();
        let v = seed.deserialize(d)?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for UnitVariant<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(
        self,
        _seed: T,
    ) -> Result<T::Value, DeError> {
        Err(DeError::custom(format!("`{}` needs a value", self.name)))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, DeError> {
        Err(DeError::custom(format!("`{}` needs a value", self.name)))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, DeError> {
        Err(DeError::custom(format!("`{}` needs a value", self.name)))
    }
}

/// The outcome of [`deserialize_all`]: the value when one could be built (possibly with some
/// nodes skipped), every error found, and the paths that were skipped.
pub struct Outcome<T> {
    pub value: Option<T>,
    pub errors: Vec<(Vec<Seg>, String)>,
    pub skipped: HashSet<Vec<Seg>>,
}

/// Deserializes `root` into `T`, collecting every independent error (see the module doc).
pub fn deserialize_all<T: DeserializeOwned>(root: &Node) -> Outcome<T> {
    let mut poisoned: HashSet<Vec<Seg>> = HashSet::new();
    let mut errors: Vec<(Vec<Seg>, String)> = Vec::new();
    // Each pass removes at least one node, so the loop ends; the bound guards pathological input.
    for _ in 0..256 {
        let de = De {
            node: root,
            path: Vec::new(),
            poisoned: &poisoned,
        };
        match T::deserialize(de) {
            Ok(v) => {
                return Outcome {
                    value: Some(v),
                    errors,
                    skipped: poisoned,
                };
            }
            Err(e) => {
                let path = e.path.clone().unwrap_or_default();
                let secondary = e.is_missing() && path_is_skipped(&poisoned, &path);
                if !secondary {
                    errors.push((path.clone(), e.message.clone()));
                }
                // A missing key cannot be skipped: the map holding it can.
                let target = if e.is_missing() {
                    path[..path.len().saturating_sub(1)].to_vec()
                } else {
                    path
                };
                if target.is_empty() || poisoned.contains(&target) {
                    break;
                }
                poisoned.insert(target);
            }
        }
    }
    Outcome {
        value: None,
        errors,
        skipped: poisoned,
    }
}

fn path_is_skipped(poisoned: &HashSet<Vec<Seg>>, path: &[Seg]) -> bool {
    (1..=path.len()).any(|n| poisoned.contains(&path[..n]))
}
