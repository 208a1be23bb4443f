//! Keyset paging, the same for every list: a page holds at most `limit` rows after a cursor,
//! and the cursor is the sort key of the last row seen (opaque to clients: base64url of a
//! JSON array), so pages stay correct while rows are added or removed, and no query skips
//! over rows with OFFSET.

use base64::Engine as _;

/// Rows per page when the client does not say.
pub const DEFAULT_LIMIT: i64 = 100;
/// Most rows per page.
pub const MAX_LIMIT: i64 = 500;

/// Which page to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Rows wanted, 1 to [`MAX_LIMIT`].
    pub limit: i64,
    /// The sort key of the last row of the previous page.
    pub after: Option<Vec<String>>,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            limit: DEFAULT_LIMIT,
            after: None,
        }
    }
}

/// Why a page request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPage {
    #[error("must be 1 to {MAX_LIMIT} (got {0})")]
    Limit(i64),
    #[error("is not a cursor this server gave out; start again without it")]
    Cursor,
}

impl PageRequest {
    /// The first page at the largest size: what the panel reads for a whole short list.
    pub const FIRST_MAX: PageRequest = PageRequest {
        limit: MAX_LIMIT,
        after: None,
    };

    /// Checks a client's `limit` and `cursor`.
    pub fn parse(
        limit: Option<i64>,
        cursor: Option<&str>,
    ) -> Result<Self, (&'static str, BadPage)> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(("limit", BadPage::Limit(limit)));
        }
        let after = match cursor {
            None => None,
            Some(c) => Some(decode(c).ok_or(("cursor", BadPage::Cursor))?),
        };
        Ok(Self { limit, after })
    }

    /// The rows to fetch: one more than the page, to know whether another follows.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }

    /// Part `i` of the cursor (`None` on the first page, or when it is too short).
    pub fn key(&self, i: usize) -> Option<&str> {
        self.after
            .as_ref()
            .and_then(|k| k.get(i))
            .map(String::as_str)
    }

    /// Part `i` of the cursor as a timestamp.
    pub fn time(&self, i: usize) -> Option<chrono::DateTime<chrono::Utc>> {
        self.key(i)
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
    }

    /// Part `i` of the cursor as an integer.
    pub fn int(&self, i: usize) -> Option<i64> {
        self.key(i).and_then(|s| s.parse().ok())
    }

    /// Cuts the extra row off and makes the next cursor from the last row kept.
    pub fn finish<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> Vec<String>) -> Page<T> {
        let more = rows.len() as i64 > self.limit;
        rows.truncate(self.limit.max(0) as usize);
        let next = if more {
            rows.last().map(|r| encode(&key(r)))
        } else {
            None
        };
        Page { items: rows, next }
    }
}

/// One page of a list and the cursor of the next, if there is one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// The same page with each item turned into something else.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

/// A timestamp as a cursor part.
pub fn time_key(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn encode(key: &[String]) -> String {
    let json = serde_json::to_vec(key).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode(cursor: &str) -> Option<Vec<String>> {
    if cursor.len() > 2048 {
        return None;
    }
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    let key: Vec<String> = serde_json::from_slice(&json).ok()?;
    (!key.is_empty() && key.len() <= 8).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        let req = PageRequest::parse(Some(2), None).unwrap();
        let page = req.finish(vec![1, 2, 3], |n| vec![n.to_string(), "x".into()]);
        assert_eq!(page.items, [1, 2]);
        let next = PageRequest::parse(Some(2), page.next.as_deref()).unwrap();
        assert_eq!(next.int(0), Some(2));
        assert_eq!(next.key(1), Some("x"));
        assert!(
            req.finish(vec![1, 2], |n| vec![n.to_string()])
                .next
                .is_none()
        );
        assert_eq!(
            PageRequest::parse(Some(501), None),
            Err(("limit", BadPage::Limit(501)))
        );
        assert_eq!(
            PageRequest::parse(Some(0), None),
            Err(("limit", BadPage::Limit(0)))
        );
        assert_eq!(
            PageRequest::parse(None, Some("not base64!")),
            Err(("cursor", BadPage::Cursor))
        );
        assert_eq!(PageRequest::parse(None, None).unwrap().limit, DEFAULT_LIMIT);
    }
}
