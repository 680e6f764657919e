"""The scenarios of issue 6; each returns table rows (figures, n/a rows, or errors)."""
