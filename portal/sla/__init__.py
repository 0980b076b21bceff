"""Service levels as plain Python (no Flask, no database): business time and the ticket clocks."""
