"""What every part shares: files and trust, paths, text, logs and the log sink, exits."""
