"""The definition cache key's source and installation parts (envd_core.pipeline.sources): what
the resident server works out once (``prime``) gives the same key as the full work, and any
change on disk falls back to the full work."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from envd_core.pipeline import sources


@pytest.fixture(autouse=True)
def _no_prime() -> Iterator[None]:
    """Each test starts and ends with nothing primed (as a process of its own has it)."""
    signed, installed = dict(sources._SIGNED), list(sources._INSTALLED)
    primed, watched = list(sources._PRIMED_ROOTS), sources._WATCH in sys.meta_path
    sources._SIGNED.clear()
    sources._INSTALLED.clear()
    sources._PRIMED_ROOTS.clear()
    yield
    sources._SIGNED.clear()
    sources._SIGNED.update(signed)
    sources._INSTALLED[:] = installed
    sources._PRIMED_ROOTS[:] = primed
    if not watched and sources._WATCH in sys.meta_path:
        sys.meta_path.remove(sources._WATCH)


def _tree(tmp_path: Path) -> Path:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("x = 1\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "data.txt").write_text("not source\n")
    return pkg


def _primed(monkeypatch: pytest.MonkeyPatch, *roots: Path) -> None:
    monkeypatch.setattr(sources, "editable_roots", lambda: {str(r) for r in roots})
    sources.prime()


def test_a_primed_root_is_checked_not_walked(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = _tree(tmp_path)
    single = tmp_path / "single.py"
    single.write_text("X = 1\n")
    full = sources.source_signature([str(pkg), str(single)])
    _primed(monkeypatch, pkg, single)
    assert set(sources._SIGNED) == {str(pkg), str(single)}

    def no_walk(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("walked a primed root whose files did not change")

    monkeypatch.setattr(os, "walk", no_walk)
    assert sources.source_signature([str(pkg), str(single)]) == full


@pytest.mark.parametrize("change", ["edit", "new file", "removed", "new folder", "single"])
def test_any_change_gives_the_full_walks_signature(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   change: str) -> None:
    pkg = _tree(tmp_path)
    single = tmp_path / "single.py"
    single.write_text("X = 1\n")
    roots = [str(pkg), str(single)]
    before = sources.source_signature(roots)
    _primed(monkeypatch, pkg, single)
    if change == "edit":  # same size, the old mtime put back: only the ctime moves
        st = (pkg / "mod.py").stat()
        (pkg / "mod.py").write_text("x = 2\n")
        os.utime(pkg / "mod.py", ns=(st.st_atime_ns, st.st_mtime_ns))
    elif change == "new file":
        (pkg / "sub" / "extra.py").write_text("")
    elif change == "removed":
        (pkg / "mod.py").unlink()
    elif change == "new folder":
        (pkg / "more").mkdir()
        (pkg / "more" / "__init__.py").write_text("")
    else:
        single.write_text("X = 22\n")
    primed = sources.source_signature(roots)
    sources._SIGNED.clear()
    assert primed == sources.source_signature(roots) != before


def test_a_missing_root_is_signed_again_once_it_appears(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    later = tmp_path / "later"
    _primed(monkeypatch, later)
    empty = sources.source_signature([str(later)])
    later.mkdir()
    (later / "__init__.py").write_text("")
    assert sources.source_signature([str(later)])[0][2] == 1 != empty[0][2]


def test_the_installed_key_is_checked_by_mtime(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.setattr(sys, "path", [str(site)])
    full = sources.installed_key()
    _primed(monkeypatch)
    assert full == sources._INSTALLED
    listed: list[str] = []
    real_listdir = os.listdir

    def listdir(path: str = ".") -> list[str]:
        listed.append(path)
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    assert sources.installed_key() == full and listed == []
    (site / "tool-1.0.dist-info").mkdir()  # an install: the directory's mtime moves
    now = sources.installed_key()
    assert now != full and now[0][2] is True and listed == [str(site)]
    monkeypatch.setattr(sys, "path", [str(site), str(tmp_path)])  # another sys.path
    assert len(sources.installed_key()) == 2


def test_primed_roots_hold_until_something_is_imported(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """After prime, editable_roots reads no module name until an import reaches the finders
    or sys.modules changes size; then it scans again and finds the new editable package."""
    import importlib

    scans: list[int] = []
    real_scan = sources._scan_roots

    def scan() -> set[str]:
        scans.append(1)
        return real_scan()

    monkeypatch.setattr(sources, "_scan_roots", scan)
    sources.prime()
    assert sys.meta_path[0] is sources._WATCH and len(scans) == 1
    primed = sources.editable_roots()
    assert len(scans) == 1 and primed == real_scan()
    pkg = tmp_path / "conc_fresh_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        importlib.import_module("conc_fresh_pkg")
        assert str(pkg) in sources.editable_roots() and len(scans) == 2
    finally:
        sys.modules.pop("conc_fresh_pkg", None)
    sources._WATCH.seen = False  # as if primed again: only the size differs now
    monkeypatch.setitem(sys.modules, "conc_fake_module", None)
    sources.editable_roots()
    assert len(scans) == 3
