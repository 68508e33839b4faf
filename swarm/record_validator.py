"""The record validator every node's DHT runs: only envelopes its family's rule admits are stored,
served or taken from a peer's answer (``swarm.dht.envelope``).

It is handed to hivemind's DHT when the DHT process is forked (``DHT(record_validators=...)``), and
holds no key and no run state: the DHT starts before the node knows its run, and Ed25519 keys do
not pickle. It never raises (an exception would fail a whole answer and evict the peer that sent
it) and never refuses a record for its age, so an honest replica's dictionary is never dropped
for one subkey that expired on the way.
"""

from __future__ import annotations

import logging
import time

from hivemind.dht.validation import DHTRecord, RecordValidatorBase
from hivemind.utils.serializer import MSGPackSerializer
from hivemind.utils.timed_storage import get_dht_time

from swarm.dht.envelope import open_envelope

logger = logging.getLogger(__name__)

REFUSAL_LOG_INTERVAL_S = 10.0
"""At most one log line about refused records this often: a flood of forgeries must not flood the log."""


class EnvelopeValidator(RecordValidatorBase):
    """Admits a record when ``open_envelope`` does: the family's shape, size, lifetime and signer."""

    def __init__(self) -> None:
        self._refused = 0
        self._logged_at = 0.0

    def validate(self, record: DHTRecord) -> bool:
        try:
            open_envelope(
                key=record.key,
                subkey=MSGPackSerializer.loads(record.subkey),
                value=MSGPackSerializer.loads(record.value),
                expiration_time=record.expiration_time,
                now=get_dht_time(),
            )
            return True
        # Whatever the bytes from a peer make the decoders raise, the record is refused, never the answer.
        except Exception as e:
            self._refuse(e)
            return False

    def _refuse(self, reason: Exception) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._logged_at >= REFUSAL_LOG_INTERVAL_S:
            logger.warning("refused %d DHT record(s) that do not verify; the last: %s", self._refused, reason)
            self._refused, self._logged_at = 0, now

    def merge_with(self, other: RecordValidatorBase) -> bool:
        return isinstance(other, EnvelopeValidator)
