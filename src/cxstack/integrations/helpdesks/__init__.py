"""Help desks that escalation packets are exported to as tickets (Zendesk, Chatwoot, a signed webhook)."""
