"""The one error tree of the project.

Every error a user can cause or meet derives from :class:`RecoveryError`. Its message says what
went wrong and what to do; ``exit_code`` is what the CLI exits with. Only ``cli.main()`` and the
TUI's error dialog turn these into exit codes and text; library code raises, never exits.
Exceptions of libraries (OSError, zstd, pyudev) are translated at the module that calls
the library, so nothing above the device layer sees them.
"""

from __future__ import annotations


class RecoveryError(Exception):
    """Something went wrong."""

    exit_code = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self)


class UsageError(RecoveryError):
    """The command line is not right."""

    exit_code = 2


class Refused(RecoveryError):
    """A safety rule refused the operation before anything was written."""

    exit_code = 3


class NotConfirmed(Refused):
    """The operation was not confirmed."""


class DeviceError(RecoveryError):
    """A device could not be found, read or written."""

    exit_code = 4


class FileSystemError(RecoveryError):
    """A file system could not be understood."""

    exit_code = 5


class NotThisFileSystem(FileSystemError):
    """The data does not hold this kind of file system (a probe answer, not a failure)."""


class DamagedFileSystem(FileSystemError):
    """A file system's metadata is damaged or inconsistent."""


class RepositoryError(RecoveryError):
    """The backup location cannot be used."""

    exit_code = 6


class NotARepository(RepositoryError):
    """The directory is not a backup location."""


class UnsupportedVersion(RepositoryError):
    """The backup location or image was written by a newer version of recovery."""


class ImageNotFound(RepositoryError):
    """No such image in the backup location."""


class IntegrityError(RepositoryError):
    """Stored data does not match its hash: the backup is damaged."""

    exit_code = 7


class PeerImageError(IntegrityError):
    """An image made by another tool (Clonezilla, partclone) is damaged or of a kind we do not
    read."""


class RepositoryLocked(RepositoryError):
    """Another process is writing to this backup location."""


class PassphraseNeeded(RepositoryError):
    """The backup location is encrypted and no passphrase was given."""


class WrongPassphrase(RepositoryError):
    """The passphrase does not open this encrypted backup location."""


class Cancelled(RecoveryError):
    """The operation was cancelled."""

    exit_code = 130


class MissingTool(Refused):
    """A program the operation needs is not installed; nothing was written."""

    exit_code = 9
