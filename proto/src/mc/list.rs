//! A list carried in one XML attribute, space-separated on the wire (`full="demo live"`) and
//! typed in Rust: every element is parsed when the message is, so a bad one is an error there,
//! not a silent gap found later.

use std::fmt::Display;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceList<T>(pub Vec<T>);

impl<T> Default for SpaceList<T> {
    fn default() -> Self {
        SpaceList(Vec::new())
    }
}

impl<T> SpaceList<T> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }
}

impl<T> From<Vec<T>> for SpaceList<T> {
    fn from(v: Vec<T>) -> Self {
        SpaceList(v)
    }
}

impl<T> FromIterator<T> for SpaceList<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        SpaceList(iter.into_iter().collect())
    }
}

impl<'a, T> IntoIterator for &'a SpaceList<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T: Display> Serialize for SpaceList<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let words: Vec<String> = self.0.iter().map(T::to_string).collect();
        s.serialize_str(&words.join(" "))
    }
}

impl<'de, T: FromStr> Deserialize<'de> for SpaceList<T>
where
    T::Err: Display,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.split_ascii_whitespace()
            .map(|w| w.parse::<T>().map_err(|e| serde::de::Error::custom(format!("bad list element `{w}`: {e}"))))
            .collect::<Result<Vec<T>, _>>()
            .map(SpaceList)
    }
}
