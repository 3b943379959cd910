"""Excel's own password encryption (ECMA-376 Agile) for the master and every export.

Why Excel's encryption rather than a zip password or GPG: the person receiving an export opens it in
Excel, types the password and works; nothing else to install.  msoffcrypto-tool writes and reads the
same format Excel does.  The password comes from ``--password`` or the ``XLCRM_PASSWORD``
environment variable (so it stays out of shell history and scheduled-task definitions).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from xlcrm.errors import UnreadableWorkbook, XlcrmError

#: Environment variable consulted when no --password is given.
PASSWORD_ENV = "XLCRM_PASSWORD"

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ENCRYPTED_STREAM = "EncryptedPackage".encode("utf-16-le")


def resolve_password(explicit: str | None) -> str | None:
    """``--password`` wins; else ``XLCRM_PASSWORD``; an empty value means "no password"."""
    if explicit:
        return explicit
    return os.environ.get(PASSWORD_ENV) or None


def is_encrypted(data: bytes) -> bool:
    """An encrypted .xlsx is an OLE compound file holding an ``EncryptedPackage`` stream."""
    return data[:8] == _OLE_MAGIC and _ENCRYPTED_STREAM in data


def encrypt_bytes(plain: bytes, password: str) -> bytes:
    """Encrypt a plain .xlsx (bytes) the way Excel's "Encrypt with Password" does."""
    if not password:
        raise XlcrmError("an empty password cannot protect a workbook; give a non-empty --password")
    from msoffcrypto.format.ooxml import OOXMLFile

    out = io.BytesIO()
    OOXMLFile(io.BytesIO(plain)).encrypt(password, out)
    return out.getvalue()


def _require_password(password: str | None, path: str | Path) -> None:
    if not password:
        raise UnreadableWorkbook(f"the workbook is password-protected; give --password or set "
                                 f"{PASSWORD_ENV}", path=str(path))


def decrypt_bytes(data: bytes, password: str | None, *, path: str | Path) -> bytes:
    """Plain .xlsx bytes from ``data``; passes unencrypted workbooks through unchanged.

    A missing or wrong password is one :class:`UnreadableWorkbook` line naming the file.
    """
    if not is_encrypted(data):
        return data
    _require_password(password, path)
    import msoffcrypto
    from msoffcrypto.exceptions import InvalidKeyError

    try:
        office = msoffcrypto.OfficeFile(io.BytesIO(data))
        office.load_key(password=password)
        out = io.BytesIO()
        office.decrypt(out)
    except InvalidKeyError:
        raise UnreadableWorkbook(f"wrong password for this workbook; check --password / {PASSWORD_ENV}",
                                 path=str(path)) from None
    except Exception as exc:  # msoffcrypto raises several unrelated types for damaged containers
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UnreadableWorkbook(f"cannot decrypt this workbook ({first})", path=str(path)) from None
    return out.getvalue()


def read_workbook_bytes(path: str | Path, password: str | None) -> bytes:
    """The plain bytes of a workbook on disk, decrypting it when it is protected."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise UnreadableWorkbook("file not found; check the path", path=str(p)) from None
    except OSError as exc:
        raise UnreadableWorkbook(f"cannot be read ({exc.strerror})", path=str(p)) from None
    return decrypt_bytes(data, password, path=p)


def protect_file(path: str | Path, password: str) -> None:
    """Encrypt a finished workbook in place, atomically (temp file + ``os.replace``)."""
    p = Path(path)
    sealed = encrypt_bytes(p.read_bytes(), password)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(sealed)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)


def check_file_password(path: str | Path, password: str | None) -> bool:
    """Is ``path`` encrypted?  Refuses (one line) when it is and the password is missing or wrong.

    Checks the key only (no decryption), so a command that will not read the workbook can still
    refuse before it changes anything: rewriting an encrypted master without its password would
    either drop the protection or change the password behind the owner's back.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise UnreadableWorkbook(f"cannot be read ({exc.strerror})", path=str(p)) from None
    if not is_encrypted(data):
        return False
    _require_password(password, p)
    import msoffcrypto
    from msoffcrypto.exceptions import InvalidKeyError

    try:
        msoffcrypto.OfficeFile(io.BytesIO(data)).load_key(password=password, verify_password=True)
    except InvalidKeyError:
        raise UnreadableWorkbook(f"wrong password for this workbook; check --password / {PASSWORD_ENV}",
                                 path=str(p)) from None
    except Exception as exc:  # msoffcrypto raises several unrelated types for damaged containers
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UnreadableWorkbook(f"cannot decrypt this workbook ({first})", path=str(p)) from None
    return True
