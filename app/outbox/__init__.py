"""The outbox: the statements the hub runs on events, deliveries, attempts and target states.

- `claims`: what is due, claim, supersede, record (the relay's and the drain's hot path; asyncpg);
- `states`: pause and resume, hold and release, the gate and the circuit breaker (asyncpg);
- `filters`, `queries`: search and read for support (SQLAlchemy: the filters compose queries);
- `changes`: replay, edit, cancel's lock, bulk replay's selection (SQLAlchemy, on the caller's
  session, as the support services in `app.support` need);
- `retention`: the purge of old, finished events in bounded batches;
- `writes`: ingest's insert of events with their deliveries (and the relay's NOTIFY), run by the
  group commit in `app.ingest.committer`;
- `envelope`: the CloudEvent every target gets for a stored event.
"""

# Deliveries became due (ingest committed some, an operator replayed some): the relay LISTENs.
NOTIFY_CHANNEL = "mmhub_deliveries"
