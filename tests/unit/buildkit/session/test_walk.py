"""The sender's walk: fsutil order, Go mode bits, filters, follow paths, hardlinks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from envd_core.buildkit.session.walk import (
    MODE_DIR,
    MODE_SYMLINK,
    Filter,
    go_mode,
    is_regular,
    posix_mode,
    relpath_ok,
    resolve_follow_paths,
    walk,
)


def make_tree(root: Path) -> None:
    for rel, data in {
        "b.txt": "b",
        "a/z.txt": "z",
        "a/B.txt": "B",
        "a-b/x": "x",
        "node_modules/pkg/index.js": "js",
        "src/main.py": "print()",
        "src/main.pyc": "\0",
        "src/keep.pyc": "\0",
    }.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data)
    (root / "link").symlink_to("b.txt")


def paths(root: Path, flt: Filter) -> list[str]:
    return [e.path for e in walk(str(root), flt)]


def test_order_is_preorder_bytewise(tmp_path: Path) -> None:
    make_tree(tmp_path)
    assert paths(tmp_path, Filter.build()) == [
        "a",
        "a/B.txt",
        "a/z.txt",
        "a-b",
        "a-b/x",
        "b.txt",
        "link",
        "node_modules",
        "node_modules/pkg",
        "node_modules/pkg/index.js",
        "src",
        "src/keep.pyc",
        "src/main.py",
        "src/main.pyc",
    ]


def test_excludes_with_negation_keep_parent_dirs(tmp_path: Path) -> None:
    make_tree(tmp_path)
    flt = Filter.build(excludes=["node_modules", "src", "!src/keep.pyc"])
    assert paths(tmp_path, flt) == [
        "a",
        "a/B.txt",
        "a/z.txt",
        "a-b",
        "a-b/x",
        "b.txt",
        "link",
        "src",  # emitted lazily, only because something inside is re-included
        "src/keep.pyc",
    ]


def test_includes_emit_ancestors_first(tmp_path: Path) -> None:
    make_tree(tmp_path)
    assert paths(tmp_path, Filter.build(includes=["node_modules/pkg/index.js"])) == [
        "node_modules",
        "node_modules/pkg",
        "node_modules/pkg/index.js",
    ]
    assert paths(tmp_path, Filter.build(includes=["**/*.py"])) == ["src", "src/main.py"]


def test_follow_paths_resolve_symlinks(tmp_path: Path) -> None:
    make_tree(tmp_path)
    extra = resolve_follow_paths(str(tmp_path), ["link"])
    assert extra == ["b.txt"]
    assert paths(tmp_path, Filter.build(includes=["link", *extra])) == ["b.txt", "link"]


def test_entries_carry_go_modes_and_sizes(tmp_path: Path) -> None:
    make_tree(tmp_path)
    os.chmod(tmp_path / "b.txt", 0o640)
    os.link(tmp_path / "b.txt", tmp_path / "c-hard")
    entries = {e.path: e for e in walk(str(tmp_path), Filter.build())}
    assert entries["a"].mode & MODE_DIR
    assert entries["link"].mode & MODE_SYMLINK
    assert entries["link"].linkname == "b.txt" and entries["link"].size == 5
    assert is_regular(entries["b.txt"].mode) and entries["b.txt"].mode == 0o640
    assert entries["b.txt"].size == 1
    assert entries["c-hard"].linkname == "b.txt" and entries["c-hard"].size == 0
    assert entries["b.txt"].mtime_ns == os.lstat(tmp_path / "b.txt").st_mtime_ns


def test_mode_conversion_round_trips() -> None:
    for mode in (
        stat.S_IFREG | 0o644,
        stat.S_IFDIR | 0o755,
        stat.S_IFLNK | 0o777,
        stat.S_IFIFO | 0o600,
        stat.S_IFCHR | 0o666,
        stat.S_IFBLK | 0o660,
        stat.S_IFREG | stat.S_ISUID | stat.S_ISGID | 0o755,
        stat.S_IFDIR | stat.S_ISVTX | 0o777,
    ):
        assert posix_mode(go_mode(mode)) == mode
    assert go_mode(stat.S_IFDIR | 0o755) == (1 << 31) | 0o755
    assert go_mode(stat.S_IFREG | stat.S_ISUID | 0o755) == (1 << 23) | 0o755


def test_relpath_ok_rejects_escapes() -> None:
    assert relpath_ok("a/b")
    for bad in ("", "/etc/passwd", "../x", "a/../../x", "a\x00b"):
        assert not relpath_ok(bad)
