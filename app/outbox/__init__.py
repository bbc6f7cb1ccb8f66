"""The outbox: every statement the hub runs on deliveries, their attempts and the targets' states.

- `claims`: what is due, claim, supersede, record (the relay's and the drain's statements);
- `states`: pause and resume, hold and release, the gate and the circuit breaker.

Ingest writes events with their deliveries in `app.ingest.committer`; the support services read
and change them in `app.admin`.
"""

# Deliveries became due (ingest committed some, an operator replayed some): the relay LISTENs.
NOTIFY_CHANNEL = "mmhub_deliveries"
