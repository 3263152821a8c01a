//! scripts/setup.sh finds libclang the way bindgen does, on fake roots.

use std::path::Path;
use std::process::Command;

use crate::common::root;

/// `setup.sh --find-libclang ROOT` with `files` created (empty) under ROOT.
fn find(files: &[&str]) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    for f in files {
        let path = dir.path().join(f);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"").unwrap();
    }
    let out = Command::new("bash")
        .arg(root().join("scripts/setup.sh"))
        .arg("--find-libclang")
        .arg(dir.path())
        .output()
        .unwrap();
    let found = String::from_utf8(out.stdout).unwrap();
    match out.status.code() {
        Some(0) => {
            let found = found.trim().to_string();
            let rel = Path::new(&found)
                .strip_prefix(dir.path())
                .unwrap_or_else(|_| panic!("{found} is under the fake root"))
                .to_string_lossy()
                .into_owned();
            Some(rel)
        }
        Some(1) => {
            assert!(found.is_empty(), "{found}");
            None
        }
        other => panic!("exit {other:?}: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

#[test]
fn libclang_cpp_alone_is_not_libclang() {
    // a stock Debian 12 image: libclang-cpp14 but no libclang1 / libclang-dev
    assert_eq!(
        find(&[
            "usr/lib/llvm-14/lib/libclang-cpp.so.14",
            "usr/lib/x86_64-linux-gnu/libclang-cpp.so.14",
        ]),
        None
    );
    assert_eq!(find(&[]), None);
}

#[test]
fn the_libraries_bindgen_loads_are_found() {
    for (files, want) in [
        // libclang-dev
        (
            vec![
                "usr/lib/llvm-14/lib/libclang-cpp.so.14",
                "usr/lib/llvm-14/lib/libclang.so",
            ],
            "usr/lib/llvm-14/lib/libclang.so",
        ),
        // libclang1-14 alone
        (
            vec!["usr/lib/x86_64-linux-gnu/libclang-14.so.1"],
            "usr/lib/x86_64-linux-gnu/libclang-14.so.1",
        ),
        (
            vec!["usr/lib/llvm-15/lib/libclang.so.1"],
            "usr/lib/llvm-15/lib/libclang.so.1",
        ),
        // macOS: the Xcode command-line tools, Homebrew's llvm
        (
            vec!["Library/Developer/CommandLineTools/usr/lib/libclang.dylib"],
            "Library/Developer/CommandLineTools/usr/lib/libclang.dylib",
        ),
        (
            vec!["opt/homebrew/opt/llvm/lib/libclang.dylib"],
            "opt/homebrew/opt/llvm/lib/libclang.dylib",
        ),
    ] {
        assert_eq!(find(&files).as_deref(), Some(want), "{files:?}");
    }
}
