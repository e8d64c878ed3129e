"""Vendor detection APIs as Beam ModelHandlers."""

from synthsieve.inference.remote.base import ApiAuthError, ApiConfig, RemoteApiModelHandler
from synthsieve.inference.remote.hive import HiveBackend

BACKENDS = {"hive": HiveBackend}

__all__ = ["BACKENDS", "ApiAuthError", "ApiConfig", "RemoteApiModelHandler"]
