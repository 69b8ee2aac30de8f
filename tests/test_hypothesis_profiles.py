"""The Hypothesis profiles (tests/conftest.py): local runs explore new
examples, CI runs repeat the same ones, whatever a test's own ``@settings``."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import hypothesis_profile


@pytest.mark.parametrize(
    ("environ", "profile"),
    [
        ({}, "dev"),
        ({"CI": ""}, "dev"),
        ({"CI": "1"}, "ci"),
        ({"CI": "true"}, "ci"),
        ({"HYPOTHESIS_PROFILE": "ci"}, "ci"),
        ({"CI": "1", "HYPOTHESIS_PROFILE": "dev"}, "dev"),
    ],
)
def test_the_profile_follows_the_environment(environ, profile):
    assert hypothesis_profile(environ) == profile


def test_the_ci_profile_repeats_the_same_examples_and_keeps_none():
    ci = settings.get_profile("ci")

    assert (ci.derandomize, ci.database, ci.print_blob) == (True, None, True)
    assert ci.deadline is None


def test_the_dev_profile_explores():
    dev = settings.get_profile("dev")

    assert dev.derandomize is False
    assert dev.deadline is None


@settings(max_examples=1)
@given(st.none())
def decorated(_):
    """A test with its own settings, made at import as every test's are."""


def test_the_environments_profile_is_loaded_and_decorated_tests_keep_it(request):
    name = hypothesis_profile(os.environ)
    derandomize = settings.get_profile(name).derandomize
    decorated_tests = {"decorated": decorated}
    for item in request.session.items:  # every Hypothesis test of this run
        test = getattr(item, "obj", None)
        if hasattr(test, "_hypothesis_internal_use_settings"):
            decorated_tests[item.nodeid] = test

    assert settings.get_current_profile_name() == name
    assert settings().derandomize is derandomize
    undone = [
        nodeid
        for nodeid, test in decorated_tests.items()
        if test._hypothesis_internal_use_settings.derandomize is not derandomize
    ]
    assert undone == []
