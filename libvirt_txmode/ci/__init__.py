"""validate-domain: which files, which policy, parse, check, report."""
