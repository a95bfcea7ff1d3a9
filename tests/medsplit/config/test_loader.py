"""The one loader and the one error format: duplicate keys, unknown keys, bounds, types, nested keys and fixes."""

from __future__ import annotations

import re
from typing import Annotated

import pytest
from pydantic import AfterValidator, Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator

from medsplit.config.loader import StrictModel, key_path, load_yaml, one_of, parse_yaml, problem, validate
from medsplit.errors import ConfigError


class Leaf(StrictModel):
    size: Annotated[tuple[Annotated[StrictInt, Field(ge=1)], ...], Field(min_length=1, examples=[[1, 32, 32]])]
    kind: Annotated[StrictStr, AfterValidator(one_of(("dicom", "table")))] = "dicom"


class Section(StrictModel):
    unused_keys = {"legacy": "the site says it now"}

    count: Annotated[StrictInt, Field(ge=1, le=10)] = 1
    rate: Annotated[StrictFloat, Field(gt=0, allow_inf_nan=False)] = 0.5
    flag: StrictBool = False
    leaves: dict[StrictStr, Leaf] = {}
    items: tuple[Leaf, ...] = ()

    @field_validator("count")
    @classmethod
    def _even(cls, count: int) -> int:
        if count % 2:
            raise problem(f"{count} is odd", "give an even count")
        return count


class Top(StrictModel):
    name: StrictStr = Field(examples=["study"], description="what the study is called")
    section: Section = Section(count=2)


@pytest.fixture
def error(one_format):
    """The error ``validate(Top, data)`` raises, split into its parts."""

    def check(data, path="f.yaml") -> re.Match:
        with pytest.raises(ConfigError) as exc:
            validate(Top, data, path)
        return one_format(exc.value)

    return check


def test_a_key_given_twice_is_refused_with_its_lines(tmp_path, one_format):
    path = tmp_path / "f.yaml"
    path.write_text("name: a\nsection:\n  count: 2\n  count: 4\n")
    with pytest.raises(ConfigError) as exc:
        load_yaml(path)
    m = one_format(exc.value)
    assert (m["file"], m["key"]) == (str(path), "(YAML)")
    assert "'count' appears twice (first on line 3)" in m["problem"] and "line 4" in m["problem"]


def test_yaml_syntax_and_missing_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"x.yaml: \(YAML\): not valid YAML"):
        parse_yaml("a: [unclosed\n", "x.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "nope.yaml", "site config")


def test_unknown_key_suggests_the_closest_and_lists_the_allowed(error):
    m = error({"name": "a", "section": {"cuont": 2}})
    assert m["key"] == "section.cuont" and "did you mean 'count'" in m["problem"]
    assert "count, rate, flag, leaves, items" in m["fix"]


def test_unknown_key_is_reported_before_the_missing_one_it_hides(error):
    m = error({"nmae": "a"})
    assert m["key"] == "nmae" and "did you mean 'name'" in m["problem"]


def test_unknown_key_in_lists_and_mappings_of_sections_names_its_allowed_keys(error):
    m = error({"name": "a", "section": {"count": 2, "leaves": {"ct": {"size": [1], "sise": 2}}}})
    assert m["key"] == "section.leaves.ct.sise" and "did you mean 'size'" in m["problem"] and "size, kind" in m["fix"]
    m = error({"name": "a", "section": {"count": 2, "items": [{"size": [1]}, {"size": [1], "knd": "x"}]}})
    assert m["key"] == "section.items[1].knd" and "did you mean 'kind'" in m["problem"]


def test_an_unused_key_says_it_is_not_used_and_can_be_deleted(error):
    m = error({"name": "a", "section": {"count": 2, "legacy": True}})
    assert m["key"] == "section.legacy" and "not used (the site says it now)" in m["problem"]
    assert m["fix"] == "delete 'legacy'; nothing reads it"


@pytest.mark.parametrize("section,key,problem_,fix", [
    ({"count": 0}, "section.count", "0 is out of range: it must be >= 1", "give a value >= 1"),
    ({"count": 12}, "section.count", "12 is out of range: it must be <= 10", "give a value <= 10"),
    ({"rate": 0}, "section.rate", "0 is out of range: it must be > 0", "give a value > 0"),
    ({"rate": float("inf")}, "section.rate", "inf is not a finite number", "write a finite number"),
    ({"count": "2"}, "section.count", "'2' is not an integer", "write an integer"),
    ({"count": True}, "section.count", "True is not an integer", "write an integer"),
    ({"rate": "fast"}, "section.rate", "'fast' is not a number", "write a number"),
    ({"flag": 1}, "section.flag", "1 is not true or false", "write true or false"),
    ({"count": 3}, "section.count", "3 is odd", "give an even count"),
])
def test_bounds_and_types_name_the_key_and_the_fix(section, key, problem_, fix, error):
    m = error({"name": "a", "section": {"count": 2, **section}})
    assert (m["key"], m["fix"]) == (key, fix) and m["problem"].startswith(problem_), m.group(0)


@pytest.mark.parametrize("leaf,key,problem_,fix", [
    ({"size": 5}, "section.leaves.ct.size", "5 is not a list", "write a list, e.g. [1, 32, 32]"),
    ({"size": []}, "section.leaves.ct.size", "is empty", "give at least 1 item, e.g. [1, 32, 32]"),
    ({"size": [1, "x"]}, "section.leaves.ct.size[1]", "'x' is not an integer", "write an integer"),
    ({"size": [1, 0]}, "section.leaves.ct.size[1]", "0 is out of range", "give a value >= 1"),
    ({}, "section.leaves.ct.size", "is required", "add 'size: [1, 32, 32]'"),
    ({"size": [1], "kind": "tabel"}, "section.leaves.ct.kind", "'tabel' is not one of dicom, table "
     "(did you mean 'table'?)", "use one of: dicom, table"),
])
def test_lists_and_nested_sections(leaf, key, problem_, fix, error):
    m = error({"name": "a", "section": {"count": 2, "leaves": {"ct": leaf}}})
    assert m["key"] == key and m["problem"].startswith(problem_) and m["fix"].startswith(fix), m.group(0)


def test_a_section_of_the_wrong_type_lists_its_keys(error):
    m = error({"name": "a", "section": [1, 2]})
    assert (m["key"], m["problem"]) == ("section", "[1, 2] is not a mapping")
    assert m["fix"].startswith("write it as 'key: value' lines; allowed keys: count, rate")


def test_missing_key_gives_the_example_and_what_it_is(error):
    m = error({})
    assert (m["key"], m["problem"], m["fix"]) == ("name", "is required", "add 'name: study' (what the study is called)")


def test_a_mapping_key_that_is_not_text(error):
    m = error({"name": "a", "section": {"count": 2, "leaves": {1: {"size": [1]}}}})
    assert m["key"] == "section.leaves[1]" and "the key 1 is not text" in m["problem"]


def test_empty_files_and_sections_of_their_own(error):
    assert error(None)["problem"] == "the file is empty"
    assert error([1])["problem"] == "expected a mapping of keys, got list"
    with pytest.raises(ConfigError) as exc:
        validate(Section, {"count": 0}, "site.yaml", prefix="node")
    assert str(exc.value).startswith("site.yaml: node.count: 0 is out of range")


def test_without_a_file_the_key_still_leads():
    with pytest.raises(ConfigError) as exc:
        validate(Top, {"name": 1})
    assert str(exc.value) == "name: 1 is not text\n  fix: write text, e.g. study"


def test_long_values_are_shortened(error):
    m = error({"name": "a", "section": {"count": "x" * 500}})
    assert len(m["problem"]) < 100 and "..." in m["problem"]


def test_key_path():
    assert key_path(("sites", 0, "modalities", "image")) == "sites[0].modalities.image"
    assert key_path(()) == ""
