"""The support console in the browser (/console): a thin HTTP layer over the support services in
app/admin (queries, actions, filters), server-rendered with Jinja2 and htmx."""
