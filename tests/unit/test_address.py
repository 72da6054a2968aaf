"""Location addresses (recovery/repository/address.py): what is taken, what is refused."""

from __future__ import annotations

import pytest

from recovery.errors import UsageError
from recovery.repository.address import Address, parse_address


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("smb://nas/backups", Address("smb", "nas", None, None, "backups", "")),
        (
            "smb://alice@nas.local:4445/backups/pc1/",
            Address("smb", "nas.local", 4445, "alice", "backups", "pc1"),
        ),
        ("sftp://host/srv/backups", Address("sftp", "host", None, None, "", "srv/backups")),
        (
            "sftp://bob@10.0.0.2:2222/~/imgs",
            Address("sftp", "10.0.0.2", 2222, "bob", "", "imgs", home=True),
        ),
        ("sftp://[::1]:22/~", Address("sftp", "::1", 22, None, "", "", home=True)),
        (
            "s3://s3.example.com/my-bucket",
            Address("s3", "s3.example.com", None, None, "my-bucket", ""),
        ),
        (
            "s3+http://127.0.0.1:8333/bkt/a/b",
            Address("s3+http", "127.0.0.1", 8333, None, "bkt", "a/b"),
        ),
        ("SMB://nas/share%20x", Address("smb", "nas", None, None, "share x", "")),
        ("nfs://10.0.2.2/export", Address("nfs", "10.0.2.2", None, None, "export", "")),
        (
            "nfs://nas.local:2050/srv/backups/pc1/",
            Address("nfs", "nas.local", 2050, None, "srv", "backups/pc1"),
        ),
        ("nfs://[fd00::2]/e", Address("nfs", "fd00::2", None, None, "e", "")),
    ],
)
def test_addresses_parse(text: str, want: Address) -> None:
    assert parse_address(text) == want


def test_printed_address_round_trips() -> None:
    for text in (
        "smb://alice@nas:4445/backups/pc1",
        "sftp://h/~/x",
        "s3+http://h:1/bkt/p",
        "nfs://nas:2049/export/pc1",
    ):
        assert str(parse_address(text)) == text
        assert parse_address(str(parse_address(text))) == parse_address(text)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("ftp://host/x", "smb://"),
        ("smbb://host/x", "sftp://"),
        ("nfs://host", "export"),
        ("nfs://alice@host/export", "takes no user"),
        ("nfs://host/export/../x", "'..'"),
        ("smb://alice:hunter2@nas/share", "RECOVERY_PASSWORD"),
        ("smb://nas", "share"),
        ("smb://nas/", "share"),
        ("s3://host", "bucket"),
        ("s3://host/Not_A_Bucket", "bucket name"),
        ("s3://key@host/bkt", "AWS_ACCESS_KEY_ID"),
        ("sftp://host", "absolute"),
        ("sftp://host:99999/x", "port"),
        ("sftp://ho st/x", "server"),
        ("smb://nas/share/../etc", "'..'"),
    ],
)
def test_bad_addresses_are_refused_in_one_line(text: str, says: str) -> None:
    with pytest.raises(UsageError) as refused:
        parse_address(text)
    message = str(refused.value)
    assert says in message
    assert "\n" not in message
    assert "hunter2" not in message
