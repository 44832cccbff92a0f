"""Build flag parsing: --output, caches, --from, --tag, --platform (upstream grammar)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envd_core.envdfile.buildflags import (
    CacheSpec,
    FromSpec,
    OutputSpec,
    default_tag,
    locate_build_file,
    normalize_tag,
    parse_export_cache,
    parse_from,
    parse_import_cache,
    parse_output,
    parse_platforms,
    platform_tag,
    read_csv_record,
)
from envd_core.envdfile.errors import BuildOptionError
from envd_core.errors import EnvdError, ValidationError
from envd_core.imageref import parse_reference


# ------------------------------------------------------------------ CSV
@pytest.mark.parametrize("text, fields", [
    ("a=1,b=2", ["a=1", "b=2"]),
    ('"a=1,2",b', ["a=1,2", "b"]),
    ('"say ""hi""",x', ['say "hi"', "x"]),
    ("a=1,,b", ["a=1", "", "b"]),
    ("a,b\nc,d", ["a", "b"]),
    ("\n\na=1", ["a=1"]),
    (' a = 1 ', [" a = 1 "]),
])
def test_csv_record_like_go(text: str, fields: list[str]) -> None:
    assert read_csv_record(text, "--output") == fields


@pytest.mark.parametrize("text, words", [
    ('a"b', 'bare " in non-quoted-field'),
    ('"ab', 'extraneous or missing " in quoted-field'),
    ('"a"b', 'extraneous or missing " in quoted-field'),
    ("", "is empty"),
])
def test_csv_errors(text: str, words: str) -> None:
    with pytest.raises(BuildOptionError, match=words):
        read_csv_record(text, "--output")


# ------------------------------------------------------------------ --output
def test_output_absent() -> None:
    assert parse_output(None) is None
    assert parse_output("") is None


def test_output_requires_type() -> None:
    with pytest.raises(BuildOptionError) as info:
        parse_output("name=x,push=true")
    assert str(info.value).startswith("--output requires type=<type>")
    assert info.value.exit_code == 2


def test_output_rejects_output_key() -> None:
    with pytest.raises(BuildOptionError) as info:
        parse_output("type=local,output=/tmp/x")
    assert str(info.value) == "output=/tmp/x not supported for --output, you meant dest=/tmp/x?"


def test_output_keys_are_lowercased_and_passed_verbatim() -> None:
    out = parse_output("TYPE=image,Name=reg.local/x:1,PUSH=true")
    assert out == OutputSpec("image", {"name": "reg.local/x:1", "push": "true"}, None, None)


def test_output_local_needs_dest(tmp_path: Path) -> None:
    with pytest.raises(BuildOptionError, match="output directory is required for local"):
        parse_output("type=local")
    out = parse_output(f"type=local,dest={tmp_path}")
    assert (out.dest, out.dest_kind, out.attrs) == (str(tmp_path), "dir", {})


@pytest.mark.parametrize("kind", ["tar", "oci", "docker"])
def test_output_file_exporters(tmp_path: Path, kind: str) -> None:
    out = parse_output(f"type={kind},dest={tmp_path / 'x.tar'},name=a")
    assert (out.dest_kind, out.attrs) == ("file", {"name": "a"})
    with pytest.raises(BuildOptionError, match="destination file is a directory"):
        parse_output(f"type={kind},dest={tmp_path}")
    for dest in ("", ",dest=-"):
        assert parse_output(f"type={kind}{dest}", stdout_is_tty=False).dest_kind == "stdout"
        with pytest.raises(BuildOptionError, match="refusing to write to console"):
            parse_output(f"type={kind}{dest}", stdout_is_tty=True)


@pytest.mark.parametrize("kind", ["image", "moby", "registry"])
def test_output_dest_not_allowed_elsewhere(kind: str) -> None:
    with pytest.raises(BuildOptionError, match=f"output /x is not supported by {kind} exporter"):
        parse_output(f"type={kind},dest=/x")


def test_output_field_without_equals() -> None:
    with pytest.raises(BuildOptionError, match="invalid value push"):
        parse_output("type=image,push")


# ------------------------------------------------------------------ caches
def test_export_cache() -> None:
    assert parse_export_cache("reg.local/cache:x") == [
        CacheSpec("registry", {"mode": "min", "ref": "reg.local/cache:x"})]
    assert parse_export_cache(["type=local,dest=/c,mode=max", ""]) == [
        CacheSpec("local", {"dest": "/c", "mode": "max"})]
    assert parse_export_cache("type=inline") == [CacheSpec("inline", {"mode": "min"})]
    with pytest.raises(BuildOptionError, match="--export-cache requires type=<type>"):
        parse_export_cache("type=,ref=x")


def test_import_cache() -> None:
    assert parse_import_cache(["reg/x"]) == [CacheSpec("registry", {"ref": "reg/x"})]
    assert parse_import_cache("type=local,src=/c") == [CacheSpec("local", {"src": "/c"})]
    with pytest.raises(BuildOptionError, match="--import-cache requires type=<type>"):
        parse_import_cache("type=,src=/c")
    assert parse_import_cache(None) == []


# ------------------------------------------------------------------ --from
@pytest.mark.parametrize("text, spec", [
    (None, FromSpec("build.envd", "build")),
    ("", FromSpec("build.envd", "build")),
    ("x.envd", FromSpec("x.envd", "build")),
    ("x.envd:gpu", FromSpec("x.envd", "gpu")),
    (":gpu", FromSpec("build.envd", "gpu")),
    ("x.envd:", FromSpec("x.envd", "build")),
])
def test_from(text: str | None, spec: FromSpec) -> None:
    assert parse_from(text) == spec


def test_from_two_colons() -> None:
    with pytest.raises(BuildOptionError, match="invalid from format, expected `file:func`"):
        parse_from("a:b:c")


def test_locate_build_file(tmp_path: Path) -> None:
    (tmp_path / "build.envd").write_text("")
    assert locate_build_file(tmp_path, FromSpec()) == tmp_path / "build.envd"
    assert locate_build_file(tmp_path / "nope", FromSpec(), cwd=tmp_path) == \
        tmp_path / "build.envd"


# ------------------------------------------------------------------ --tag
def test_default_tag(tmp_path: Path) -> None:
    ctx = tmp_path / "my-env"
    ctx.mkdir()
    assert default_tag(ctx) == "my-env:dev"
    assert normalize_tag(None, ctx) == "my-env:dev"


def test_tag_lowercased_with_warning() -> None:
    warnings: list[str] = []
    assert normalize_tag("MyEnv:Dev", warn=warnings.append) == "myenv:Dev"
    assert len(warnings) == 1 and "MyEnv" in warnings[0]


def test_tag_spaces_removed_and_validated() -> None:
    assert normalize_tag("my env:dev") == "myenv:dev"
    assert normalize_tag("localhost:5000/team/app:1.0") == "localhost:5000/team/app:1.0"
    with pytest.raises(BuildOptionError, match="failed to parse the name `a//b`"):
        normalize_tag("a//b")
    with pytest.raises(BuildOptionError, match="cannot specify 64-byte hexadecimal strings"):
        normalize_tag("a" * 64)


def test_reference_parse() -> None:
    ref = parse_reference("reg.local:5000/a/b:v1@sha256:" + "0" * 64)
    assert (ref.name, ref.tag, ref.domain) == ("reg.local:5000/a/b", "v1", "reg.local:5000")
    with pytest.raises(ValidationError, match="must be lowercase"):
        parse_reference("team/Upper")


# ------------------------------------------------------------------ --platform
def test_platforms() -> None:
    assert parse_platforms(None) == ["linux/amd64"]
    assert parse_platforms("linux/x86_64, linux/arm64/v8,arm64") == ["linux/amd64", "linux/arm64"]
    assert parse_platforms(["linux/arm/v7"]) == ["linux/arm/v7"]
    for bad in ("linux/", "plan9/amd64", "linux/vax", "a/b/c/d"):
        with pytest.raises(BuildOptionError, match="--platform"):
            parse_platforms(bad)
    assert platform_tag("x:dev", "linux/arm64", multi=True) == "x:dev-linux-arm64"
    assert platform_tag("x:dev", "linux/arm64", multi=False) == "x:dev"


# ------------------------------------------------------------------ properties
_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_csvish = st.lists(
    st.sampled_from(["type=", "local", "tar", "image", "dest=", "-", ",", '"', "=", "output=",
                     "name=", "x", "\n", " ", "TYPE", "/tmp/none"]),
    max_size=12,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_text, _csvish), st.booleans())
def test_output_parser_only_raises_envd_errors(text: str, tty: bool) -> None:
    try:
        out = parse_output(text, stdout_is_tty=tty)
    except EnvdError as exc:
        assert str(exc) and "\n" not in str(exc).replace("\\n", "")
    else:
        assert out is None or out.type


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_text, _csvish), max_size=3))
def test_cache_parsers_only_raise_envd_errors(values: list[str]) -> None:
    for parse in (parse_export_cache, parse_import_cache):
        try:
            entries = parse(values)
        except EnvdError:
            continue
        assert all(e.type for e in entries)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_text, st.from_regex(r"[A-Za-z0-9 ._:/@-]{0,30}", fullmatch=True)))
def test_tag_from_platform_parsers_only_raise_envd_errors(text: str) -> None:
    for call in (lambda: normalize_tag(text or "x"), lambda: parse_from(text),
                 lambda: parse_platforms(text)):
        with contextlib.suppress(EnvdError):
            call()


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}(:[a-z0-9]{1,8})?", fullmatch=True))
def test_normalised_tags_are_fixed_points(text: str) -> None:
    first = normalize_tag(text)
    assert normalize_tag(first) == first
    assert str(parse_reference(first)) == first
