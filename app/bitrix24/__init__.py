"""Bitrix24 portals: the REST client shared by enrichment, reconciliation and targets."""
