"""The support services: search and inspect deliveries and events, replay (one, edited, or in bulk
by filter), cancel, pause and resume, audit, stats. Plain functions on a session, called alike by
the admin API (`app.admin`, HTTP only), the console (`app.console`) and the CLI (`cli`)."""
