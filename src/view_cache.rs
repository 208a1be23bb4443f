//! Rendered views tagged with the view version (migration 0003) they were rendered at. An
//! entry is used only when the version read with the caller's credentials (in the same
//! query) is the same, so a change made by any process on the database is seen at once.

use std::collections::HashMap;
use std::sync::Mutex;

/// Most entries kept; past it the cache starts over.
pub const MAX_ENTRIES: usize = 4096;

/// Views by key (scope and whatever else shapes the view), with their versions.
pub struct ViewCache<T> {
    entries: Mutex<HashMap<String, (i64, T)>>,
}

impl<T> Default for ViewCache<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> ViewCache<T> {
    /// The view stored under `key` if it was rendered at `version`.
    pub fn get(&self, key: &str, version: i64) -> Option<T> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(v, _)| *v == version)
            .map(|(_, view)| view.clone())
    }

    /// Stores a view rendered at `version` (read before the view's data was).
    pub fn put(&self, key: String, version: i64, view: T) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (version, view));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_is_served_only_at_its_version() {
        let cache = ViewCache::default();
        cache.put("tn_1".into(), 7, "seven");
        assert_eq!(cache.get("tn_1", 7), Some("seven"));
        assert_eq!(cache.get("tn_1", 8), None);
        assert_eq!(cache.get("tn_2", 7), None);
    }
}
