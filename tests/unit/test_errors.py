"""Errors cross the executor -> driver boundary: they must pickle."""

from __future__ import annotations

import inspect
import pickle

import cloudpickle
import pytest

from sparkdl import errors
from sparkdl.errors import (
    ClusterCapacityError,
    ConfigError,
    CorruptModelError,
    ModelNotFoundError,
    PathExistsError,
    SchemaError,
    SparkDLError,
    TrainingCodeError,
    UntrustedCodeError,
    WorkerFailedError,
)

ALL = [obj for _, obj in inspect.getmembers(errors, inspect.isclass)
       if issubclass(obj, BaseException) and obj.__module__ == errors.__name__]


def test_all_known_classes_are_found():
    assert set(ALL) == {SparkDLError, ConfigError, SchemaError, ClusterCapacityError,
                        WorkerFailedError, UntrustedCodeError, CorruptModelError,
                        ModelNotFoundError, TrainingCodeError, PathExistsError}


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_subclasses_root(cls):
    assert issubclass(cls, SparkDLError)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps])
def test_pickle_round_trip(cls, dumps):
    err = cls("column 'x' has 3 null value(s); Received: x=None")
    again = pickle.loads(dumps(err))
    assert type(again) is cls
    assert str(again) == str(err)
    assert again.args == err.args


def test_builtin_bases():
    assert issubclass(ConfigError, ValueError)
    assert issubclass(SchemaError, ValueError)
    assert issubclass(ClusterCapacityError, RuntimeError)
    assert issubclass(WorkerFailedError, RuntimeError)
    assert issubclass(CorruptModelError, ValueError)
    assert issubclass(ModelNotFoundError, FileNotFoundError)


def test_catchable_as_root():
    with pytest.raises(SparkDLError):
        raise SchemaError("bad")
