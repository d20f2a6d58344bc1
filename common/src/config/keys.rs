//! Where in a TOML file an error points: the dotted key (`model.device`), the line, and whether
//! the key is one that moved to another section.

use toml_edit::{ImDocument, Item, TableLike};

/// Fields that used to exist, with their new home. Reading an old name fails with the new one.
const MOVED: &[(&str, &str)] = &[
    ("sft.max_seq_len", "data.max_seq_len"),
    ("workers.learner_addr", "learner.addr"),
    ("workers.auth_token", "learner.auth_token"),
    ("workers.max_message_mib", "learner.max_message_mib"),
];

/// The new home of a moved dotted key.
pub(super) fn moved_to(key: &str) -> Option<&'static str> {
    MOVED.iter().find(|(from, _)| *from == key).map(|(_, to)| *to)
}

/// 1-based line of byte `offset`.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The dotted key whose name or value covers byte `offset` of `text` (array-of-tables entries
/// and array elements are named by their key, without an index). `None` when `text` does not
/// parse or nothing there covers `offset`.
pub(super) fn key_at(text: &str, offset: usize) -> Option<String> {
    let doc = ImDocument::parse(text).ok()?;
    let mut path = Vec::new();
    find(doc.as_table(), offset, &mut path).then(|| path.join("."))
}

fn find(table: &dyn TableLike, offset: usize, path: &mut Vec<String>) -> bool {
    for (name, item) in table.iter() {
        path.push(name.to_string());
        let on_key = table.get_key_value(name).and_then(|(k, _)| k.span()).is_some_and(|s| covers(&s, offset));
        if on_key || in_item(item, offset, path) {
            return true;
        }
        path.pop();
    }
    false
}

fn in_item(item: &Item, offset: usize, path: &mut Vec<String>) -> bool {
    if let Some(tables) = item.as_array_of_tables() {
        return tables.iter().any(|t| find(t, offset, path));
    }
    if let Some(table) = item.as_table_like() {
        if find(table, offset, path) {
            return true;
        }
    }
    item.span().is_some_and(|s| covers(&s, offset))
}

/// Empty spans (at end of file) still cover their start.
fn covers(span: &std::ops::Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_values_names_and_nested_tables() {
        let text = "top = 1\n[model]\ndevice = \"gpu0\"\n[workers]\ndevices = [\"cpu\", \"cuda:x\"]\n\
                    [[reward.components]]\nname = \"regex\"\nparams = { pattern = \"a\" }\n";
        let at = |needle: &str| key_at(text, text.find(needle).unwrap());
        assert_eq!(at("1\n").as_deref(), Some("top"));
        assert_eq!(at("\"gpu0\"").as_deref(), Some("model.device"));
        assert_eq!(at("device =").as_deref(), Some("model.device"));
        assert_eq!(at("\"cuda:x\"").as_deref(), Some("workers.devices"));
        assert_eq!(at("\"regex\"").as_deref(), Some("reward.components.name"));
        assert_eq!(at("\"a\"").as_deref(), Some("reward.components.params.pattern"));
        assert_eq!(key_at("[model\n", 1), None);
        assert_eq!(line_of(text, text.find("devices").unwrap()), 5);
    }

    #[test]
    fn moved_keys_name_their_new_home() {
        assert_eq!(moved_to("sft.max_seq_len"), Some("data.max_seq_len"));
        assert_eq!(moved_to("workers.learner_addr"), Some("learner.addr"));
        assert_eq!(moved_to("workers.devices"), None);
    }
}
