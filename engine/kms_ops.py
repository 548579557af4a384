"""The engine's side of the built-in KMS (engine/kms.py): key material is made and wrapped here, before the command,
and unwrapped here for the objects that use it. Mixed into Engine, like IamOps."""

from __future__ import annotations

import os
import uuid
from typing import Any

from . import kms
from .crypto import MasterKeys
from .crypto.keys import UnwrapError
from .errors import ErrorCode, S3Error
from .iam import IamError
from .kms_commands import check_key_id
from .views.env import unpack


def _material_label(key_id: str, version: str) -> bytes:
    """What a version's wrapped material is bound to: it cannot be moved to another key or version."""
    return b"s4-kms\0" + key_id.encode() + b"\0" + version.encode()


class KmsOps:
    """Mixed into Engine; relies on its ``_run``, ``_read`` and ``sse_keys``."""

    _run: Any
    _read: Any
    sse_keys: MasterKeys

    async def _kms(self, name: str, args: dict[str, Any], actor: str) -> dict[str, Any]:
        result = await self._run(name, args, actor)
        if isinstance(result, IamError):
            raise result
        return result  # type: ignore[no-any-return]

    def _new_material(self, key_id: str) -> dict[str, Any]:
        version = uuid.uuid4().hex
        wrapped = self.sse_keys.wrap(os.urandom(32), _material_label(key_id, version))
        return {"key_id": key_id, "version": version, "material": wrapped}

    async def kms_create_key(self, key_id: Any, actor: str = "") -> dict[str, Any]:
        return await self._kms("kms_create_key", self._new_material(check_key_id(key_id)), actor)

    async def kms_rotate_key(self, key_id: Any, actor: str = "") -> dict[str, Any]:
        """A new current version; objects encrypted under older versions stay readable (their version is named)."""
        return await self._kms("kms_rotate_key", self._new_material(check_key_id(key_id)), actor)

    async def kms_set_key_enabled(self, key_id: Any, enabled: Any, actor: str = "") -> dict[str, Any]:
        return await self._kms("kms_set_key_enabled", {"key_id": check_key_id(key_id), "enabled": enabled}, actor)

    def kms_list_keys(self) -> list[dict[str, Any]]:
        records = self._read(lambda tx: [unpack(v) for _, v in tx.scan(kms.VIEW, b"")])
        return sorted((kms.public(r) for r in records if r["vs"]), key=lambda r: r["key_id"])

    def kms_get_key(self, key_id: str) -> dict[str, Any]:
        rec = self._read(lambda tx: kms.read_key(tx, key_id))
        if rec is None or not rec["vs"]:
            raise IamError(404, f"KMS key {key_id!r} not found")
        return kms.public(rec)

    def kms_material(self, key_id: str, version: str | None = None) -> tuple[str, bytes]:
        """(version, material) of a key, the current version when none is named (a write). A key that does not
        exist: KMS.NotFoundException; a disabled key: KMS.DisabledException (both 400, as S3). A version an
        object names that this node does not hold yet (a pool: the key's event is still on its way here, catch-up
        brings it): 503 with Retry-After, never a 400 for an object that exists."""
        rec = self._read(lambda tx: kms.read_key(tx, key_id))
        if version is not None and (rec is None or version not in rec["vs"]):
            raise S3Error(ErrorCode.SERVICE_UNAVAILABLE, f"The KMS key {key_id!r} (version {version}) has not reached "
                          "this node yet; retry.", headers={"Retry-After": "1"})
        if rec is None or not rec["vs"]:
            raise S3Error(ErrorCode.KMS_NOT_FOUND, f"Invalid keyId {key_id!r}")
        if not rec["en"]:
            raise S3Error(ErrorCode.KMS_DISABLED, f"The KMS key {key_id!r} is disabled.")
        version = version or kms.current_version(rec)
        entry = rec["vs"][version]
        try:
            return version, self.sse_keys.unwrap(entry[0], _material_label(key_id, version))
        except UnwrapError:
            raise S3Error(ErrorCode.INTERNAL_ERROR, "This KMS key's material cannot be unwrapped: the node's SSE "
                          "master key (sse.key) is not the one it was created with.") from None


