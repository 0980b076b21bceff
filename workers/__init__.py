"""RQ entry points: each job a few lines that load, call a portal service and let the runtime
commit. Nothing here is imported by the portal (it enqueues by dotted string)."""
