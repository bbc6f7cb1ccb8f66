"""The hub as a Bitrix24 application: its installations, OAuth tokens and REST access."""
