"""Mail delivery: templates, rendering, message building, transports and the outbox."""
