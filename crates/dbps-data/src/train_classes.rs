//! A single-label task can be learnt only from a training split that holds at least two of
//! its classes: with one, every prediction of that class is right by construction, and the
//! classes seen only in validation or test can never be predicted. Datasets that list their
//! files with a split each (slides, feature bags) check it here; an image folder's classes are
//! its non-empty class folders of train/, whose validation carve-out keeps one image of each.

use std::path::Path;

use crate::DataError;

/// Checks that the training files (`by_class`: each class's files, indexed as `classes`) hold
/// at least two classes; `source` is the file or folder that lists them, named in the error.
pub(crate) fn check_train_classes<T>(
    source: &Path,
    classes: &[String],
    by_class: &[(usize, Vec<T>)],
    fix: &str,
) -> Result<(), DataError> {
    let present: Vec<&str> = by_class
        .iter()
        .filter(|(_, files)| !files.is_empty())
        .filter_map(|(class, _)| classes.get(*class).map(String::as_str))
        .collect();
    if present.len() >= 2 {
        return Ok(());
    }
    let absent: Vec<&str> = classes
        .iter()
        .map(String::as_str)
        .filter(|c| !present.contains(c))
        .collect();
    Err(DataError::Folder {
        path: source.to_path_buf(),
        problem: format!(
            "the training split holds {} (class(es) without a training example: {}); a classifier cannot learn to tell classes apart from one",
            match present.as_slice() {
                [] => "no example".to_string(),
                [one] => format!("examples of one class only (`{one}`)"),
                _ => unreachable!("two or more classes return early"),
            },
            if absent.is_empty() {
                "none".to_string()
            } else {
                absent
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        fix: fix.into(),
    })
}
