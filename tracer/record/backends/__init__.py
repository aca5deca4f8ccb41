"""Backends produce events of ``tracer.events.EVENT_DTYPE``; they never interpret them."""
