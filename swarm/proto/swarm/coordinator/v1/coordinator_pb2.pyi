from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SignedWrite(_message.Message):
    __slots__ = ("run_id", "peer_id", "header", "signature", "credential")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    peer_id: str
    header: bytes
    signature: bytes
    credential: bytes
    def __init__(self, run_id: _Optional[str] = ..., peer_id: _Optional[str] = ..., header: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., credential: _Optional[bytes] = ...) -> None: ...

class RoundReport(_message.Message):
    __slots__ = ("round", "global_step", "loss", "samples", "samples_per_s", "sent_bytes", "received_bytes", "compression_ratio", "group_size", "time", "eval_loss", "status")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_STEP_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_S_FIELD_NUMBER: _ClassVar[int]
    SENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_RATIO_FIELD_NUMBER: _ClassVar[int]
    GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    EVAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    round: int
    global_step: int
    loss: float
    samples: int
    samples_per_s: float
    sent_bytes: int
    received_bytes: int
    compression_ratio: float
    group_size: int
    time: float
    eval_loss: float
    status: str
    def __init__(self, round: _Optional[int] = ..., global_step: _Optional[int] = ..., loss: _Optional[float] = ..., samples: _Optional[int] = ..., samples_per_s: _Optional[float] = ..., sent_bytes: _Optional[int] = ..., received_bytes: _Optional[int] = ..., compression_ratio: _Optional[float] = ..., group_size: _Optional[int] = ..., time: _Optional[float] = ..., eval_loss: _Optional[float] = ..., status: _Optional[str] = ...) -> None: ...

class ReportMetricsRequest(_message.Message):
    __slots__ = ("run_id", "peer_id", "device", "metrics_url", "addrs", "reports", "leaving")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    METRICS_URL_FIELD_NUMBER: _ClassVar[int]
    ADDRS_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    LEAVING_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    peer_id: str
    device: str
    metrics_url: str
    addrs: _containers.RepeatedScalarFieldContainer[str]
    reports: _containers.RepeatedCompositeFieldContainer[RoundReport]
    leaving: bool
    def __init__(self, run_id: _Optional[str] = ..., peer_id: _Optional[str] = ..., device: _Optional[str] = ..., metrics_url: _Optional[str] = ..., addrs: _Optional[_Iterable[str]] = ..., reports: _Optional[_Iterable[_Union[RoundReport, _Mapping]]] = ..., leaving: _Optional[bool] = ...) -> None: ...

class ReportMetricsResponse(_message.Message):
    __slots__ = ("recorded", "archive_pointers")
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_POINTERS_FIELD_NUMBER: _ClassVar[int]
    recorded: int
    archive_pointers: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, recorded: _Optional[int] = ..., archive_pointers: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Provider(_message.Message):
    __slots__ = ("peer_id", "addrs", "last_announced")
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRS_FIELD_NUMBER: _ClassVar[int]
    LAST_ANNOUNCED_FIELD_NUMBER: _ClassVar[int]
    peer_id: str
    addrs: _containers.RepeatedScalarFieldContainer[str]
    last_announced: float
    def __init__(self, peer_id: _Optional[str] = ..., addrs: _Optional[_Iterable[str]] = ..., last_announced: _Optional[float] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("run_id", "round", "global_step", "manifest_hash", "total_bytes", "first_announced", "providers", "archived")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_STEP_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_HASH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    FIRST_ANNOUNCED_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    round: int
    global_step: int
    manifest_hash: str
    total_bytes: int
    first_announced: float
    providers: _containers.RepeatedCompositeFieldContainer[Provider]
    archived: bool
    def __init__(self, run_id: _Optional[str] = ..., round: _Optional[int] = ..., global_step: _Optional[int] = ..., manifest_hash: _Optional[str] = ..., total_bytes: _Optional[int] = ..., first_announced: _Optional[float] = ..., providers: _Optional[_Iterable[_Union[Provider, _Mapping]]] = ..., archived: _Optional[bool] = ...) -> None: ...

class AnnounceCheckpointRequest(_message.Message):
    __slots__ = ("run_id", "round", "global_step", "manifest_hash", "total_bytes", "provider", "addrs", "manifest")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_STEP_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_HASH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    ADDRS_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    round: int
    global_step: int
    manifest_hash: str
    total_bytes: int
    provider: str
    addrs: _containers.RepeatedScalarFieldContainer[str]
    manifest: bytes
    def __init__(self, run_id: _Optional[str] = ..., round: _Optional[int] = ..., global_step: _Optional[int] = ..., manifest_hash: _Optional[str] = ..., total_bytes: _Optional[int] = ..., provider: _Optional[str] = ..., addrs: _Optional[_Iterable[str]] = ..., manifest: _Optional[bytes] = ...) -> None: ...

class AnnounceCheckpointResponse(_message.Message):
    __slots__ = ("new_checkpoint",)
    NEW_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    new_checkpoint: bool
    def __init__(self, new_checkpoint: _Optional[bool] = ...) -> None: ...

class ListCheckpointsRequest(_message.Message):
    __slots__ = ("run_id", "limit")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    limit: int
    def __init__(self, run_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListCheckpointsResponse(_message.Message):
    __slots__ = ("checkpoints",)
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    checkpoints: _containers.RepeatedCompositeFieldContainer[Checkpoint]
    def __init__(self, checkpoints: _Optional[_Iterable[_Union[Checkpoint, _Mapping]]] = ...) -> None: ...

class GetCheckpointRequest(_message.Message):
    __slots__ = ("run_id", "latest", "round", "manifest_hash")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    LATEST_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_HASH_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    latest: bool
    round: int
    manifest_hash: str
    def __init__(self, run_id: _Optional[str] = ..., latest: _Optional[bool] = ..., round: _Optional[int] = ..., manifest_hash: _Optional[str] = ...) -> None: ...

class GetCheckpointResponse(_message.Message):
    __slots__ = ("checkpoint", "manifest")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    checkpoint: Checkpoint
    manifest: bytes
    def __init__(self, checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., manifest: _Optional[bytes] = ...) -> None: ...

class Peer(_message.Message):
    __slots__ = ("peer_id", "device", "metrics_url", "addrs", "first_seen", "last_seen", "last_round", "rounds", "samples")
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    METRICS_URL_FIELD_NUMBER: _ClassVar[int]
    ADDRS_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEEN_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    LAST_ROUND_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    peer_id: str
    device: str
    metrics_url: str
    addrs: _containers.RepeatedScalarFieldContainer[str]
    first_seen: float
    last_seen: float
    last_round: int
    rounds: int
    samples: int
    def __init__(self, peer_id: _Optional[str] = ..., device: _Optional[str] = ..., metrics_url: _Optional[str] = ..., addrs: _Optional[_Iterable[str]] = ..., first_seen: _Optional[float] = ..., last_seen: _Optional[float] = ..., last_round: _Optional[int] = ..., rounds: _Optional[int] = ..., samples: _Optional[int] = ...) -> None: ...

class ListPeersRequest(_message.Message):
    __slots__ = ("run_id", "seen_within_s")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SEEN_WITHIN_S_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    seen_within_s: float
    def __init__(self, run_id: _Optional[str] = ..., seen_within_s: _Optional[float] = ...) -> None: ...

class ListPeersResponse(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[Peer]
    def __init__(self, peers: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ...) -> None: ...

class GetRunInfoRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetRunInfoResponse(_message.Message):
    __slots__ = ("run_id", "first_seen", "last_seen", "round", "global_step", "members_online", "samples_per_s", "loss", "eval_loss", "samples", "sent_bytes", "compression_ratio", "latest_checkpoint", "peers_seen")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEEN_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_STEP_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_ONLINE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_S_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    EVAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_RATIO_FIELD_NUMBER: _ClassVar[int]
    LATEST_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    PEERS_SEEN_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    first_seen: float
    last_seen: float
    round: int
    global_step: int
    members_online: int
    samples_per_s: float
    loss: float
    eval_loss: float
    samples: int
    sent_bytes: int
    compression_ratio: float
    latest_checkpoint: Checkpoint
    peers_seen: int
    def __init__(self, run_id: _Optional[str] = ..., first_seen: _Optional[float] = ..., last_seen: _Optional[float] = ..., round: _Optional[int] = ..., global_step: _Optional[int] = ..., members_online: _Optional[int] = ..., samples_per_s: _Optional[float] = ..., loss: _Optional[float] = ..., eval_loss: _Optional[float] = ..., samples: _Optional[int] = ..., sent_bytes: _Optional[int] = ..., compression_ratio: _Optional[float] = ..., latest_checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., peers_seen: _Optional[int] = ...) -> None: ...
