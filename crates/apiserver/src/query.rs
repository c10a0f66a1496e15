//! The query parameters of a resource request, parsed once.

use skiff_core::selector::{FieldSelector, LabelSelector};

use crate::errors::{ApiError, ApiResult};
use crate::resources::ResourceInfo;
use crate::table::IncludeObject;

#[derive(Default)]
pub struct Params {
    pub pairs: Vec<(String, String)>,
}

impl Params {
    pub fn parse(query: Option<&str>) -> Params {
        let mut pairs = Vec::new();
        for part in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            pairs.push((percent_decode(k), percent_decode(v)));
        }
        Params { pairs }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    pub fn dry_run(&self) -> bool {
        self.pairs.iter().any(|(k, v)| k == "dryRun" && v == "All")
    }

    pub fn label_selector(&self) -> ApiResult<Option<LabelSelector>> {
        match self.get("labelSelector").filter(|s| !s.trim().is_empty()) {
            None => Ok(None),
            Some(s) => LabelSelector::parse(s)
                .map(Some)
                .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}"))),
        }
    }

    /// The field selector, rejecting fields the resource does not support.
    pub fn field_selector(&self, info: &ResourceInfo) -> ApiResult<Option<FieldSelector>> {
        let Some(s) = self.get("fieldSelector").filter(|s| !s.trim().is_empty()) else {
            return Ok(None);
        };
        let sel = FieldSelector::parse(s).map_err(ApiError::bad_request)?;
        let probe = serde_json::json!({});
        for r in sel.requirements() {
            if skiff_core::fields::field_value(info.resource, &probe, &r.field).is_none() {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {}",
                    r.field
                )));
            }
        }
        Ok(Some(sel))
    }

    pub fn limit(&self) -> usize {
        self.get("limit")
            .and_then(|l| l.parse::<i64>().ok())
            .filter(|l| *l > 0)
            .unwrap_or(0) as usize
    }

    pub fn include_object(&self) -> IncludeObject {
        IncludeObject::parse(self.get("includeObject"))
    }

    /// `fieldValidation`: Strict (reject unknown fields), Warn (the default), or Ignore.
    pub fn field_validation(&self) -> &str {
        self.get("fieldValidation").unwrap_or("Warn")
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_selectors_and_flags() {
        let p = Params::parse(Some(
            "fieldSelector=metadata.name%3Dweb&watch=true&labelSelector=a+in+(x)&x=%",
        ));
        assert_eq!(p.get("fieldSelector"), Some("metadata.name=web"));
        assert!(p.flag("watch"));
        assert_eq!(p.get("labelSelector"), Some("a in (x)"));
        assert_eq!(p.get("x"), Some("%"));
    }
}
