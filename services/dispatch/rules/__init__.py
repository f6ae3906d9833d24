"""The escalation engine's rules, a module by concern; `services.dispatch.engine.Engine` combines them."""
