"""Contacts: one de-duplicated customer base."""
