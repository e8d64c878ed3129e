"""Vendor detection APIs as Beam ModelHandlers."""

from synthsieve.inference.remote.base import (
    ApiAuthError,
    ApiConfig,
    ApiConfigError,
    ApiKeyMissing,
    RemoteApiModelHandler,
    endpoint_url,
)
from synthsieve.inference.remote.hive import HiveBackend
from synthsieve.inference.remote.nim import NimBackend
from synthsieve.inference.remote.sightengine import SightengineBackend

BACKENDS = {"hive": HiveBackend, "nim": NimBackend, "sightengine": SightengineBackend}

__all__ = ["BACKENDS", "ApiAuthError", "ApiConfig", "ApiConfigError", "ApiKeyMissing",
           "RemoteApiModelHandler", "endpoint_url"]
