"""The names the network backends use for the secrets provider of
:mod:`recovery.repository.secrets`, which is the one seam for passphrases and network
credentials alike. Nothing else lives here."""

from __future__ import annotations

from recovery.repository.secrets import EnvironmentSecrets as EnvironmentCredentials
from recovery.repository.secrets import S3Keys
from recovery.repository.secrets import Secrets as Credentials
from recovery.repository.secrets import current as current_credentials
from recovery.repository.secrets import use as use_credentials

__all__ = [
    "Credentials",
    "EnvironmentCredentials",
    "S3Keys",
    "current_credentials",
    "use_credentials",
]
