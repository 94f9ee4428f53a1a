"""Queue and job records: Huey on SQLite for the queue, our own records for status, metrics and outputs."""
