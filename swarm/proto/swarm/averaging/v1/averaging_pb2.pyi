from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JoinRequest(_message.Message):
    __slots__ = ("run_id", "round", "digest", "samples", "local_steps", "weight", "credential", "fresh")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    LOCAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    FRESH_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    round: int
    digest: bytes
    samples: int
    local_steps: int
    weight: float
    credential: bytes
    fresh: bool
    def __init__(self, run_id: _Optional[str] = ..., round: _Optional[int] = ..., digest: _Optional[bytes] = ..., samples: _Optional[int] = ..., local_steps: _Optional[int] = ..., weight: _Optional[float] = ..., credential: _Optional[bytes] = ..., fresh: _Optional[bool] = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("peer_id", "weight", "samples", "local_steps")
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    LOCAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    peer_id: bytes
    weight: float
    samples: int
    local_steps: int
    def __init__(self, peer_id: _Optional[bytes] = ..., weight: _Optional[float] = ..., samples: _Optional[int] = ..., local_steps: _Optional[int] = ...) -> None: ...

class Roster(_message.Message):
    __slots__ = ("group_id", "round", "base_digest", "members", "num_shards", "included", "repair_from", "deadline_s")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    BASE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    NUM_SHARDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDED_FIELD_NUMBER: _ClassVar[int]
    REPAIR_FROM_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    group_id: bytes
    round: int
    base_digest: bytes
    members: _containers.RepeatedCompositeFieldContainer[Member]
    num_shards: int
    included: bool
    repair_from: _containers.RepeatedScalarFieldContainer[bytes]
    deadline_s: float
    def __init__(self, group_id: _Optional[bytes] = ..., round: _Optional[int] = ..., base_digest: _Optional[bytes] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., num_shards: _Optional[int] = ..., included: _Optional[bool] = ..., repair_from: _Optional[_Iterable[bytes]] = ..., deadline_s: _Optional[float] = ...) -> None: ...

class Redirect(_message.Message):
    __slots__ = ("conductor",)
    CONDUCTOR_FIELD_NUMBER: _ClassVar[int]
    conductor: bytes
    def __init__(self, conductor: _Optional[bytes] = ...) -> None: ...

class Busy(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("group_id", "shards", "result_digests")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    RESULT_DIGESTS_FIELD_NUMBER: _ClassVar[int]
    group_id: bytes
    shards: _containers.RepeatedScalarFieldContainer[int]
    result_digests: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, group_id: _Optional[bytes] = ..., shards: _Optional[_Iterable[int]] = ..., result_digests: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Commit(_message.Message):
    __slots__ = ("group_id", "shards", "result_digests")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    RESULT_DIGESTS_FIELD_NUMBER: _ClassVar[int]
    group_id: bytes
    shards: _containers.RepeatedScalarFieldContainer[int]
    result_digests: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, group_id: _Optional[bytes] = ..., shards: _Optional[_Iterable[int]] = ..., result_digests: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ShardPart(_message.Message):
    __slots__ = ("group_id", "shard", "weight", "codec", "payload")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    group_id: bytes
    shard: int
    weight: float
    codec: str
    payload: bytes
    def __init__(self, group_id: _Optional[bytes] = ..., shard: _Optional[int] = ..., weight: _Optional[float] = ..., codec: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class ShardResult(_message.Message):
    __slots__ = ("group_id", "shard", "included", "codec", "payload")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    INCLUDED_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    group_id: bytes
    shard: int
    included: _containers.RepeatedScalarFieldContainer[bytes]
    codec: str
    payload: bytes
    def __init__(self, group_id: _Optional[bytes] = ..., shard: _Optional[int] = ..., included: _Optional[_Iterable[bytes]] = ..., codec: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class Reject(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class StateRequest(_message.Message):
    __slots__ = ("run_id", "min_round")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_ROUND_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    min_round: int
    def __init__(self, run_id: _Optional[str] = ..., min_round: _Optional[int] = ...) -> None: ...

class StateHeader(_message.Message):
    __slots__ = ("round", "global_step", "digest", "num_elements", "swarm_samples")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_STEP_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    NUM_ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    SWARM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    round: int
    global_step: int
    digest: bytes
    num_elements: int
    swarm_samples: int
    def __init__(self, round: _Optional[int] = ..., global_step: _Optional[int] = ..., digest: _Optional[bytes] = ..., num_elements: _Optional[int] = ..., swarm_samples: _Optional[int] = ...) -> None: ...

class StateChunk(_message.Message):
    __slots__ = ("offset", "data")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class StateEnd(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JournalRequest(_message.Message):
    __slots__ = ("run_id", "after_round", "min_round")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_ROUND_FIELD_NUMBER: _ClassVar[int]
    MIN_ROUND_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    after_round: int
    min_round: int
    def __init__(self, run_id: _Optional[str] = ..., after_round: _Optional[int] = ..., min_round: _Optional[int] = ...) -> None: ...

class JournalPart(_message.Message):
    __slots__ = ("round", "shard", "payload")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    round: int
    shard: int
    payload: bytes
    def __init__(self, round: _Optional[int] = ..., shard: _Optional[int] = ..., payload: _Optional[bytes] = ...) -> None: ...

class JournalRound(_message.Message):
    __slots__ = ("round", "global_step_increment", "samples", "digest")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_STEP_INCREMENT_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    round: int
    global_step_increment: int
    samples: int
    digest: bytes
    def __init__(self, round: _Optional[int] = ..., global_step_increment: _Optional[int] = ..., samples: _Optional[int] = ..., digest: _Optional[bytes] = ...) -> None: ...

class JournalEnd(_message.Message):
    __slots__ = ("round",)
    ROUND_FIELD_NUMBER: _ClassVar[int]
    round: int
    def __init__(self, round: _Optional[int] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("join", "roster", "redirect", "busy", "receipt", "commit", "part", "result", "reject", "state_request", "state_header", "state_chunk", "state_end", "journal_request", "journal_part", "journal_round", "journal_end")
    JOIN_FIELD_NUMBER: _ClassVar[int]
    ROSTER_FIELD_NUMBER: _ClassVar[int]
    REDIRECT_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REJECT_FIELD_NUMBER: _ClassVar[int]
    STATE_REQUEST_FIELD_NUMBER: _ClassVar[int]
    STATE_HEADER_FIELD_NUMBER: _ClassVar[int]
    STATE_CHUNK_FIELD_NUMBER: _ClassVar[int]
    STATE_END_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_REQUEST_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_PART_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_ROUND_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_END_FIELD_NUMBER: _ClassVar[int]
    join: JoinRequest
    roster: Roster
    redirect: Redirect
    busy: Busy
    receipt: Receipt
    commit: Commit
    part: ShardPart
    result: ShardResult
    reject: Reject
    state_request: StateRequest
    state_header: StateHeader
    state_chunk: StateChunk
    state_end: StateEnd
    journal_request: JournalRequest
    journal_part: JournalPart
    journal_round: JournalRound
    journal_end: JournalEnd
    def __init__(self, join: _Optional[_Union[JoinRequest, _Mapping]] = ..., roster: _Optional[_Union[Roster, _Mapping]] = ..., redirect: _Optional[_Union[Redirect, _Mapping]] = ..., busy: _Optional[_Union[Busy, _Mapping]] = ..., receipt: _Optional[_Union[Receipt, _Mapping]] = ..., commit: _Optional[_Union[Commit, _Mapping]] = ..., part: _Optional[_Union[ShardPart, _Mapping]] = ..., result: _Optional[_Union[ShardResult, _Mapping]] = ..., reject: _Optional[_Union[Reject, _Mapping]] = ..., state_request: _Optional[_Union[StateRequest, _Mapping]] = ..., state_header: _Optional[_Union[StateHeader, _Mapping]] = ..., state_chunk: _Optional[_Union[StateChunk, _Mapping]] = ..., state_end: _Optional[_Union[StateEnd, _Mapping]] = ..., journal_request: _Optional[_Union[JournalRequest, _Mapping]] = ..., journal_part: _Optional[_Union[JournalPart, _Mapping]] = ..., journal_round: _Optional[_Union[JournalRound, _Mapping]] = ..., journal_end: _Optional[_Union[JournalEnd, _Mapping]] = ...) -> None: ...
