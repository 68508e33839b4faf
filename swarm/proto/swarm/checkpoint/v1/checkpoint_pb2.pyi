from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Pointer(_message.Message):
    __slots__ = ("run_id", "round", "global_step", "manifest_hash", "total_bytes", "provider", "expires_at", "public_key", "signature", "addrs", "credential")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_STEP_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_HASH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ADDRS_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    round: int
    global_step: int
    manifest_hash: str
    total_bytes: int
    provider: bytes
    expires_at: float
    public_key: bytes
    signature: bytes
    addrs: _containers.RepeatedScalarFieldContainer[str]
    credential: bytes
    def __init__(self, run_id: _Optional[str] = ..., round: _Optional[int] = ..., global_step: _Optional[int] = ..., manifest_hash: _Optional[str] = ..., total_bytes: _Optional[int] = ..., provider: _Optional[bytes] = ..., expires_at: _Optional[float] = ..., public_key: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., addrs: _Optional[_Iterable[str]] = ..., credential: _Optional[bytes] = ...) -> None: ...

class LatestRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class LatestResponse(_message.Message):
    __slots__ = ("pointers", "spec")
    POINTERS_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    pointers: _containers.RepeatedCompositeFieldContainer[Pointer]
    spec: bytes
    def __init__(self, pointers: _Optional[_Iterable[_Union[Pointer, _Mapping]]] = ..., spec: _Optional[bytes] = ...) -> None: ...

class ManifestRequest(_message.Message):
    __slots__ = ("manifest_hash", "credential")
    MANIFEST_HASH_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    manifest_hash: str
    credential: bytes
    def __init__(self, manifest_hash: _Optional[str] = ..., credential: _Optional[bytes] = ...) -> None: ...

class ManifestResponse(_message.Message):
    __slots__ = ("manifest",)
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    manifest: bytes
    def __init__(self, manifest: _Optional[bytes] = ...) -> None: ...

class ChunksRequest(_message.Message):
    __slots__ = ("manifest_hash", "indices", "credential")
    MANIFEST_HASH_FIELD_NUMBER: _ClassVar[int]
    INDICES_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    manifest_hash: str
    indices: _containers.RepeatedScalarFieldContainer[int]
    credential: bytes
    def __init__(self, manifest_hash: _Optional[str] = ..., indices: _Optional[_Iterable[int]] = ..., credential: _Optional[bytes] = ...) -> None: ...

class ChunkData(_message.Message):
    __slots__ = ("index", "data")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    index: int
    data: bytes
    def __init__(self, index: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MemberInfo(_message.Message):
    __slots__ = ("peer_id", "round", "global_step", "leaving")
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_STEP_FIELD_NUMBER: _ClassVar[int]
    LEAVING_FIELD_NUMBER: _ClassVar[int]
    peer_id: bytes
    round: int
    global_step: int
    leaving: bool
    def __init__(self, peer_id: _Optional[bytes] = ..., round: _Optional[int] = ..., global_step: _Optional[int] = ..., leaving: _Optional[bool] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("run_id", "round", "global_step", "members", "checkpoints", "model", "codec")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_STEP_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    round: int
    global_step: int
    members: _containers.RepeatedCompositeFieldContainer[MemberInfo]
    checkpoints: _containers.RepeatedCompositeFieldContainer[Pointer]
    model: str
    codec: str
    def __init__(self, run_id: _Optional[str] = ..., round: _Optional[int] = ..., global_step: _Optional[int] = ..., members: _Optional[_Iterable[_Union[MemberInfo, _Mapping]]] = ..., checkpoints: _Optional[_Iterable[_Union[Pointer, _Mapping]]] = ..., model: _Optional[str] = ..., codec: _Optional[str] = ...) -> None: ...

class End(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Error(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("latest_request", "latest_response", "manifest_request", "manifest_response", "chunks_request", "chunk_data", "status_request", "status_response", "end", "error")
    LATEST_REQUEST_FIELD_NUMBER: _ClassVar[int]
    LATEST_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_REQUEST_FIELD_NUMBER: _ClassVar[int]
    CHUNK_DATA_FIELD_NUMBER: _ClassVar[int]
    STATUS_REQUEST_FIELD_NUMBER: _ClassVar[int]
    STATUS_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    latest_request: LatestRequest
    latest_response: LatestResponse
    manifest_request: ManifestRequest
    manifest_response: ManifestResponse
    chunks_request: ChunksRequest
    chunk_data: ChunkData
    status_request: StatusRequest
    status_response: StatusResponse
    end: End
    error: Error
    def __init__(self, latest_request: _Optional[_Union[LatestRequest, _Mapping]] = ..., latest_response: _Optional[_Union[LatestResponse, _Mapping]] = ..., manifest_request: _Optional[_Union[ManifestRequest, _Mapping]] = ..., manifest_response: _Optional[_Union[ManifestResponse, _Mapping]] = ..., chunks_request: _Optional[_Union[ChunksRequest, _Mapping]] = ..., chunk_data: _Optional[_Union[ChunkData, _Mapping]] = ..., status_request: _Optional[_Union[StatusRequest, _Mapping]] = ..., status_response: _Optional[_Union[StatusResponse, _Mapping]] = ..., end: _Optional[_Union[End, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...
