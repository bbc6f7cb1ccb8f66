"""Bitrix24 portals: the REST client (enrichment, reconciliation, targets) and the hub as an application."""
