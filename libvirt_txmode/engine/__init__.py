"""The check engine: domain XML, policy and capabilities in, findings out. Pure: no I/O
but parsing what it is handed."""
