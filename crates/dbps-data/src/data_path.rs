//! Paths read from data files (labels.csv), confined to the folder the file describes.

use std::path::{Component, Path, PathBuf};

/// `name` as a path inside its root: relative, without `..`, with `.` components dropped (so
/// `./a.tif` and `a.tif` are one slide); `None` when it would leave the root — an absolute
/// path, a drive prefix or a `..` — or names nothing.
pub(crate) fn inside_root(name: &str) -> Option<PathBuf> {
    let mut inside = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => inside.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!inside.as_os_str().is_empty()).then_some(inside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_root_are_refused() {
        for bad in ["../x.tif", "/etc/passwd", "a/../../x", "a/..", ".", ""] {
            assert_eq!(inside_root(bad), None, "{bad}");
        }
        assert_eq!(inside_root("./a.tif"), Some(PathBuf::from("a.tif")));
        assert_eq!(inside_root("sub/./b.tif"), Some(PathBuf::from("sub/b.tif")));
        assert_eq!(inside_root("..a.tif"), Some(PathBuf::from("..a.tif")));
    }
}
