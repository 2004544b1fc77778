from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_UNSPECIFIED: _ClassVar[Action]
    ALLOW: _ClassVar[Action]
    THROTTLE: _ClassVar[Action]
    CHALLENGE: _ClassVar[Action]
    DEGRADE: _ClassVar[Action]
    BLOCK: _ClassVar[Action]
ACTION_UNSPECIFIED: Action
ALLOW: Action
THROTTLE: Action
CHALLENGE: Action
DEGRADE: Action
BLOCK: Action

class ScoreRequest(_message.Message):
    __slots__ = ("account_id", "session_id", "event_id", "ts", "prompt_tokens", "max_tokens", "model", "client_fingerprint", "ip_prefix", "account_created_at", "template_hash", "prompt", "elicits_reasoning", "frame_signature", "system_prompt", "system_signature")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    IP_PREFIX_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_HASH_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    ELICITS_REASONING_FIELD_NUMBER: _ClassVar[int]
    FRAME_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    session_id: str
    event_id: str
    ts: float
    prompt_tokens: int
    max_tokens: int
    model: str
    client_fingerprint: str
    ip_prefix: str
    account_created_at: float
    template_hash: str
    prompt: str
    elicits_reasoning: bool
    frame_signature: str
    system_prompt: str
    system_signature: str
    def __init__(self, account_id: _Optional[str] = ..., session_id: _Optional[str] = ..., event_id: _Optional[str] = ..., ts: _Optional[float] = ..., prompt_tokens: _Optional[int] = ..., max_tokens: _Optional[int] = ..., model: _Optional[str] = ..., client_fingerprint: _Optional[str] = ..., ip_prefix: _Optional[str] = ..., account_created_at: _Optional[float] = ..., template_hash: _Optional[str] = ..., prompt: _Optional[str] = ..., elicits_reasoning: _Optional[bool] = ..., frame_signature: _Optional[str] = ..., system_prompt: _Optional[str] = ..., system_signature: _Optional[str] = ...) -> None: ...

class Reason(_message.Message):
    __slots__ = ("code", "evidence")
    CODE_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    code: str
    evidence: str
    def __init__(self, code: _Optional[str] = ..., evidence: _Optional[str] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("p_human", "p_benign_automation", "p_distillation_harvesting", "label", "action", "shadow", "reasons", "events_in_session", "model_version", "session_id", "duplicate", "session_score")
    P_HUMAN_FIELD_NUMBER: _ClassVar[int]
    P_BENIGN_AUTOMATION_FIELD_NUMBER: _ClassVar[int]
    P_DISTILLATION_HARVESTING_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_IN_SESSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    SESSION_SCORE_FIELD_NUMBER: _ClassVar[int]
    p_human: float
    p_benign_automation: float
    p_distillation_harvesting: float
    label: str
    action: Action
    shadow: bool
    reasons: _containers.RepeatedCompositeFieldContainer[Reason]
    events_in_session: int
    model_version: str
    session_id: str
    duplicate: bool
    session_score: float
    def __init__(self, p_human: _Optional[float] = ..., p_benign_automation: _Optional[float] = ..., p_distillation_harvesting: _Optional[float] = ..., label: _Optional[str] = ..., action: _Optional[_Union[Action, str]] = ..., shadow: _Optional[bool] = ..., reasons: _Optional[_Iterable[_Union[Reason, _Mapping]]] = ..., events_in_session: _Optional[int] = ..., model_version: _Optional[str] = ..., session_id: _Optional[str] = ..., duplicate: _Optional[bool] = ..., session_score: _Optional[float] = ...) -> None: ...

class CompleteRequest(_message.Message):
    __slots__ = ("account_id", "session_id", "event_id", "completion_tokens", "status", "latency_s")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    session_id: str
    event_id: str
    completion_tokens: int
    status: int
    latency_s: float
    def __init__(self, account_id: _Optional[str] = ..., session_id: _Optional[str] = ..., event_id: _Optional[str] = ..., completion_tokens: _Optional[int] = ..., status: _Optional[int] = ..., latency_s: _Optional[float] = ...) -> None: ...

class CompleteResponse(_message.Message):
    __slots__ = ("applied",)
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    def __init__(self, applied: _Optional[bool] = ...) -> None: ...

class ScoreBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ScoreRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ScoreRequest, _Mapping]]] = ...) -> None: ...

class ScoreBatchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[ScoreResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[ScoreResponse, _Mapping]]] = ...) -> None: ...

class SessionRef(_message.Message):
    __slots__ = ("account_id", "session_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    session_id: str
    def __init__(self, account_id: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class EventSummary(_message.Message):
    __slots__ = ("event_id", "ts", "prompt_tokens", "completion_tokens", "completed", "features")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    ts: float
    prompt_tokens: int
    completion_tokens: int
    completed: bool
    features: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, event_id: _Optional[str] = ..., ts: _Optional[float] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., completed: _Optional[bool] = ..., features: _Optional[_Iterable[float]] = ...) -> None: ...

class SessionInfo(_message.Message):
    __slots__ = ("found", "session_id", "events_in_session", "latest", "recent_events", "feature_names")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_IN_SESSION_FIELD_NUMBER: _ClassVar[int]
    LATEST_FIELD_NUMBER: _ClassVar[int]
    RECENT_EVENTS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    found: bool
    session_id: str
    events_in_session: int
    latest: ScoreResponse
    recent_events: _containers.RepeatedCompositeFieldContainer[EventSummary]
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, found: _Optional[bool] = ..., session_id: _Optional[str] = ..., events_in_session: _Optional[int] = ..., latest: _Optional[_Union[ScoreResponse, _Mapping]] = ..., recent_events: _Optional[_Iterable[_Union[EventSummary, _Mapping]]] = ..., feature_names: _Optional[_Iterable[str]] = ...) -> None: ...

class EndSessionResponse(_message.Message):
    __slots__ = ("ended",)
    ENDED_FIELD_NUMBER: _ClassVar[int]
    ended: bool
    def __init__(self, ended: _Optional[bool] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("model_version", "feature_spec_hash")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SPEC_HASH_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    feature_spec_hash: str
    def __init__(self, model_version: _Optional[str] = ..., feature_spec_hash: _Optional[str] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("account_id", "session_id", "correct_label", "reason", "reported_by", "incident_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CORRECT_LABEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REPORTED_BY_FIELD_NUMBER: _ClassVar[int]
    INCIDENT_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    session_id: str
    correct_label: str
    reason: str
    reported_by: str
    incident_id: str
    def __init__(self, account_id: _Optional[str] = ..., session_id: _Optional[str] = ..., correct_label: _Optional[str] = ..., reason: _Optional[str] = ..., reported_by: _Optional[str] = ..., incident_id: _Optional[str] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("session_id", "incident_id", "model_version", "labelled_at")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INCIDENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELLED_AT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    incident_id: str
    model_version: str
    labelled_at: str
    def __init__(self, session_id: _Optional[str] = ..., incident_id: _Optional[str] = ..., model_version: _Optional[str] = ..., labelled_at: _Optional[str] = ...) -> None: ...
