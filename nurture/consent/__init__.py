"""Consent: double opt-in, the ledger, preferences, unsubscribe, suppression, GDPR rights."""
