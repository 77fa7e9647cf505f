"""Webhooks: events for subscribers, signed (Standard Webhooks), retried, recorded."""
